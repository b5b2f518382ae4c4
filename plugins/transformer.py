"""``transformer``: a DiT denoiser (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers")
over 1, 2 or 3 spatial dimensions.

The input is cut into patches, each patch becomes a token, tokens pass through transformer blocks
conditioned on the timestep (and ``cond``) by adaLN-Zero, and a linear layer turns each token back
into its patch. Positional encodings are fixed sin-cos functions of each patch's grid coordinates,
computed for the actual input at every call: the model has no fixed input size, so a waveform of
another length or a larger volume needs no new model (only sizes divisible by the patch size).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from diffkit import hookimpl
from diffkit.layers import timestep_embedding

# Width of the sinusoidal timestep features fed to the timestep MLP (DiT's frequency_embedding_size).
TIME_FEATURES = 256


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x·(1 + scale) + shift``, with per-example ``(B, 1, width)`` shift and scale."""
    return x * (1 + scale) + shift


def sincos_position_encoding(grid: Sequence[int], width: int) -> torch.Tensor:
    """Fixed sin-cos encodings of every cell of ``grid``, ``(prod(grid), width)``, row-major like the tokens.

    Each axis gets ``2·⌊width / (2·len(grid))⌋`` channels: the sin and cos of its coordinate at
    geometrically spaced frequencies (Vaswani et al. 2017; per axis as in MAE / DiT); leftover
    channels are zero.
    """
    per_axis = 2 * (width // (2 * len(grid)))
    half = per_axis // 2
    freqs = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float64) / max(half, 1))
    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    parts = []
    for c in coords:
        angles = c.reshape(-1, 1) * freqs
        parts += [angles.sin(), angles.cos()]
    enc = torch.cat(parts, dim=1)
    return F.pad(enc, (0, width - enc.shape[1])).float()


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated, and whose branches gated, by the
    conditioning vector: adaLN-Zero, the gates starting at zero so the block starts as the identity."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, width)
        )
        # shift, scale and gate for the attention branch, then for the MLP branch.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(h, "b h n d -> b n (h d)"))


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a zero-initialised linear map from each token to its patch."""

    def __init__(self, width: int, patch_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, patch_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """DiT denoiser over ``dims`` spatial dimensions; any input size divisible by ``patch_size``.

    ``patch_size`` is one int for every axis or one per axis. ``width`` is the token width, split
    into ``heads`` attention heads; ``depth`` blocks; ``cond_dim`` adds a projection of ``cond`` to
    the timestep embedding that drives every adaLN-Zero modulation.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int = 1,
        out_channels: Optional[int] = None,
        patch_size: Union[int, Sequence[int]] = 2,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cond_dim: Optional[int] = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if dims not in (1, 2, 3):
            raise ValueError(f"transformer: 'dims' must be 1, 2 or 3, got {dims!r}")
        patch = (patch_size,) * dims if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
        if len(patch) != dims or any(p < 1 for p in patch):
            raise ValueError(f"transformer: 'patch_size' must be a positive int or {dims} positive ints, got {patch_size!r}")
        if in_channels < 1:
            raise ValueError(f"transformer: 'in_channels' must be >= 1, got {in_channels}")
        if depth < 1:
            raise ValueError(f"transformer: 'depth' must be >= 1, got {depth}")
        if heads < 1 or width % heads:
            raise ValueError(f"transformer: 'width' {width} does not split into 'heads' {heads} equal heads")
        if width < 2 * dims:
            raise ValueError(f"transformer: 'width' must be at least {2 * dims} for {dims}-D positional encodings, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"transformer: 'dropout' must lie in [0, 1), got {dropout}")
        self.dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch_size = patch
        self.width = width
        self.cond_dim = cond_dim
        self.gradient_checkpointing = gradient_checkpointing

        patch_volume = math.prod(patch)
        self.patch_embed = nn.Linear(patch_volume * in_channels, width)
        self.time_embed = nn.Sequential(nn.Linear(TIME_FEATURES, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width) if cond_dim else None
        self.blocks = nn.ModuleList([DiTBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.final = FinalLayer(width, patch_volume * self.out_channels)

        # einops patterns for this rank, e.g. for 2-D "b c (g0 p0) (g1 p1) -> b (g0 g1) (p0 p1 c)".
        g = [f"g{i}" for i in range(dims)]
        p = [f"p{i}" for i in range(dims)]
        image = "b c " + " ".join(f"({gi} {pi})" for gi, pi in zip(g, p))
        tokens = f"b ({' '.join(g)}) ({' '.join(p)} c)"
        self._patchify = f"{image} -> {tokens}"
        self._unpatchify = f"{tokens} -> {image}"
        self._init_weights()

    def _init_weights(self) -> None:
        # As DiT: Xavier-uniform linears, small normal timestep MLP, adaLN-Zero and output at zero.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (self.time_embed[0], self.time_embed[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        grid = self._grid(x)
        patch_sizes = {f"p{i}": p for i, p in enumerate(self.patch_size)}
        h = self.patch_embed(rearrange(x, self._patchify, **patch_sizes))
        h = h + sincos_position_encoding(grid, self.width).to(device=h.device, dtype=h.dtype)

        c = self.time_embed(timestep_embedding(t, TIME_FEATURES).to(h.dtype))
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError(f"transformer was built with cond_dim={self.cond_dim} and needs cond")
            c = c + self.cond_embed(cond.to(c.dtype))
        elif cond is not None:
            raise ValueError("transformer got cond but was built without cond_dim")

        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # Recompute the block's activations in the backward pass instead of storing them.
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
        out = self.final(h, c)
        grid_sizes = {f"g{i}": n for i, n in enumerate(grid)}
        return rearrange(out, self._unpatchify, **grid_sizes, **patch_sizes)

    def _grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """The patch grid of ``x``, after checking its rank, channels and divisibility by the patch size."""
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"transformer (dims={self.dims}) expects input (B, {self.in_channels}, "
                f"{', '.join(['…'] * self.dims)}), got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        bad = [(axis, n, p) for axis, (n, p) in enumerate(zip(spatial, self.patch_size)) if n % p]
        if bad:
            detail = "; ".join(
                f"axis {axis}: {n} (nearest multiples of {p}: {n // p * p or p}, {(n // p + 1) * p})" for axis, n, p in bad
            )
            raise ValueError(
                f"transformer: spatial size {spatial} is not divisible by patch_size {self.patch_size}: {detail}"
            )
        return tuple(n // p for n, p in zip(spatial, self.patch_size))


@hookimpl
def diffkit_register_backbones(register) -> None:
    register("transformer", DiT, "DiT (adaLN-Zero) over 1-, 2- or 3-D patches; any size divisible by patch_size")
