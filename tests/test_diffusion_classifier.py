"""The diffusion classifier against class-conditional Gaussian data, whose exact denoiser is known.

Class c has independent elements N(μ_c, s²). With x_t = a·x + σ·ε (a² = ᾱ_t, σ² = 1 - ᾱ_t) and the exact
ε̂_c = σ(x_t - a·μ_c)/D, D = ᾱ s² + σ², the error ε - ε̂_c = ε(1 - σ²/D) - σa(x - μ_c)/D, so for a fixed x

    E_ε[(ε - ε̂_c)²] = (1 - σ²/D)² + ᾱ σ² (x - μ_c)² / D²    per element,

which the measured errors must match.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from diffkit import GaussianDiffusion
from diffkit.diffusion_classifier import class_errors, class_log_posterior, classifier_timesteps
from diffkit.schedules import cosine_beta_schedule

MEANS = torch.tensor([-0.6, 0.0, 0.5])
STD = 0.4


class OneHot(nn.Module):
    """A labels conditioner whose embedding is the one-hot label (the null label: all zeros)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(y, self.classes).double()

    def null(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.classes, dtype=torch.float64)


class ClassOracle(nn.Module):
    """The exact ε-predictor of class-conditional N(μ_c, s²) data with independent elements."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.double())

    def forward(self, x_t, t, cond=None):
        abar = self.alphas_cumprod[t].reshape(-1, *((1,) * (x_t.ndim - 1)))
        mean = (cond @ MEANS.double()).reshape(-1, *((1,) * (x_t.ndim - 1)))
        sigma = (1 - abar).sqrt()
        return (sigma * (x_t.double() - abar.sqrt() * mean) / (abar * STD**2 + sigma**2)).to(x_t.dtype)


def oracle_diffusion() -> GaussianDiffusion:
    betas = cosine_beta_schedule(1000)
    diffusion = GaussianDiffusion(ClassOracle(torch.ones(1)), (1, 4, 4), betas, conditioner=OneHot(len(MEANS)),
                                  threshold="none")
    diffusion.model.alphas_cumprod = diffusion.alphas_cumprod.double()
    return diffusion.double()


def expected_errors(diffusion, x: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    """The closed form above, averaged over the known elements and the classifier's timesteps: (B, classes)."""
    out = torch.zeros(x.shape[0], len(MEANS), dtype=torch.float64)
    for t in classifier_timesteps(diffusion.num_timesteps, levels):
        abar = float(diffusion.alphas_cumprod[t])
        sigma2, d = 1 - abar, abar * STD**2 + (1 - abar)
        for c, mu in enumerate(MEANS.tolist()):
            per_element = (1 - sigma2 / d) ** 2 + abar * sigma2 * (x - mu) ** 2 / d**2
            out[:, c] += (per_element * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
    return out / levels


def test_timesteps_are_stratum_midpoints():
    assert classifier_timesteps(1000, 4) == [125, 375, 625, 875]
    with pytest.raises(ValueError, match="levels must be between 1 and the 1000"):
        classifier_timesteps(1000, 0)


def test_errors_match_the_closed_form_on_the_known_part_only():
    diffusion = oracle_diffusion()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 2])
    x = (MEANS[labels].reshape(-1, 1, 1, 1) + STD * torch.randn(4, 1, 4, 4, generator=g)).double()
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True  # the top half is known
    levels, draws, copies = 5, 100, 40  # each example is repeated: copies × draws = 4000 draws per error
    many = x.repeat(copies, 1, 1, 1)
    measured = class_errors(diffusion, many, [0, 1, 2], mask=mask, levels=levels, draws=draws,
                            generator=torch.Generator().manual_seed(1))
    expected = expected_errors(diffusion, x, mask.expand_as(x).double(), levels)
    # Each error is a mean of levels × 4000 × 8 squared terms of variance ≈ 2·E²: 3 standard errors.
    se = (2 * expected**2 / (levels * draws * copies * 8)).sqrt()
    mean = measured.view(copies, len(x), 3).mean(0)
    assert float(((mean - expected).abs() / se).max()) < 3.0
    # The unknown part is never read (the oracle's elements are independent): garbage there changes nothing.
    garbage = torch.where(mask, many, torch.full_like(many, 1e3))
    again = class_errors(diffusion, garbage, [0, 1, 2], mask=mask, levels=levels, draws=draws,
                         generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, measured, rtol=0, atol=1e-12)


def test_least_error_names_the_class_and_the_posterior_is_normalised():
    diffusion = oracle_diffusion()
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(3).repeat(20)
    x = (MEANS[labels].reshape(-1, 1, 1, 1) + STD * torch.randn(len(labels), 1, 4, 4, generator=g)).double()
    errors = class_errors(diffusion, x, [0, 1, 2], levels=10, generator=torch.Generator().manual_seed(3))
    # With 16 elements per example the classes (means 0.5-0.6 apart, s = 0.4) are nearly always told apart:
    # the sample mean's std is 0.1, so each boundary, ≥ 0.25 away, is crossed with probability ≤ Φ(-2.5) ≈ 0.6 %.
    assert float((errors.argmin(1) == labels).double().mean()) >= 0.95
    log_p = class_log_posterior(errors, temperature=0.01)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(len(labels), dtype=torch.float64))
    assert math.isclose(float(log_p[0].exp().argmax()), float(errors[0].argmin()))


def test_refuses_an_unconditional_model_and_an_empty_mask():
    diffusion = oracle_diffusion()
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="mask marks nothing as known"):
        class_errors(diffusion, x, [0, 1], mask=torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    diffusion.conditioner = None
    with pytest.raises(ValueError, match="needs a conditional model"):
        class_errors(diffusion, x, [0, 1])
