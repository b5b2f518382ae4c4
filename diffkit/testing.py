"""Tools for testing diffusion code and backbones: the exact denoiser for Gaussian data, and more.

For data x0 ~ N(μ, s²) (each element independent) and x_t = a·x0 + σ·ε with a² = ᾱ_t, σ² = 1 - ᾱ_t,
the posterior of ε given x_t is Gaussian with

    E[ε | x_t]   = σ·(x_t - a·μ) / (ᾱ_t·s² + σ²)
    Var[ε | x_t] = ᾱ_t·s² / (ᾱ_t·s² + σ²)

so the best possible network is known in closed form, and so is the lowest reachable loss. A sampler
driven by it has no error but its own discretisation: an exact test of the engine and of samplers.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import objectives


class GaussianOracle(nn.Module):
    """The exact predictor (for ``objective``) of a diffusion trained on N(mean, std²) data."""

    def __init__(self, alphas_cumprod: torch.Tensor, mean: float = 0.0, std: float = 1.0, objective: str = "eps") -> None:
        super().__init__()
        objectives.check_objective(objective)
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        self.mean = float(mean)
        self.std = float(std)
        self.objective = objective

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t].reshape(-1, *((1,) * (x_t.ndim - 1)))
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        x = x_t.double()
        eps = sigma * (x - a * self.mean) / (abar * self.std**2 + sigma**2)
        x0 = (x - sigma * eps) / a
        return objectives.training_target(self.objective, x0, eps, a, sigma).to(x_t.dtype)


def gaussian_min_loss(alphas_cumprod: torch.Tensor, std: float = 1.0, objective: str = "eps") -> float:
    """The lowest reachable training loss (uniform t) for N(·, std²) data: the mean posterior variance."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    var_eps = abar * std**2 / (abar * std**2 + 1 - abar)
    if objective == "eps":
        per_t = var_eps
    elif objective == "x0":
        per_t = var_eps * (1 - abar) / abar  # x0 = (x_t - σ·ε)/a
    elif objective == "v":
        per_t = var_eps / abar  # v = (ε - σ·x_t)/a
    else:
        objectives.check_objective(objective)
        raise AssertionError
    return float(per_t.mean())
