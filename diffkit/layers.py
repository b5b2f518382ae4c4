"""Building blocks shared by the backbones, generic over 1, 2 and 3 spatial dimensions."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv1d`` / ``Conv2d`` / ``Conv3d`` chosen by the number of spatial dimensions."""
    try:
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    except KeyError:
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}") from None
    return cls(*args, **kwargs)


def group_norm(channels: int, groups: int = 32, min_group_size: int = 4, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer when the width does not divide or is narrow.

    Every group keeps at least ``min_group_size`` channels (as in DDPM, whose narrowest level has
    128 channels in 32 groups): a group of one channel would subtract the per-channel timestep and
    condition embedding that :class:`ResBlock` adds just before it, so the block could not see them.
    """
    best = 1
    for g in range(1, min(groups, channels) + 1):
        if channels % g == 0 and channels // g >= min_group_size:
            best = g
    return nn.GroupNorm(best, channels, eps=eps)


def norm_layer(channels: int, groups: Optional[int] = None, eps: float = 1e-5) -> nn.GroupNorm:
    """The backbones' normalisation: :func:`group_norm`'s rule when ``groups`` is None, else exactly
    ``groups`` groups (as diffusers' ``norm_num_groups``, one count at every width)."""
    if groups is None:
        return group_norm(channels, eps=eps)
    if groups < 1 or channels % groups:
        raise ValueError(f"'norm_groups' {groups} does not divide a width of {channels} channels")
    return nn.GroupNorm(groups, channels, eps=eps)


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, flip_sin_to_cos: bool = True, freq_shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, as used by Ho et al. 2020).

    Frequencies ``max_period^(-i / (dim/2 - freq_shift))``; cosines first unless ``flip_sin_to_cos`` is
    False. The DDPM checkpoints converted to diffusers use sines first and ``freq_shift=1``.
    """
    half = dim // 2
    exponents = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * exponents / (half - freq_shift))
    args = t.float()[:, None] * freqs[None]
    parts = [torch.cos(args), torch.sin(args)]
    emb = torch.cat(parts if flip_sin_to_cos else parts[::-1], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """Residual block of the DDPM UNet: GroupNorm, SiLU, conv; the embedding is added between the convs.

    With ``scale_shift`` the embedding instead scales and shifts the second normalisation's output,
    ``norm(h) · (1 + s) + b`` (adaptive GroupNorm, Dhariwal & Nichol 2021): the timestep and the
    condition then gate each channel rather than only offsetting it.
    """

    def __init__(self, dims: int, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, *,
                 norm_groups: Optional[int] = None, norm_eps: float = 1e-5, scale_shift: bool = False) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = norm_layer(in_ch, norm_groups, norm_eps)
        self.conv1 = conv_nd(dims, in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = norm_layer(out_ch, norm_groups, norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(dims, out_ch, out_ch, 3, padding=1)
        self.skip = conv_nd(dims, in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(F.silu(emb)).reshape(h.shape[0], -1, *((1,) * (h.ndim - 2)))
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over every spatial position, through ``scaled_dot_product_attention``."""

    def __init__(self, dims: int, channels: int, heads: int = 1, *,
                 norm_groups: Optional[int] = None, norm_eps: float = 1e-5) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = norm_layer(channels, norm_groups, norm_eps)
        self.qkv = conv_nd(dims, channels, 3 * channels, 1)
        self.proj = conv_nd(dims, channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        qkv = self.qkv(self.norm(x)).flatten(2)
        # contiguous(): with channels last in memory the fused (flash) kernels apply; on a strided
        # view SDPA falls back to the math kernel, which stores the n×n attention matrix.
        q, k, v = rearrange(qkv, "b (three h d) n -> three b h n d", three=3, h=self.heads).contiguous()
        h = F.scaled_dot_product_attention(q, k, v)
        h = rearrange(h, "b h n d -> b (h d) n").reshape(x.shape)
        return x + self.proj(h)


# Where Downsample pads its input: ``factor - 1`` on both sides, or TensorFlow's "SAME" for a stride
# (as DDPM's TF code, hence the checkpoints converted from it: one at the end for factor 2).
DOWNSAMPLE_PADDINGS: tuple[str, ...] = ("symmetric", "same")


class Downsample(nn.Module):
    """Strided convolution dividing every spatial size by ``factor`` (DDPM's ``resamp_with_conv`` at 2).

    The kernel is ``2·factor - 1`` wide, so each output sees its whole stride and its neighbours'
    halves; at ``factor=2`` this is DDPM's 3-wide kernel. ``padding`` is one of :data:`DOWNSAMPLE_PADDINGS`.
    """

    def __init__(self, dims: int, channels: int, factor: int = 2, padding: str = "symmetric") -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"downsampling factor must be >= 2, got {factor}")
        if padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"unknown downsample padding {padding!r}; choose one of {list(DOWNSAMPLE_PADDINGS)}")
        self.factor = factor
        # "same": factor - 1 in all, the smaller half first; F.pad lists the last dimension first.
        self.pad = ((factor - 1) // 2, factor // 2) * dims if padding == "same" else None
        self.conv = conv_nd(dims, channels, channels, 2 * factor - 1, stride=factor,
                            padding=0 if self.pad else factor - 1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad) if self.pad else x)


UPSAMPLE_MODES: tuple[str, ...] = ("nearest", "linear")


class Upsample(nn.Module):
    """Upsampling by ``factor`` (doubling by default) followed by a 3-wide convolution.

    ``mode="nearest"`` repeats each position (DDPM); ``"linear"`` interpolates between neighbours
    (linear, bilinear or trilinear by rank), so that a coarse level's features reach the fine one
    without steps at every ``factor`` positions.
    """

    def __init__(self, dims: int, channels: int, factor: int = 2, mode: str = "nearest") -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"upsampling factor must be >= 2, got {factor}")
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling mode {mode!r}; choose one of {list(UPSAMPLE_MODES)}")
        self.factor = factor
        self.mode = mode if mode == "nearest" else {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        corners = None if self.mode == "nearest" else False  # nearest takes no align_corners
        return self.conv(F.interpolate(x, scale_factor=float(self.factor), mode=self.mode, align_corners=corners))
