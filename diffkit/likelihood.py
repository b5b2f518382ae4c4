"""Likelihood: the variational bound of Ho et al. 2020 (eq. 5, §3.3) in bits per dimension.

With indices 0 … T-1 of the training schedule (index i is the paper's t = i + 1), for one example x0:

    L = L_prior + Σ_{i=1}^{T-1} L_i + L_decoder
    L_prior   = KL(q(x_{T-1} | x0) ‖ N(0, I))                         (analytic, no network call)
    L_i       = E_q KL(q(x_{i-1} | x_i, x0) ‖ p_θ(x_{i-1} | x_i))    (one network call per i)
    L_decoder = -E_q log p_θ(x0 | x_0-th step)                        (discretised Gaussian, eq. 13)

p_θ(x_{i-1} | x_i) is the DDPM sampler's step: the posterior mean at x̂0 (thresholded as the engine
samples) with σ² = β_i or β̃_i (the engine's ``variance``). The decoder is centred on x̂0 with σ² = β̃
of index 1, as Ho et al.'s released code (β̃ of index 0 is zero). Data are 8-bit values scaled to
[-1, 1]: each value owns a bin of width 2/255, the two end bins reach to ±∞.

Each expectation is estimated with one draw of x_i per example; ``steps`` draws a stratified subset
of the L_i (an unbiased estimate of their sum) for a quicker evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .diffusion import GaussianDiffusion

BIN_HALF_WIDTH = 1.0 / 255.0  # 8-bit data in [-1, 1]: 256 values, 2/255 apart


@dataclass
class VariationalBound:
    """The terms of the bound, in bits per dimension, each of shape ``(B,)``."""

    prior: torch.Tensor  # KL(q(x_{T-1} | x0) ‖ N(0, I))
    diffusion: torch.Tensor  # Σ_{i ≥ 1} L_i
    decoder: torch.Tensor  # -log p(x0 | x at index 0)

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.diffusion + self.decoder


def gaussian_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) per element, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _log_ndtr_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) - Φ(a)) for a < b (either may be infinite), accurate in both tails."""
    # Reflect bins of the upper half into the lower tail, where log Φ keeps its precision.
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log P(x) per element, in nats, of N(mean, std²) integrated over x's 8-bit bin (Ho et al. 2020, eq. 13)."""
    upper = torch.where(x > 1.0 - 1e-3, torch.full_like(x, math.inf), (x + BIN_HALF_WIDTH - mean) / std)
    lower = torch.where(x < -1.0 + 1e-3, torch.full_like(x, -math.inf), (x - BIN_HALF_WIDTH - mean) / std)
    return _log_ndtr_difference(lower, upper)


def prior_kl(x0: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """KL(q(x_{T-1} | x0) ‖ N(0, I)) per element, in nats."""
    abar = alphas_cumprod[-1].to(x0.device, torch.float64)
    x0 = x0.double()
    return gaussian_kl(abar.sqrt() * x0, (1.0 - abar).expand_as(x0), torch.zeros_like(x0), torch.ones_like(x0))


def _strata(T: int, steps: Optional[int], generator: Optional[torch.Generator]) -> tuple[list[int], list[float]]:
    """Indices i ∈ 1 … T-1 of the L_i to evaluate and the weight of each (stratified sampling)."""
    if T < 2:
        return [], []
    if steps is None or steps >= T - 1:
        return list(range(1, T)), [1.0] * (T - 1)
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (or None for all {T - 1} terms), got {steps}")
    # Geometric strata: the L_i fall off roughly like 1/i (most of the bound sits at low noise), so
    # strata even in log i carry similar shares of it; the first ones are single, exact terms.
    edges = torch.logspace(0, math.log10(T), steps + 1, dtype=torch.float64).round().long().tolist()
    edges[0], edges[-1] = 1, T
    for k in range(1, steps):
        edges[k] = min(max(edges[k], edges[k - 1] + 1), T - (steps - k))
    device = generator.device if generator is not None else "cpu"
    uniform = torch.rand(steps, generator=generator, dtype=torch.float64, device=device).tolist()
    indices = [lo + min(int(u * (hi - lo)), hi - lo - 1) for lo, hi, u in zip(edges, edges[1:], uniform)]
    return indices, [float(hi - lo) for lo, hi in zip(edges, edges[1:])]


@torch.no_grad()
def variational_bound(
    diffusion: "GaussianDiffusion",
    x: torch.Tensor,
    *,
    y: Optional[torch.Tensor] = None,
    steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> VariationalBound:
    """The variational bound's terms for a batch ``x`` of 8-bit data in [-1, 1], per example, in bits/dim.

    ``steps``: how many of the T-1 terms L_i to evaluate, stratified over i with one random i per
    stratum and weighted by its size (unbiased); None evaluates all of them. ``batch_size``: rows per
    network call, each row one (example, i) pair; default: one call per i for the whole batch.
    ``generator`` draws the noise (and the strata's i). One network call for the decoder as well.
    """
    if tuple(x.shape[1:]) != diffusion.input_shape:
        raise ValueError(
            f"batch has example shape {tuple(x.shape[1:])}, this GaussianDiffusion expects {diffusion.input_shape}"
        )
    if y is not None and len(y) != len(x):
        raise ValueError(f"got {len(y)} labels for a batch of {len(x)}")
    if not bool(((x >= -1.0 - 1e-6) & (x <= 1.0 + 1e-6)).all()):
        raise ValueError("the likelihood is for 8-bit data scaled to [-1, 1]; x has values outside that range")
    B, T = x.shape[0], diffusion.num_timesteps
    batch_size = B if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = x.device
    abar = diffusion.alphas_cumprod.to(device)
    abar_prev = diffusion.alphas_cumprod_prev.to(device)
    betas = diffusion.betas.to(device)
    posterior_var = diffusion.posterior_variance.to(device)
    model_var = betas if diffusion.variance == "beta" else posterior_var
    decoder_var = posterior_var[1] if T > 1 else betas[0]
    x64 = x.double()
    nats_to_bits_per_dim = 1.0 / (math.log(2.0) * x[0].numel())
    # The network sees x_t in its own dtype (as in sampling); the bound itself is computed in float64.
    param = next(diffusion.model.parameters(), None)
    net_dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
    noise_device = generator.device if generator is not None else device

    def noisy(rows: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t ~ q(x_t | x0) for the rows (float64), and the network's x̂0 there (float64)."""
        x0 = x64[rows]
        noise = torch.randn(x0.shape, generator=generator, device=noise_device, dtype=torch.float64).to(device)
        shape = (-1,) + (1,) * (x.ndim - 1)
        x_t = abar[t].sqrt().view(shape) * x0 + (1.0 - abar[t]).sqrt().view(shape) * noise
        _, x0_hat = diffusion.predict(x_t.to(net_dtype), t, None if y is None else y[rows])
        return x_t, x0_hat.double()

    # The L_i: (example, i) rows in chunks of batch_size.
    indices, weights = _strata(T, steps, generator)
    diffusion_nats = torch.zeros(B, dtype=torch.float64, device=device)
    if indices:
        t_all = torch.tensor(indices, device=device).repeat_interleave(B)
        w_all = torch.tensor(weights, dtype=torch.float64, device=device).repeat_interleave(B)
        rows_all = torch.arange(B, device=device).repeat(len(indices))
        chunks = range(0, len(t_all), batch_size)
        for start in tqdm(chunks, desc="likelihood", disable=not progress, leave=False):
            rows, t = rows_all[start : start + batch_size], t_all[start : start + batch_size]
            x_t, x0_hat = noisy(rows, t)
            shape = (-1,) + (1,) * (x.ndim - 1)
            c_x0 = (abar_prev[t].sqrt() * betas[t] / (1.0 - abar[t])).view(shape)
            c_xt = ((1.0 - betas[t]).sqrt() * (1.0 - abar_prev[t]) / (1.0 - abar[t])).view(shape)
            kl = gaussian_kl(
                c_x0 * x64[rows] + c_xt * x_t,
                posterior_var[t].view(shape).expand_as(x_t),
                c_x0 * x0_hat + c_xt * x_t,
                model_var[t].view(shape).expand_as(x_t),
            )
            diffusion_nats.index_add_(0, rows, w_all[start : start + batch_size] * kl.flatten(1).sum(1))

    # The decoder, at index 0, where the posterior mean is x̂0 itself.
    decoder_nats = torch.zeros(B, dtype=torch.float64, device=device)
    for start in range(0, B, batch_size):
        rows = torch.arange(start, min(start + batch_size, B), device=device)
        _, x0_hat = noisy(rows, torch.zeros_like(rows))
        log_p = discretized_gaussian_log_likelihood(x64[rows], x0_hat, decoder_var.sqrt())
        decoder_nats[rows] = -log_p.flatten(1).sum(1)

    prior_nats = prior_kl(x64, abar).flatten(1).sum(1)
    return VariationalBound(
        prior=prior_nats * nats_to_bits_per_dim,
        diffusion=diffusion_nats * nats_to_bits_per_dim,
        decoder=decoder_nats * nats_to_bits_per_dim,
    )


def nll(diffusion: "GaussianDiffusion", x: torch.Tensor, **options) -> torch.Tensor:
    """Bits per dimension of each example (shape ``(B,)``): the whole variational bound, an upper
    bound on -log₂ p(x) / dim. Take ``.mean()`` for a data set's figure. See :func:`variational_bound`."""
    return variational_bound(diffusion, x, **options).total
