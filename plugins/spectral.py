"""``unet-mdct``: a 2-D UNet over a waveform's time-frequency plane, through a fixed orthogonal transform.

A clip ``(B, C, L)`` is taken by the modified discrete cosine transform (MDCT, sine window, ``bins``
coefficients per hop of ``bins`` samples) to a ``(B, C, bins, L / bins)`` plane, the 2-D UNet denoises that
plane, and the inverse MDCT takes its output back to a waveform. The transform wraps around the clip's ends
(a circular lapped transform), so it is a square orthogonal matrix: L samples in, L coefficients out, the
inverse is its transpose. Gaussian noise in one domain is the same Gaussian noise in the other and the
training loss is the same number in both, so the engine, the schedule, the samplers and the WAV files do not
change: only the network sees frequency as an axis (a formant or a harmonic is a local pattern there; in the
waveform it is a period tens of samples long, spread over the whole clip).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffkit import hookimpl
from diffkit_plugins.unet import make_unet, nearest_multiples

# The defaults, what examples/speech_digits.toml trains: 64 bins (62.5 Hz wide at 8 kHz, an 8 ms hop), 2 × 2 bins
# folded into channels, four levels 16/32/64/128 wide with attention at the two coarsest, adaptive GroupNorm and
# the position channels (the network knows each bin's frequency). benchmarks/results/speech_digits.md.
DEFAULTS: dict[str, Any] = dict(bins=64, patch_size=2, channels=[16, 32, 64, 128], num_res_blocks=1,
                                attention_levels=[2, 3], coordinates=True, scale_shift_norm=True)


class MDCT(nn.Module):
    """The circular MDCT with ``bins`` coefficients per hop: an orthogonal ``L × L`` transform for ``L``
    a multiple of ``bins`` (sine window, which meets the Princen-Bradley condition)."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or bins % 2:  # 64.5 or "64": not rounded
            raise ValueError(f"unet-mdct: 'bins' must be an even number >= 2, got {bins}")
        self.bins = m = int(bins)
        n = torch.arange(2 * m, dtype=torch.float64)
        k = torch.arange(m, dtype=torch.float64)
        window = torch.sin(math.pi * (n + 0.5) / (2 * m))
        basis = math.sqrt(2.0 / m) * window * torch.cos(math.pi / m * (n + 0.5 + m / 2) * (k[:, None] + 0.5))
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)  # (bins, 1, 2 bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) → (B, C, bins, L / bins)."""
        b, c, length = x.shape
        m = self.bins
        flat = x.reshape(b * c, 1, length)
        flat = torch.cat([flat, flat[..., :m]], -1)  # the last frame wraps around to the start
        return F.conv1d(flat, self.basis.to(x.dtype), stride=m).reshape(b, c, m, length // m)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, bins, K) → (B, C, K · bins): the transpose of ``forward``."""
        b, c, m, frames = z.shape
        y = F.conv_transpose1d(z.reshape(b * c, m, frames), self.basis.to(z.dtype), stride=m)
        length = frames * m
        y = torch.cat([y[..., :m] + y[..., length:], y[..., m:length]], -1)  # fold the wrapped tail back
        return y.reshape(b, c, length)


class MDCTUNet(nn.Module):
    """``unet2d`` on the MDCT plane of a waveform ``(B, C, L)``; ``L`` a multiple of ``bins`` times the UNet's
    total downsampling (``size_multiple``), and ``bins`` a multiple of it too."""

    def __init__(self, bins: int = 64, in_channels: int = 1, out_channels: Optional[int] = None,
                 **unet_options: Any) -> None:
        super().__init__()
        self.mdct = MDCT(bins)
        try:
            self.unet = make_unet(2, in_channels=in_channels, out_channels=out_channels, **unet_options)
        except ValueError as exc:  # unet2d's own message, under this backbone's name
            raise ValueError(str(exc).replace("unet2d:", "unet-mdct:", 1)) from None
        self.in_channels = self.unet.in_channels
        self.out_channels = self.unet.out_channels
        self.cond_dim = self.unet.cond_dim
        self.size_multiple = self.mdct.bins * self.unet.size_multiple
        if self.mdct.bins % self.unet.size_multiple:
            raise ValueError(f"unet-mdct: 'bins' ({self.mdct.bins}) must be a multiple of the UNet's total downsampling "
                             f"({self.unet.size_multiple}, from 'downsample_factors' and 'patch_size')")

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"unet-mdct expects waveforms (B, {self.in_channels}, L), got shape {tuple(x.shape)}")
        n, m = x.shape[-1], self.size_multiple
        if n % m:
            raise ValueError(f"unet-mdct with {self.mdct.bins} bins accepts lengths that are multiples of {m}; got {n} "
                             f"(nearest accepted: {nearest_multiples(n, m)})")
        return self.mdct.inverse(self.unet(self.mdct(x), t, cond))


def _unet_mdct(**options: Any) -> MDCTUNet:
    defaults = dict(DEFAULTS)
    if "channels" in options:  # the default attention levels are for the default widths
        defaults.pop("attention_levels")
    return MDCTUNet(**{**defaults, **options})


@hookimpl
def diffkit_register_backbones(register) -> None:
    register("unet-mdct", _unet_mdct, "2-D UNet over a waveform's MDCT plane (B, C, L) → (B, C, bins, L/bins) → "
             "back; for speech")
