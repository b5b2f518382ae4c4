"""From a validated config to objects: the dataset, the backbone and conditioner plugins, the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset

from . import data as data_module
from .data.folder import one_line, quiet_scans
from .config import Config, ConfigError, SampleSection
from .diffusion import GaussianDiffusion
from .registry import PluginError, create_backbone, create_conditioner
from .samplers import check_churn
from .schedules import make_beta_schedule

if TYPE_CHECKING:
    from .run import RunInfo


def build_dataset(config: Config, progress: bool = True) -> Dataset:
    try:
        with quiet_scans(not progress):
            dataset = data_module.create_dataset(config.data.dataset, **config.data.options)
    except data_module.DataError as exc:
        raise ConfigError(f"data.options: {exc}") from None
    except data_module.OptionTypeError as exc:
        raise ConfigError(f"data.options.{exc.key}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        key = "data.dataset" if "unknown dataset" in str(exc) else "data.options"
        line = exception_line(exc)
        prefix = f"dataset {config.data.dataset!r}: "
        raise ConfigError(f"{key}: {'' if line.startswith(prefix) else prefix}{line}") from None
    except ModuleNotFoundError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    if len(dataset) == 0:
        raise ConfigError(f"data.options: dataset {config.data.dataset!r} holds no examples")
    return dataset


def _plugin(kind: str, key: str, name: str, options: dict[str, Any]) -> torch.nn.Module:
    factory = create_backbone if kind == "backbone" else create_conditioner
    try:
        return factory(name, **options)
    except PluginError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        raise ConfigError(f"{key.rsplit('.', 1)[0] if key.endswith('backbone') else key}.options: {exception_line(exc)}") from None


def build_diffusion(config: Config, example_shape: Sequence[int]) -> GaussianDiffusion:
    """The engine around the backbone (and conditioner) named in the config."""
    options = dict(config.model.options)
    conditioner = None
    if config.model.conditioner is not None:
        c = config.model.conditioner
        conditioner = _plugin("conditioner", "model.conditioner", c.name, dict(c.options))
        dim = int(conditioner.dim)
        # The backbone must embed what the conditioner produces: fill in cond_dim, or check it.
        if "cond_dim" not in options:
            options["cond_dim"] = dim
        elif options["cond_dim"] != dim:
            raise ConfigError(f"model.options.cond_dim is {options['cond_dim']} but the {c.name!r} conditioner "
                              f"produces {dim}-dim embeddings (model.conditioner.options.dim); make them equal or "
                              "leave cond_dim out")
    model = _plugin("backbone", "model.backbone", config.model.backbone, options)
    d = config.diffusion
    try:
        betas = make_beta_schedule(d.schedule, d.timesteps, d.schedule_shift)
    except ValueError as exc:
        raise ConfigError(f"diffusion.timesteps: {exc}") from None
    return GaussianDiffusion(
        model,
        list(example_shape),
        betas,
        objective=d.objective,
        conditioner=conditioner,
        variance=d.variance,
        threshold=d.threshold,
        threshold_percentile=d.threshold_percentile,
        loss_weighting=d.loss_weighting,
        min_snr_gamma=d.min_snr_gamma,
        data_std=d.data_std,
    )



def check_backbone_fits(diffusion: GaussianDiffusion, info: "RunInfo", config: Config) -> None:
    """One forward pass on a data-shaped input, so that a backbone that does not fit the data (channels,
    sizes, a plugin's wrong output) fails with one line before step 1, not with a traceback."""
    param = next(diffusion.parameters(), None)
    device = param.device if param is not None else diffusion.alphas_cumprod.device
    x = torch.zeros(1, *info.example_shape, device=device)
    t = torch.zeros(1, dtype=torch.long, device=device)
    cond = diffusion.conditioner.null(1) if diffusion.conditioner is not None else None
    shape = tuple(info.example_shape)
    try:
        with torch.no_grad():
            diffusion._network(x, t, cond)
    except PluginError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        hint = ""
        options = config.model.options
        if "in_channels" in options and shape and options["in_channels"] != shape[0]:
            hint = f"; the data has {shape[0]} channel(s): set model.options.in_channels = {shape[0]}"
        raise ConfigError(f"model.options: {config.model.backbone!r} does not fit the data's example shape "
                          f"{shape}: {exception_line(exc)}{hint}") from None


# The sampler that takes a churn and a churn_stop (samplers.sample_dpmpp_sde), and those options' names.
CHURN_SAMPLER = "dpm-solver++-sde"
CHURN_OPTIONS = ("churn", "churn_stop")


def churn_options(sampler: str, given: Mapping[str, Any], section: SampleSection) -> dict[str, Any]:
    """The sampler's churn options (``churn``, ``churn_stop``) that apply: each one ``given`` by the caller (None:
    not given), else the run's [sample] one. A given one for another sampler than dpm-solver++-sde is an error;
    a configured one is then dropped, as it was set for the section's own sampler (a later ``--sampler ddim``
    does not fail on it)."""
    options = {}
    for name in CHURN_OPTIONS:
        value = given.get(name)
        if value is not None:
            if sampler != CHURN_SAMPLER:
                raise ConfigError(f"{name} applies to the {CHURN_SAMPLER} sampler, not {sampler!r}")
            try:
                check_churn(**{name: value})
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        value = getattr(section, name) if value is None else value
        if value is not None and sampler == CHURN_SAMPLER:  # 4 and 4.0 alike: the sample folders are named after them
            options[name] = float(value) if name == "churn" else int(value)
    return options



def check_sample_config(diffusion: GaussianDiffusion, config: Config, modality: str) -> None:
    """The [sample] section against the model and its schedule, as the engine itself will check it, and
    against the data's ``modality``."""
    s = config.sample
    if s.noise_gate and modality != "audio":
        raise ConfigError(f"sample.noise_gate: the gate applies to audio; this data is {modality} (set it to 0)")
    for name in CHURN_OPTIONS:
        if getattr(s, name) is not None and s.sampler != CHURN_SAMPLER:
            raise ConfigError(f"sample.{name}: applies to the {CHURN_SAMPLER} sampler; this section's sampler is "
                              f"{s.sampler!r} (remove {name} or set sampler = \"{CHURN_SAMPLER}\")")
    try:
        diffusion.check_sample_args(s.num, sampler=s.sampler, steps=s.steps, eta=s.eta,
                                    guidance_scale=s.guidance_scale,
                                    y=sample_labels(diffusion, s.num, s.labels),
                                    **churn_options(s.sampler, {}, s))
    except ValueError as exc:
        raise ConfigError(f"[sample]: {exc}") from None


def sample_labels(diffusion: GaussianDiffusion, num: int, labels: Optional[Sequence[int]]) -> Optional[torch.Tensor]:
    """Labels for ``num`` samples of a conditional model: the given ones, or every class in turn."""
    if diffusion.conditioner is None:
        if labels:
            raise ConfigError("sample.labels: this model has no conditioner")
        return None
    classes = getattr(diffusion.conditioner, "num_classes", None)
    if labels:
        if len(labels) != num:
            raise ConfigError(f"sample.labels: {len(labels)} labels for {num} samples")
        bad = [v for v in labels if classes is not None and not 0 <= int(v) < classes]
        if bad:
            raise ConfigError(f"sample.labels: {bad[0]} is not a class of this model (0…{classes - 1})")
        return torch.tensor([int(v) for v in labels], dtype=torch.long)
    if classes is None:
        raise ConfigError("sample.labels: this conditioner needs explicit labels")
    return torch.arange(num) % classes


def exception_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (its type when it has none), cut at ``limit`` characters."""
    text = one_line(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
