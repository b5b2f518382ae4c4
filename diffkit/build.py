"""From a validated config to objects: the dataset, the backbone and conditioner plugins, the engine."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from . import data as data_module
from .config import Config, ConfigError
from .diffusion import GaussianDiffusion
from .registry import PluginError, create_backbone, create_conditioner
from .schedules import make_beta_schedule


@dataclass
class RunInfo:
    """What sampling needs to know about the data without loading it again (saved as run.json)."""

    modality: str
    example_shape: list[int]
    sample_rate: Optional[int] = None
    classes: Optional[list[str]] = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RunInfo":
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"'{path}' not found: is '{path.parent}' a diffkit run directory?") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"'{path}' is damaged: {exc}") from None


def build_dataset(config: Config) -> Dataset:
    try:
        return data_module.create_dataset(config.data.dataset, **config.data.options)
    except TypeError as exc:
        raise ConfigError(f"data.options: dataset {config.data.dataset!r}: {exc}") from None
    except ValueError as exc:
        key = "data.dataset" if "unknown dataset" in str(exc) else "data.options"
        raise ConfigError(f"{key}: {exc}") from None


def run_info(dataset: Any) -> RunInfo:
    return RunInfo(
        modality=dataset.modality,
        example_shape=[int(d) for d in dataset.example_shape],
        sample_rate=getattr(dataset, "sample_rate", None),
        classes=list(dataset.classes) if getattr(dataset, "classes", None) else None,
    )


def _plugin(kind: str, key: str, name: str, options: dict[str, Any]) -> torch.nn.Module:
    factory = create_backbone if kind == "backbone" else create_conditioner
    try:
        return factory(name, **options)
    except PluginError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}.options: {exc}") from None


def build_diffusion(config: Config, info: RunInfo) -> GaussianDiffusion:
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
    return GaussianDiffusion(
        model,
        info.example_shape,
        make_beta_schedule(d.schedule, d.timesteps),
        objective=d.objective,
        conditioner=conditioner,
        variance=d.variance,
        threshold=d.threshold,
        threshold_percentile=d.threshold_percentile,
        loss_weighting=d.loss_weighting,
        min_snr_gamma=d.min_snr_gamma,
    )


def sample_labels(diffusion: GaussianDiffusion, num: int, labels: Optional[list[int]]) -> Optional[torch.Tensor]:
    """Labels for ``num`` samples of a conditional model: the given ones, or every class in turn."""
    if diffusion.conditioner is None:
        if labels:
            raise ConfigError("sample.labels: this model has no conditioner")
        return None
    if labels:
        if len(labels) != num:
            raise ConfigError(f"sample.labels: {len(labels)} labels for {num} samples")
        return torch.tensor(labels, dtype=torch.long)
    classes = getattr(diffusion.conditioner, "num_classes", None)
    if classes is None:
        raise ConfigError("sample.labels: this conditioner needs explicit labels")
    return torch.arange(num) % classes
