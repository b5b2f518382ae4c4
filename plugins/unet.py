"""``unet1d`` / ``unet2d`` / ``unet3d``: the UNet of Ho et al. 2020 over 1, 2 or 3 spatial dimensions."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from einops import rearrange

from diffkit import hookimpl
from diffkit.layers import (
    DOWNSAMPLE_PADDINGS,
    UPSAMPLE_MODES,
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    conv_nd,
    norm_layer,
    timestep_embedding,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Ho et al. 2020, appendix B: 35.7M parameters at 32×32; attention at the 16×16 level.
    "ddpm-cifar10": dict(in_channels=3, channels=[128, 256, 256, 256], num_res_blocks=2,
                         attention_levels=[1], dropout=0.1),
}

# ``unet1d`` presets, for waveforms at 8-16 kHz; neither runs a convolution at the full rate.
# "audio-fast": 8 samples folded into channels (patch_size), then 3 levels ×4 apart (4096 samples → 512
# → 128 → 32 positions), attention at the coarsest. About 3× faster per training step than the seed's
# channels=[32, 64, 128, 256] with factors of 4, though it learns less per step (benchmarks/results/audio_speed.md).
# "audio-p2" (recommended, examples/audio_wav.toml): 2 samples folded, then 5 levels ×4 apart (4096 → 2048 →
# 512 → 128 → 32 → 8 positions), narrow at the fine levels (16, 32 channels) where the positions are many, with
# attention at 128 positions (32 samples each, about one period of a tone or more) as well as at the coarsest:
# far-apart periods can line up there, which keeps the pitch steady and the tone clean. A fine first level
# costs little at 16 channels: about 1.5× cheaper per step than audio-fast, and far better per CPU-minute on the
# tones demo (track purity 0.81 against 0.38-0.47; benchmarks/results/audio_recipes.md, audio_speed.md).
# The audio examples add scale_shift_norm=True (adaptive GroupNorm), which made the class label steer the
# tones demo's chirps (44/25% → 100/94% right at the same CPU time); the preset itself is unchanged so that
# runs saved with it still load.
PRESETS_1D: dict[str, dict[str, Any]] = {
    "audio-fast": dict(in_channels=1, channels=[64, 128, 256], num_res_blocks=1, attention_levels=[2],
                       downsample_factors=4, patch_size=8),
    "audio-p2": dict(in_channels=1, channels=[16, 32, 64, 128, 256], num_res_blocks=1, attention_levels=[2, 4],
                     downsample_factors=4, patch_size=2),
}


class UNet(nn.Module):
    """DDPM UNet: per level ``num_res_blocks`` residual blocks (self-attention at ``attention_levels``),
    a strided convolution down between levels, the mirror image up with skip connections.

    ``channels`` gives one width per level. ``downsample_factors`` gives the factor between each
    level and the next (one int for all, or one per transition; default 2, as in DDPM): audio likes
    4s, so that 16 384 samples reach a coarse level short enough for attention in few levels. Each
    spatial size must be a multiple of the factors' product, :attr:`size_multiple`.
    ``cond_dim`` adds a projection of ``cond`` to the timestep embedding. ``gradient_checkpointing``
    recomputes each block's activations in the backward pass instead of keeping them.

    The remaining options exist to hold models made elsewhere (diffusers' ``UNet2DModel``, see
    :mod:`diffkit.pretrained`); their defaults are diffkit's own conventions. ``attention_head_dim``
    gives each attention block ``width // attention_head_dim`` heads instead of ``attention_heads``;
    ``mid_attention`` keeps or drops the attention between the middle residual blocks;
    ``norm_groups`` fixes the GroupNorm group count at every width (default: :func:`group_norm`'s rule)
    and ``norm_eps`` its epsilon; ``flip_sin_to_cos`` and ``freq_shift`` choose the timestep
    embedding's convention (:func:`timestep_embedding`); ``downsample_padding`` where the strided
    convolutions pad (:data:`~diffkit.layers.DOWNSAMPLE_PADDINGS`).

    ``patch_size`` > 1 folds each run of ``patch_size`` samples (per axis) into channels before the
    first convolution and unfolds the output the same way (space-to-depth), so that no convolution
    runs at the full rate: on waveforms most of the cost sits there (see :data:`PRESETS_1D`).
    ``scale_shift_norm`` lets the timestep and condition embedding scale and shift each residual
    block's second normalisation (adaptive GroupNorm) instead of being added before it.
    ``upsample_mode`` is ``"nearest"`` (DDPM) or ``"linear"`` (interpolating, see :class:`Upsample`).

    ``mean_skip`` adds to each output channel a mix of the input channels' means over all positions,
    weighted by a function of the embedding (zero at the start). Without it the output's mean per channel
    is nearly out of the network's reach: the last GroupNorm removes every feature's mean before the output
    convolution. With ``patch_size`` 2 on waveforms the two folded channels' means are the clip's DC and its
    Nyquist-rate component, and the sampler's starting noise left both in the spoken-digits samples
    (medians 0.003-0.005, a floor of -41 to -44 dBFS; benchmarks/results/speech_digits.md).

    ``coordinates`` appends one input channel per axis that holds the position along it, from -1 at the
    first sample to 1 at the last (CoordConv, Liu et al. 2018), so that even the finest level knows where in
    the clip (or image, or volume) it is without a path through the coarse levels.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int = 1,
        out_channels: Optional[int] = None,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        attention_heads: int = 1,
        dropout: float = 0.0,
        cond_dim: Optional[int] = None,
        gradient_checkpointing: bool = False,
        downsample_factors: Union[int, Sequence[int]] = 2,
        attention_head_dim: Optional[int] = None,
        mid_attention: bool = True,
        norm_groups: Optional[int] = None,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
        downsample_padding: str = "symmetric",
        patch_size: int = 1,
        scale_shift_norm: bool = False,
        upsample_mode: str = "nearest",
        mean_skip: bool = False,
        coordinates: bool = False,
    ) -> None:
        # Every constructor argument, kept as given so the model can be described again (export).
        options = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.options = options
        name = f"unet{dims}d"
        channels = list(channels)
        if not channels or any(int(c) < 1 for c in channels):
            raise ValueError(f"{name}: 'channels' must be a non-empty list of positive widths, got {channels}")
        bad = [lvl for lvl in attention_levels if not 0 <= lvl < len(channels)]
        if bad:
            raise ValueError(f"{name}: 'attention_levels' {bad} out of range for {len(channels)} levels (0…{len(channels) - 1})")
        flags = dict(gradient_checkpointing=gradient_checkpointing, mid_attention=mid_attention,
                     flip_sin_to_cos=flip_sin_to_cos, scale_shift_norm=scale_shift_norm, mean_skip=mean_skip,
                     coordinates=coordinates)
        for key, value in flags.items():
            if not isinstance(value, bool):  # a TOML string "false" would otherwise switch the option on
                raise ValueError(f"{name}: {key!r} must be true or false, got {value!r}")
        factors = _factors(name, downsample_factors, len(channels))
        if num_res_blocks < 1:
            raise ValueError(f"{name}: 'num_res_blocks' must be >= 1, got {num_res_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: 'dropout' must lie in [0, 1), got {dropout}")
        if attention_head_dim is not None:
            bad = [c for c in [channels[i] for i in attention_levels] + ([channels[-1]] if mid_attention else [])
                   if c % attention_head_dim]
            if attention_head_dim < 1 or bad:
                raise ValueError(f"{name}: 'attention_head_dim' {attention_head_dim} does not divide the attention "
                                 f"width(s) {bad}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"{name}: unknown 'upsample_mode' {upsample_mode!r}; choose one of {list(UPSAMPLE_MODES)}")
        if downsample_padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"{name}: unknown 'downsample_padding' {downsample_padding!r}; choose one of "
                             f"{list(DOWNSAMPLE_PADDINGS)}")
        if norm_groups is not None and (norm_groups < 1 or any(c % norm_groups for c in channels)):
            raise ValueError(f"{name}: 'norm_groups' {norm_groups} must divide every width in 'channels' {channels}")
        self.name = name
        self.dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.cond_dim = cond_dim
        self.gradient_checkpointing = gradient_checkpointing
        self.num_levels = len(channels)
        self.downsample_factors = factors
        if int(patch_size) < 1:
            raise ValueError(f"{name}: 'patch_size' must be >= 1, got {patch_size}")
        self.patch_size = int(patch_size)
        self.size_multiple = math.prod(factors) * self.patch_size
        # einops patterns for this rank, e.g. 1-D "b c (l p0) -> b (c p0) l" and back.
        axes = " ".join(f"(s{i} p{i})" for i in range(dims))
        self._patchify = f"b c {axes} -> b (c {' '.join(f'p{i}' for i in range(dims))}) {' '.join(f's{i}' for i in range(dims))}"
        self._unpatchify = " -> ".join(reversed(self._patchify.split(" -> ")))
        patch_features = self.patch_size ** dims
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        norm = dict(norm_groups=norm_groups, norm_eps=norm_eps)
        res = dict(norm, scale_shift=bool(scale_shift_norm))

        def heads(width: int) -> int:
            return width // attention_head_dim if attention_head_dim else attention_heads

        ch0 = channels[0]
        emb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_embed = nn.Linear(cond_dim, emb_dim) if cond_dim else None
        self.coordinates = coordinates
        self.conv_in = conv_nd(dims, in_channels * patch_features + (dims if coordinates else 0), ch0, 3, padding=1)

        attn = set(attention_levels)
        self.down = nn.ModuleList()
        skips = [ch0]
        ch = ch0
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                self.down.append(self._block(dims, ch, width, emb_dim, dropout, level in attn, heads(width), norm, res))
                ch = width
                skips.append(ch)
            if level != len(channels) - 1:
                self.down.append(Downsample(dims, ch, factors[level], downsample_padding))
                skips.append(ch)

        self.mid = nn.ModuleList([
            ResBlock(dims, ch, ch, emb_dim, dropout, **res),
            *([AttentionBlock(dims, ch, heads(ch), **norm)] if mid_attention else []),
            ResBlock(dims, ch, ch, emb_dim, dropout, **res),
        ])

        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(dims, ch + skips.pop(), width, emb_dim, dropout, level in attn, heads(width),
                                           norm, res))
                ch = width
            if level != 0:
                self.up.append(Upsample(dims, ch, factors[level - 1], upsample_mode))

        self.norm_out = norm_layer(ch, norm_groups, norm_eps)
        self.conv_out = conv_nd(dims, ch, self.out_channels * patch_features, 3, padding=1)
        self.mean_out = None
        if mean_skip:
            self._mean_shape = (self.out_channels * patch_features, in_channels * patch_features)
            self.mean_out = nn.Linear(emb_dim, math.prod(self._mean_shape))
            nn.init.zeros_(self.mean_out.weight)
            nn.init.zeros_(self.mean_out.bias)

    @staticmethod
    def _block(dims, in_ch, out_ch, emb_dim, dropout, with_attention, heads, norm, res) -> nn.Module:
        block = ResBlock(dims, in_ch, out_ch, emb_dim, dropout, **res)
        if not with_attention:
            return block
        return _Sequential(block, AttentionBlock(dims, out_ch, heads, **norm))

    def _run(self, fn, *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # Recompute fn's activations in the backward pass instead of storing them: only its
            # inputs stay alive (the skip tensors, which the up path keeps anyway).
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    @staticmethod
    def _up_block(block: nn.Module, h: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # The concatenation lies inside the checkpoint, so its (wide) result is not kept either.
        return block(torch.cat([h, skip], dim=1), emb)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_input(x)
        emb = timestep_embedding(t, self.time_embed[0].in_features, flip_sin_to_cos=self.flip_sin_to_cos,
                                 freq_shift=self.freq_shift)
        emb = self.time_embed(emb.to(x.dtype))
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError(f"{self.name} was built with cond_dim={self.cond_dim} and needs cond")
            emb = emb + self.cond_embed(cond.to(emb.dtype))
        elif cond is not None:
            raise ValueError(f"{self.name} got cond but was built without cond_dim")

        folded = self._fold(x, self._patchify)
        h = self.conv_in(torch.cat([folded, self._coordinates(folded)], 1) if self.coordinates else folded)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        for block in self.mid:
            h = self._run(block, h, emb)
        for block in self.up:
            if isinstance(block, Upsample):
                h = self._run(block, h, emb)
            else:
                h = self._run(self._up_block, block, h, hs.pop(), emb)
        out = self._run(self._head, h)
        if self.mean_out is not None:
            mix = self.mean_out(emb).view(len(x), *self._mean_shape)
            means = folded.flatten(2).mean(-1)
            out = out + torch.einsum("boi,bi->bo", mix, means).view(*out.shape[:2], *(1,) * self.dims)
        return self._fold(out, self._unpatchify)

    def _coordinates(self, h: torch.Tensor) -> torch.Tensor:
        """(B, dims, *spatial): each axis's position, -1 … 1, in h's dtype and device."""
        axes = [torch.linspace(-1.0, 1.0, n, dtype=h.dtype, device=h.device) for n in h.shape[2:]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return grid.unsqueeze(0).expand(len(h), *grid.shape)

    def _fold(self, x: torch.Tensor, pattern: str) -> torch.Tensor:
        if self.patch_size == 1:
            return x
        return rearrange(x, pattern, **{f"p{i}": self.patch_size for i in range(self.dims)})

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} expects input (B, {self.in_channels}, {', '.join(['…'] * self.dims)}), "
                f"got shape {tuple(x.shape)}"
            )
        m = self.size_multiple
        bad = [s for s in x.shape[2:] if s % m]
        if bad:
            hints = ", ".join(f"{s} → {nearest_multiples(s, m)}" for s in bad)
            patch = f" and patch size {self.patch_size}" if self.patch_size > 1 else ""
            raise ValueError(
                f"{self.name} with downsampling factors {self.downsample_factors}{patch} accepts spatial sizes that are "
                f"multiples of {m}; got {tuple(x.shape[2:])} (nearest accepted: {hints})"
            )


def nearest_multiples(size: int, multiple: int) -> str:
    """The accepted sizes either side of ``size``, for an error message: "480 or 512"."""
    return f"{size // multiple * multiple or multiple} or {(size // multiple + 1) * multiple}"


def _factors(name: str, factors: Union[int, Sequence[int]], levels: int) -> list[int]:
    if isinstance(factors, int):
        factors = [factors] * (levels - 1)
    factors = [int(f) for f in factors]
    if len(factors) != levels - 1:
        raise ValueError(f"{name}: 'downsample_factors' needs one factor per transition between the "
                         f"{levels} levels ({levels - 1}), got {factors}")
    if any(f < 2 for f in factors):
        raise ValueError(f"{name}: 'downsample_factors' must all be >= 2, got {factors}")
    return factors


class _Sequential(nn.Module):
    """A residual block followed by attention, both taking the embedding."""

    def __init__(self, *blocks: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, emb)
        return h


class UNet1D(UNet):
    """UNet over waveforms ``(B, C, L)``; the seed's ``UNet1D(in_channels=1, out_channels=1, channels=[32, 64, 128, 256], attention_levels=[2])``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(1, **options)


class UNet2D(UNet):
    """UNet over images ``(B, C, H, W)``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(2, **options)


class UNet3D(UNet):
    """UNet over volumes ``(B, C, D, H, W)``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(3, **options)


_BY_RANK = {1: UNet1D, 2: UNet2D, 3: UNet3D}


def make_unet(dims: int, preset: Optional[str] = None, **options: Any) -> UNet:
    """Build a UNet; a ``preset`` supplies defaults that explicit options override."""
    if preset is not None:
        presets = {1: PRESETS_1D, 2: PRESETS}.get(dims, {})
        if preset not in presets:
            raise ValueError(f"unet{dims}d: unknown preset {preset!r}; presets: {', '.join(presets) or 'none'}")
        options = {**presets[preset], **options}
    return _BY_RANK[dims](**options)


def _unet1d(preset: Optional[str] = None, **options: Any) -> UNet:
    return make_unet(1, preset, **options)


def _unet2d(preset: Optional[str] = None, **options: Any) -> UNet:
    return make_unet(2, preset, **options)


def _unet3d(preset: Optional[str] = None, **options: Any) -> UNet:
    return make_unet(3, preset, **options)


@hookimpl
def diffkit_register_backbones(register) -> None:
    register("unet1d", _unet1d, "1-D UNet for waveforms (B, C, L); 'downsample_factors' for long audio; presets 'audio-p2' (recommended), 'audio-fast'")
    register("unet2d", _unet2d, "2-D UNet for images (B, C, H, W); preset 'ddpm-cifar10'")
    register("unet3d", _unet3d, "3-D UNet for volumes (B, C, D, H, W)")
