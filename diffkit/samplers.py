"""Samplers: small pure functions with one shared signature.

Every sampler is called as::

    sampler(denoise, x, alphas_cumprod, timesteps, *, generator=None, progress=False, **options)

- ``denoise(x_t, t) -> (eps, x0)``: the network's prediction at ``x_t`` for the batch of integer
  timestep indices ``t`` (shape ``(B,)``), already converted from the objective, guided and clipped.
  A sampler calls it exactly once per step.
- ``x``: the starting noise x_T.
- ``alphas_cumprod``: ᾱ of the training schedule, float64, length T.
- ``timesteps``: the training-schedule indices to visit, strictly decreasing.

Between two visited steps t > t' the sampler uses ᾱ_t and ᾱ_t' directly, so skipping steps needs no
second schedule.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence

import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
Spacing = Literal["leading", "trailing", "linspace"]


def timestep_schedule(T: int, steps: Optional[int] = None, spacing: Spacing = "trailing") -> list[int]:
    """Decreasing training-schedule indices for a sampler of ``steps`` steps (all T when None).

    Spacings follow Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    table 2: ``trailing`` always starts at T-1, where the noise the sampler starts from lives.
    """
    if steps is None:
        steps = T
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and the schedule's T={T}, got {steps}")
    if spacing == "linspace":
        ts = [round(x) for x in torch.linspace(0, T - 1, steps, dtype=torch.float64).tolist()]
    elif spacing == "leading":
        stride = T // steps
        ts = [i * stride for i in range(steps)]
    elif spacing == "trailing":
        stride = T / steps
        ts = [round(T - i * stride) - 1 for i in range(steps)][::-1]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose 'leading', 'trailing' or 'linspace'")
    return sorted(set(ts), reverse=True)


def _noise_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _batch_t(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def sample_ddpm(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    variance: Literal["beta", "posterior"] = "beta",
) -> torch.Tensor:
    """Ancestral sampling of Ho et al. 2020, eq. 11 via the posterior mean of eq. 7; σ² = β (as the seed) or β̃."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"unknown DDPM variance {variance!r}; choose 'beta' (σ²=β) or 'posterior' (σ²=β̃)")
    abar = alphas_cumprod.double().cpu().tolist()
    steps = list(timesteps)
    for i, t in enumerate(tqdm(steps, desc="sampling (ddpm)", disable=not progress, leave=False)):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        a_t = abar[t]
        a_prev = abar[t_prev] if t_prev >= 0 else 1.0
        beta = 1.0 - a_t / a_prev
        _, x0 = denoise(x, _batch_t(t, x))
        # Posterior mean μ̃(x_t, x0) of q(x_{t'} | x_t, x0).
        c_x0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
        x = c_x0 * x0 + c_xt * x
        if t_prev >= 0:
            var = beta if variance == "beta" else beta * (1.0 - a_prev) / (1.0 - a_t)
            x = x + math.sqrt(var) * _noise_like(x, generator)
    return x


def sample_ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM of Song et al. 2021, eq. 12; η=0 is deterministic, η=1 matches DDPM's σ."""
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    abar = alphas_cumprod.double().cpu().tolist()
    steps = list(timesteps)
    for i, t in enumerate(tqdm(steps, desc="sampling (ddim)", disable=not progress, leave=False)):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        a_t = abar[t]
        a_prev = abar[t_prev] if t_prev >= 0 else 1.0
        eps, x0 = denoise(x, _batch_t(t, x))
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * _noise_like(x, generator)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
}
