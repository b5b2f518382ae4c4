"""diffkit: one DDPM engine for images, audio and volumes, with denoisers chosen by name from plugins."""

from . import likelihood, pretrained, samplers, schedules
from .diffusion import GaussianDiffusion, extract
from .ema import EMA
from .hookspecs import hookimpl
from .models import AudioDDPM, ConditionalDDPM
from .run import Run, RunError, open_run
from .trainer import train
from .registry import (
    PluginError,
    available_backbones,
    available_conditioners,
    create_backbone,
    create_conditioner,
    reload_plugins,
)

__version__ = "0.1.0"

__all__ = [
    "AudioDDPM",
    "ConditionalDDPM",
    "EMA",
    "GaussianDiffusion",
    "PluginError",
    "Run",
    "RunError",
    "available_backbones",
    "available_conditioners",
    "create_backbone",
    "create_conditioner",
    "extract",
    "hookimpl",
    "likelihood",
    "open_run",
    "pretrained",
    "reload_plugins",
    "samplers",
    "schedules",
    "train",
]
