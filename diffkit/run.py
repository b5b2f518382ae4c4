"""A run directory as a Python object: its layout, its files, and the trained model in it.

Every file name of a run is written here, once::

    RUN/
      config.toml          the resolved config (what trained this run)
      run.json             what sampling needs to know about the data (RunInfo)
      metrics.jsonl        one JSON row per logged step
      loss.png             the training-loss curve
      checkpoints/step_XXXXXXXX/{model,ema}.safetensors, state.pt
      samples/             periodic samples (step_XXXXXXXX.*) and `diffkit sample` outputs
      eval.json            what `diffkit eval` measured
      tensorboard/         TensorBoard scalars, when tensorboard is installed
      .lock                held while a process trains into the run

A run can be moved or copied: it is opened from wherever it lies, whatever ``run.dir`` its config says.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, SampleSection, load_config
from .files import missing_folders, write_text_atomic

if TYPE_CHECKING:
    from .diffusion import GaussianDiffusion

PathLike = Union[str, os.PathLike]

CONFIG_FILE = "config.toml"
INFO_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
CHECKPOINTS_DIR = "checkpoints"
SAMPLES_DIR = "samples"
EVAL_FILE = "eval.json"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message names it and says what would work."""


@dataclass
class RunInfo:
    """What sampling needs to know about the data without loading it again (saved as run.json)."""

    modality: str
    example_shape: list[int]
    sample_rate: Optional[int] = None
    classes: Optional[list[str]] = None

    @classmethod
    def from_dataset(cls, dataset: Any) -> "RunInfo":
        return cls(
            modality=dataset.modality,
            example_shape=[int(d) for d in dataset.example_shape],
            sample_rate=getattr(dataset, "sample_rate", None),
            classes=list(dataset.classes) if getattr(dataset, "classes", None) else None,
        )

    def save(self, path: PathLike) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "RunInfo":
        path = Path(path)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise RunError(f"'{path}' not found: is '{path.parent}' a diffkit run directory?") from None
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise RunError(f"'{path}' is damaged: {exc}") from None


class Run:
    """A run directory. ``Run(path)`` names one (it may not exist yet); :meth:`open` opens an existing one."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._lock_file: Any = None
        self._made: list[Path] = []

    def __repr__(self) -> str:
        return f"Run('{self.path}')"

    # A run stands for its directory wherever a path is expected: run / "samples", open(run / ...), str(run).
    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: PathLike) -> Path:
        return self.path / other

    # --- the layout -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def info_path(self) -> Path:
        return self.path / INFO_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def loss_plot_path(self) -> Path:
        return self.path / LOSS_PLOT

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    # --- opening an existing run ------------------------------------------------------------------

    @classmethod
    def open(cls, path: PathLike) -> "Run":
        """An existing run directory (it may have been moved since it was trained), or a model folder in
        diffusers' layout, opened read-only for sampling."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"run directory '{run.path}' not found")
        if not run.config_path.is_file():
            from .pretrained import is_diffusers_folder

            if is_diffusers_folder(run.path):
                return PretrainedRun(run.path)  # type: ignore[return-value]
        for needed in (run.config_path, run.info_path):
            if not needed.is_file():
                raise RunError(f"'{run.path}' is not a diffkit run directory: '{needed.name}' is missing")
        return run

    @property
    def config(self) -> Config:
        """The run's resolved config; ``run.dir`` is where the run lies now."""
        config = load_config(self.config_path)
        config.run.dir = str(self.path)
        return config

    @property
    def info(self) -> RunInfo:
        return RunInfo.load(self.info_path)

    def sample_defaults(self) -> "SampleSection":
        """The [sample] settings a call leaves unset take."""
        return self.config.sample

    def default_device(self) -> str:
        return self.config.run.device

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (a damaged line is skipped: it can only be the last, cut by a crash)."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return ckpt.list_checkpoints(self.checkpoints_dir)

    def latest_checkpoint(self) -> Optional[Path]:
        return ckpt.latest_checkpoint(self.checkpoints_dir)

    def checkpoint(self, which: Optional[PathLike] = None) -> Path:
        """A checkpoint folder: the newest, or ``which`` (a folder, a step number or a ``step_XXXXXXXX`` name)."""
        if which is None:
            return ckpt.resolve_checkpoint(self.path)
        text = str(which)
        if text.isdigit():
            which = self.checkpoints_dir / ckpt.checkpoint_name(int(text))
        elif not Path(text).exists() and (self.checkpoints_dir / text).exists():
            which = self.checkpoints_dir / text
        return ckpt.resolve_checkpoint(which)

    def diffusion(
        self,
        *,
        ema: Optional[bool] = None,
        checkpoint: Optional[PathLike] = None,
        device: Union[str, torch.device, None] = None,
    ) -> "GaussianDiffusion":
        """The trained diffusion in eval mode: EMA weights (``ema=None`` follows ``sample.use_ema``) or the raw
        ones, from the newest checkpoint or ``checkpoint``, on ``device`` (default: CUDA when available)."""
        from .build import build_diffusion

        config = self.config
        folder = self.checkpoint(checkpoint)
        diffusion = build_diffusion(config, self.info.example_shape)
        use_ema = config.sample.use_ema if ema is None else ema
        ckpt.load_into(diffusion, folder / (ckpt.EMA_FILE if use_ema else ckpt.MODEL_FILE))
        return diffusion.to(resolve_device(device)).eval()

    def sample(self, num: Optional[int] = None, **options: Any) -> list[Path]:
        """Generate ``num`` samples into files (see :func:`diffkit.generate.generate` for ``options``)."""
        from .generate import generate

        return generate(self, num, **options)

    def evaluate(self, **options: Any) -> dict[str, Any]:
        """bits/dim and sample statistics into eval.json (see :func:`diffkit.evaluate.evaluate`)."""
        from .evaluate import evaluate

        return evaluate(self, **options)

    def resume(self, steps: Optional[int] = None, *, progress: bool = True) -> "Run":
        """Continue training this run from its newest checkpoint, up to ``steps`` optimizer steps in all."""
        from .trainer import train

        overrides = {"run.dir": str(self.path)}
        if steps is not None:
            overrides["train.steps"] = steps
        return train(self.config_path, overrides=overrides, resume=True, progress=progress)

    # --- writing (the trainer's side) ---------------------------------------------------------------

    def create(self) -> None:
        """Make the directory (checking it is writable) and take its lock; a second trainer is refused."""
        # Folders this call makes (deepest first), removed again by release() if the run leaves them empty.
        self._made = missing_folders(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise RunError(f"run directory '{self.path}' is not writable: {exc.strerror or exc}") from None
        lock = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RunError(f"run directory '{self.path}' is in use by another diffkit run; "
                           "choose another run.dir or wait for it to finish") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    def release(self) -> None:
        """Give the lock back; a directory this process created that holds nothing else is removed again."""
        if self._lock_file is None:
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        self._lock_file = None
        try:
            if [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                (self.path / LOCK_FILE).unlink()
                for folder in self._made:  # the run's folder, then the parents made for it
                    folder.rmdir()
        except OSError:  # a folder that is not empty (or not ours) stays
            pass

    def write_config(self, config: Config) -> None:
        write_text_atomic(self.config_path, config.to_toml())

    def saved_config(self) -> Config:
        if not self.config_path.is_file():
            raise RunError(f"--resume: '{self.config_path}' not found; nothing to resume in '{self.path}'")
        return load_config(self.config_path)


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else the CPU. Asking for CUDA without one is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was asked for but no CUDA device is available; use 'cpu' or 'auto'")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None


def open_run(path: PathLike) -> Run:
    """Open an existing run directory: ``diffkit.open_run("runs/shapes")``."""
    return Run.open(path)


def load_weights_from(diffusion: "GaussianDiffusion", source: PathLike) -> Path:
    """Load the weights of another run (its newest checkpoint's EMA weights), of one checkpoint folder, or of
    a diffusers ``UNet2DModel`` folder into ``diffusion``, checking that they fit; returns what was read.
    The start of a fine-tune."""
    from .pretrained import is_diffusers_folder, load_diffusers_weights

    if is_diffusers_folder(source) and not (Path(source) / CONFIG_FILE).is_file():
        load_diffusers_weights(diffusion.model, source)  # the backbone's weights; the schedule is the config's
        return Path(source)
    folder = ckpt.resolve_checkpoint(source)
    path = folder / ckpt.EMA_FILE
    ckpt.load_into(diffusion, path)
    return path


class PretrainedRun:
    """A model folder in diffusers' layout, opened like a run for sampling (:mod:`diffkit.pretrained`).

    It has no data and no checkpoints of its own: samples go to ``samples/<folder name>/`` under the
    current directory unless an ``out`` folder is given.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.samples_dir = Path(SAMPLES_DIR) / self.path.name

    def __repr__(self) -> str:
        return f"PretrainedRun('{self.path}')"

    def sample_defaults(self) -> SampleSection:
        return SampleSection()

    def default_device(self) -> str:
        return "auto"

    @property
    def info(self) -> RunInfo:
        from .pretrained import read_diffusers

        return RunInfo("image", [int(d) for d in read_diffusers(self.path).input_shape])

    def checkpoint(self, which: Optional[PathLike] = None) -> Path:
        if which is not None:
            raise RunError(f"'{self.path}' is a diffusers model folder: it has no checkpoints to choose from")
        return self.path

    def diffusion(self, *, ema: Optional[bool] = None, checkpoint: Optional[PathLike] = None,
                  device: Union[str, torch.device, None] = None) -> "GaussianDiffusion":
        from .pretrained import load_diffusers

        if checkpoint is not None and Path(checkpoint) != self.path:
            self.checkpoint(checkpoint)
        return load_diffusers(self.path).to(resolve_device(device)).eval()

    def sample(self, num: Optional[int] = None, **options: Any) -> list[Path]:
        from .generate import generate

        return generate(self, num, **options)  # type: ignore[arg-type]
