"""The ``tinyconv`` backbone: a few residual convolutions, conditioned on the timestep (and ``cond``).

Small enough to read in a minute; it follows diffkit's backbone protocol for 1-, 2- and 3-D data:
``model(x_t, t, cond=None)`` with ``x_t`` of shape ``(B, C, *spatial)`` returns that shape.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import diffkit


class TinyConv(nn.Module):
    """Residual 3-wide convolutions; the timestep (plus ``cond``) scales and shifts every block's features."""

    def __init__(
        self,
        dims: int = 2,
        in_channels: int = 1,
        out_channels: Optional[int] = None,
        width: int = 32,
        depth: int = 3,
        cond_dim: Optional[int] = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if dims not in (1, 2, 3):
            raise ValueError(f"tinyconv: 'dims' must be 1, 2 or 3, got {dims!r}")
        if width < 1 or depth < 1:
            raise ValueError(f"tinyconv: 'width' and 'depth' must be >= 1, got {width} and {depth}")
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.dims = dims
        self.in_channels = in_channels
        self.cond_dim = cond_dim
        self.width = width
        self.gradient_checkpointing = gradient_checkpointing
        self.conv_in = conv(in_channels, width, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_proj = nn.Linear(cond_dim, width) if cond_dim else None
        # Per block: a scale and a shift of the features, from the embedding (FiLM; Perez et al. 2018).
        self.film = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(depth))
        self.convs = nn.ModuleList(conv(width, width, 3, padding=1) for _ in range(depth))
        self.conv_out = conv(width, out_channels or in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"tinyconv (dims={self.dims}) expects (B, {self.in_channels}, …) with {self.dims} "
                             f"spatial dims, got {tuple(x.shape)}")
        emb = self.time_mlp(_sinusoidal(t, self.width).to(x.dtype))
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError(f"tinyconv was built with cond_dim={self.cond_dim} and needs cond")
            emb = emb + self.cond_proj(cond.to(emb.dtype))
        h = self.conv_in(x)
        for film, conv in zip(self.film, self.convs):
            scale, shift = film(F.silu(emb)).reshape(*emb.shape[:1], 2, self.width, *(1,) * self.dims).unbind(1)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = h + checkpoint(_block, conv, h, scale, shift, use_reentrant=False)
            else:
                h = h + _block(conv, h, scale, shift)
        return self.conv_out(F.silu(h))


def _block(conv: nn.Module, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return conv(F.silu(h * (1 + scale) + shift))


def _sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos features of the integer timesteps (Vaswani et al. 2017)."""
    half = max(dim // 2, 1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs
    return F.pad(torch.cat([args.cos(), args.sin()], dim=1), (0, dim - 2 * half))[:, :dim]


@diffkit.hookimpl
def diffkit_register_backbones(register) -> None:
    register("tinyconv", TinyConv, "tiny residual conv denoiser for 1-, 2- or 3-D data (example plugin)")
