"""The seed's ready-made engines, ``AudioDDPM`` and ``ConditionalDDPM``: a :class:`GaussianDiffusion` whose
backbone (and conditioner) come from the plugins. They add defaults, not behaviour: training,
guidance and sampling are the engine's own.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from .diffusion import GaussianDiffusion
from .registry import create_backbone, create_conditioner
from .schedules import DEFAULT_SCHEDULE, DEFAULT_TIMESTEPS, make_beta_schedule

Backbone = Union[nn.Module, str, None]
Betas = Union[torch.Tensor, Sequence[float], None]

# The seed's audio network: UNet1D(in_channels=1, out_channels=1, channels=[32, 64, 128, 256], attention_levels=[2]).
AUDIO_BACKBONE = "unet1d"
AUDIO_OPTIONS: dict[str, Any] = dict(channels=[32, 64, 128, 256], attention_levels=[2])


def _backbone(
    who: str,
    model: Backbone,
    default: Optional[str],
    defaults: dict[str, Any],
    in_channels: int,
    cond_dim: Optional[int],
    options: Optional[dict[str, Any]],
) -> nn.Module:
    """The given module, or the backbone plugin named ``model`` (``default`` when None) built for the data."""
    if isinstance(model, nn.Module):
        if options:
            raise ValueError(f"{who}: 'backbone_options' apply to a backbone built by name, not to the given module")
        return model
    if model is None:
        # A preset replaces the default configuration rather than being overridden by it.
        model, options = default, (options if options and "preset" in options else {**defaults, **(options or {})})
    if not isinstance(model, str):
        raise TypeError(f"{who}: 'model' must be an nn.Module or a backbone name, got {type(model).__name__}")
    options = {"in_channels": in_channels, **(options or {})}
    if cond_dim is not None:
        options["cond_dim"] = cond_dim
    return create_backbone(model, **options)


class AudioDDPM(GaussianDiffusion):
    """DDPM over waveforms of shape ``input_shape = (channels, length)`` (an int means one channel).

    With no ``model`` the backbone is the seed's ``UNet1D(in_channels=1, out_channels=1,
    channels=[32, 64, 128, 256], attention_levels=[2])`` (``unet1d``; ``backbone_options`` override
    its options, and ``backbone_options={"preset": "audio-p2"}`` gives the faster recommended network
    instead, ``"audio-fast"`` an older fast one; pair them with ``objective="v"`` and the cosine schedule, as
    ``examples/audio_wav.toml`` does);
    ``model`` may also be a backbone name or any backbone module. ``betas`` default to
    the seed's linear schedule over 1000 steps; other keywords go to :class:`GaussianDiffusion`.
    """

    def __init__(
        self,
        model: Backbone = None,
        input_shape: Union[int, Sequence[int]] = (1, 16384),
        betas: Betas = None,
        *,
        backbone_options: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        shape = (1, input_shape) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
        if len(shape) != 2:
            raise ValueError(f"AudioDDPM: 'input_shape' is (channels, length), got {shape}")
        conditioner = kwargs.get("conditioner")
        cond_dim = getattr(conditioner, "dim", None) if conditioner is not None else None
        backbone = _backbone("AudioDDPM", model, AUDIO_BACKBONE, AUDIO_OPTIONS, shape[0], cond_dim, backbone_options)
        super().__init__(backbone, shape, make_beta_schedule(DEFAULT_SCHEDULE, DEFAULT_TIMESTEPS) if betas is None else betas, **kwargs)


class ConditionalDDPM(GaussianDiffusion):
    """Class-conditional DDPM with classifier-free guidance: the ``labels`` conditioner over ``num_classes``.

    ``model`` is a backbone module built with ``cond_dim`` equal to the label embedding's width
    ``dim`` (taken from the module's ``cond_dim`` when it has one, else 128), or a backbone name,
    built here with ``cond_dim=dim`` and ``backbone_options``. During training a label becomes the
    null label with probability ``label_dropout``, so that ``sample(..., y=labels,
    guidance_scale=w)`` can guide. ``betas`` default to the seed's linear schedule over 1000 steps.
    """

    def __init__(
        self,
        model: Union[nn.Module, str],
        input_shape: Sequence[int],
        betas: Betas = None,
        *,
        num_classes: int,
        dim: Optional[int] = None,
        label_dropout: float = 0.1,
        backbone_options: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        if "conditioner" in kwargs:
            raise TypeError("ConditionalDDPM builds its own 'labels' conditioner; use GaussianDiffusion for another")
        shape = tuple(int(d) for d in input_shape)
        model_dim = getattr(model, "cond_dim", None) if isinstance(model, nn.Module) else None
        if isinstance(model, nn.Module) and dim is not None and model_dim is not None and dim != model_dim:
            raise ValueError(f"ConditionalDDPM: 'dim'={dim} but the backbone was built with cond_dim={model_dim}")
        dim = dim or model_dim or 128
        if isinstance(model, nn.Module) and hasattr(model, "cond_dim") and not model_dim:
            raise ValueError("ConditionalDDPM: the backbone was built without cond_dim; build it with "
                             f"cond_dim={dim} or pass a backbone name")
        conditioner = create_conditioner("labels", num_classes=num_classes, dim=dim, dropout=label_dropout)
        backbone = _backbone("ConditionalDDPM", model, None, {}, shape[0], dim, backbone_options)
        super().__init__(backbone, shape, make_beta_schedule(DEFAULT_SCHEDULE, DEFAULT_TIMESTEPS) if betas is None else betas,
                         conditioner=conditioner, **kwargs)
