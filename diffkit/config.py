"""The run configuration: a TOML file, validated once here, at the edge.

TOML because Python reads it with the standard library (``tomllib``), it has real types (a typo'd
number stays a string and is caught), comments, and nested tables that map onto the sections below.
Every error is one line naming the key path and what would be accepted.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .data.audio import DC_OFFSETS, DEFAULT_DC_OFFSET, DEFAULT_NOISE_GATE, DEFAULT_NYQUIST, NYQUIST_CHOICES
from .diffusion import GaussianDiffusion
from .objectives import LOSS_WEIGHTINGS, OBJECTIVES, THRESHOLDS
from .samplers import SAMPLERS, VARIANCES
from .schedules import DEFAULT_SCHEDULE, DEFAULT_TIMESTEPS, SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored.
    # strict: "3" is not 3; TOML already has real numbers and booleans.
    # allow_inf_nan=False: a learning rate of inf or nan is a typo, not a setting.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# Seeds feed torch, NumPy and Python generators and are combined with epoch and rank numbers.
MAX_SEED = 2**32 - 1
# More DataLoader workers than this only wait on each other (and 100 000 of them never start).
MAX_WORKERS = max(8, 4 * (os.cpu_count() or 1))


class RunSection(_Section):
    dir: str = Field("runs/default", min_length=1)  # where checkpoints, samples and metrics go
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds every RNG; the same seed reproduces the run on the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto": CUDA when available


class DataSection(_Section):
    dataset: str  # a name from diffkit.data.DATASETS, e.g. "shapes", "image_folder", "audio_folder"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the dataset
    batch_size: int = Field(32, ge=1)  # per process
    num_workers: int = Field(0, ge=0, le=MAX_WORKERS)  # DataLoader workers; the run is the same for any number


class ConditionerSection(_Section):
    name: str  # a conditioner plugin, e.g. "labels"
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSection(_Section):
    backbone: str  # a backbone plugin: "unet1d", "unet2d", "unet3d", "transformer", …
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the backbone's factory
    conditioner: Optional[ConditionerSection] = None


def _engine_default(function: Any, name: str) -> Any:
    """The default of ``function``'s parameter ``name``: the engine's defaults are the config's, written once."""
    return inspect.signature(function).parameters[name].default


_ENGINE = GaussianDiffusion.__init__
_SAMPLE = GaussianDiffusion.sample


class DiffusionSection(_Section):
    # Every default and choice below is the engine's own (GaussianDiffusion, diffkit.schedules).
    timesteps: int = Field(DEFAULT_TIMESTEPS, ge=2)
    schedule: Literal[tuple(SCHEDULES)] = DEFAULT_SCHEDULE  # type: ignore[valid-type]
    # > 1: every step noisier, the log-SNR moved by -2 ln(shift) (diffkit.schedules.shift_schedule); 1: as named.
    schedule_shift: float = Field(1.0, gt=0)
    objective: Literal[OBJECTIVES] = _engine_default(_ENGINE, "objective")  # type: ignore[valid-type]
    variance: Literal[VARIANCES] = _engine_default(_ENGINE, "variance")  # type: ignore[valid-type]  # σ² of DDPM
    # Keep the predicted x0 in [-1, 1] while sampling (data lives there): clamp, or Imagen's dynamic thresholding.
    threshold: Literal[THRESHOLDS] = _engine_default(_ENGINE, "threshold")  # type: ignore[valid-type]
    threshold_percentile: float = Field(_engine_default(_ENGINE, "threshold_percentile"), gt=0, le=1)
    loss_weighting: Literal[LOSS_WEIGHTINGS] = _engine_default(_ENGINE, "loss_weighting")  # type: ignore[valid-type]
    min_snr_gamma: float = Field(_engine_default(_ENGINE, "min_snr_gamma"), gt=0)
    # The data's standard deviation: the network's input and target are taken in its units (EDM's σ_data).
    data_std: float = Field(_engine_default(_ENGINE, "data_std"), gt=0)


class TrainSection(_Section):
    steps: int = Field(1000, ge=1)  # optimizer steps
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)  # linear warm-up, then lr_decay
    lr_decay: Literal["constant", "cosine"] = "constant"  # after warm-up: constant, or a cosine down to 0 at `steps`
    weight_decay: float = Field(0.0, ge=0)
    # Max global gradient norm; 0 disables clipping (None, from Python, too: written back as 0, since TOML has no null).
    grad_clip: float = Field(1.0, ge=0, allow_inf_nan=False)
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    ema_decay: float = Field(0.9999, ge=0, le=1)
    ema_start: int = Field(2000, ge=0)  # steps during which EMA just copies the weights
    ema_every: int = Field(1, ge=1)
    ema_warmup: bool = False  # decay min(ema_decay, (1+n)/(10+n)) at the n-th update after ema_start (short runs)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 needs CUDA (it uses a gradient scaler)
    compile: bool = False  # torch.compile the backbone
    channels_last: bool = False  # memory format for 4-D / 5-D inputs on GPUs
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/Inf loss or gradient: stop the run, or skip the batch
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(0, ge=0)  # 0: only at the end
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end
    keep_checkpoints: int = Field(3, ge=1)
    init_from: Optional[str] = Field(None, min_length=1)  # a run, checkpoint or diffusers folder to start from

    @field_validator("grad_clip", mode="before")
    @classmethod
    def _none_is_no_clipping(cls, value: Any) -> Any:
        return 0.0 if value is None else value


class SampleSection(_Section):
    # The sampler's defaults are GaussianDiffusion.sample's own.
    num: int = Field(16, ge=1)
    sampler: str = _engine_default(_SAMPLE, "sampler")
    steps: Optional[int] = Field(_engine_default(_SAMPLE, "steps"), ge=1)  # network calls; omit for all T
    eta: float = Field(_engine_default(_SAMPLE, "eta"), ge=0)
    guidance_scale: float = _engine_default(_SAMPLE, "guidance_scale")
    # dpm-solver++-sde only: how much fresh noise each step adds (None: the sampler's default, 1; 0: the ODE).
    churn: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    # dpm-solver++-sde only: the steps that land below this timestep take no fresh noise (None or 0: churn to the end).
    churn_stop: Optional[int] = Field(None, ge=0)
    labels: Optional[list[int]] = None  # one per sample, for a conditional model; default: cycle the classes
    use_ema: bool = True
    # Audio: "remove" each generated clip's mean before writing its WAV, or "keep" it (diffkit/data/audio.py).
    dc_offset: Literal[DC_OFFSETS] = DEFAULT_DC_OFFSET  # type: ignore[valid-type]
    # Audio: "remove" each generated clip's Nyquist-rate component (+a, -a, … ) before writing it, or "keep" it.
    nyquist: Literal[NYQUIST_CHOICES] = DEFAULT_NYQUIST  # type: ignore[valid-type]
    # Audio: silence the parts of each clip this many dB quieter than its loudest 32 ms (0: off; diffkit/data/audio.py).
    noise_gate: float = Field(DEFAULT_NOISE_GATE, ge=0, allow_inf_nan=False)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; choose one of {sorted(SAMPLERS)}")
        return value


class Config(_Section):
    run: RunSection = Field(default_factory=RunSection)
    data: DataSection
    model: ModelSection
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sample: SampleSection = Field(default_factory=SampleSection)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(exclude_none=True))


def _section_fields(loc: tuple) -> Optional[list[str]]:
    """The accepted keys of the section that ``loc`` (a key path) points into."""
    model: Any = Config
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return sorted(model.model_fields)


def _printable(text: str) -> str:
    """Escape control characters so a message stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _one_line(error: dict[str, Any], source: str) -> str:
    loc = tuple(_printable(str(p)) for p in error["loc"])
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        accepted = _section_fields(loc) or []
        close = difflib.get_close_matches(loc[-1], accepted, n=1)
        hint = f" (did you mean '{'.'.join(loc[:-1] + (close[0],))}'?)" if close else ""
        section = ".".join(loc[:-1]) or "top level"
        return f"{source}: unknown key '{key}'{hint}; accepted keys in [{section}]: {', '.join(accepted)}"
    if error["type"] == "missing":
        return f"{source}: missing required key '{key}'"
    message = _printable(error["msg"].replace("\n", " ").removeprefix("Value error, "))
    got = repr(error.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{source}: key '{key}': {message} (got {got})"


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``"x"``), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# Overrides: "section.key=value" strings (--set), or a mapping {"section.key": value} from Python.
Overrides = Union[Sequence[str], Mapping[str, Any], None]


class _Overridden(dict):
    """A raw config mapping that remembers which key paths were set by an override, and by which."""

    origins: dict[tuple[str, ...], str]


def apply_overrides(data: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of the raw config mapping with the overrides applied (the input is left alone)."""
    out = _Overridden(copy.deepcopy(dict(data)))
    out.origins = dict(getattr(data, "origins", {}))
    if overrides is None:
        return out
    if isinstance(overrides, Mapping):
        items = [(str(path), value, f"override {path}={value!r}") for path, value in overrides.items()]
    else:
        items = []
        for item in overrides:
            path, sep, value = str(item).partition("=")
            if not sep or not path.strip():
                raise ConfigError(f"--set {item!r}: expected section.key=value")
            items.append((path.strip(), parse_value(value.strip()), f"--set {item}"))
    for path, value, origin in items:
        keys = path.split(".")
        if any(not key for key in keys):
            raise ConfigError(f"{origin}: '{path}' is not a key path like section.key")
        node: Any = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{origin}: '{key}' is a value, not a section")
            node = child
        node[keys[-1]] = value
        out.origins[tuple(keys)] = origin
    return out


def validate(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping; the first problem becomes a one-line :class:`ConfigError` naming the key, and the
    ``--set`` that gave it when an override did."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key explains the "missing" error beside it: report it first.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        origins = getattr(data, "origins", {})
        loc = tuple(str(p) for p in first["loc"])
        origin = next((o for path, o in origins.items() if loc[: len(path)] == path or path[: len(loc)] == loc), None)
        raise ConfigError(_one_line(first, origin or source)) from None


def load_config(path: Union[str, Path], overrides: Overrides = None) -> Config:
    """Read, override and validate a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path}' is a folder; expected a TOML file such as examples/shapes.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return validate(apply_overrides(data, overrides), str(path))
