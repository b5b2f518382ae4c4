"""The variational bound in bits/dim, checked against closed forms with the exact Gaussian denoiser."""

import math

import numpy as np
import pytest
import torch

from diffkit import GaussianDiffusion
from diffkit.likelihood import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    nll,
    prior_kl,
    variational_bound,
)
from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule
from diffkit.testing import GaussianOracle

MEAN, STD = 0.1, 0.25
SHAPE = (4, 8, 8)  # 256 values per example
LN2 = math.log(2.0)


def eight_bit(x):
    """Round to the 256 levels of 8-bit data scaled to [-1, 1]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def gaussian_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return eight_bit(torch.randn(n, *SHAPE, generator=g, dtype=torch.float64) * STD + MEAN)


def oracle_diffusion(T=1000, variance="beta", mean=MEAN, std=STD, schedule=linear_beta_schedule):
    betas = schedule(T)
    return GaussianDiffusion(GaussianOracle(torch.cumprod(1 - betas, 0), mean, std), SHAPE, betas, variance=variance,
                             threshold="none")


def level_probabilities(mean, std):
    """P of each of the 256 levels under N(mean, std²) integrated over its bin (end bins to ±∞)."""
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    upper = torch.where(levels > 0.999, torch.tensor(math.inf, dtype=torch.float64), levels + 1 / 255)
    lower = torch.where(levels < -0.999, torch.tensor(-math.inf, dtype=torch.float64), levels - 1 / 255)
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    return levels, normal.cdf(upper) - normal.cdf(lower)


# --- the pieces ----------------------------------------------------------------------------------


def test_gaussian_kl_matches_torch():
    p = torch.distributions.Normal(torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0]))
    q = torch.distributions.Normal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.7]))
    expected = torch.distributions.kl_divergence(p, q)
    torch.testing.assert_close(gaussian_kl(p.mean, p.variance, q.mean, q.variance), expected)


@pytest.mark.parametrize("mean, std", [(0.3, 0.004), (0.3, 0.5), (-0.9, 3.0), (1.5, 0.2), (0.0, 1e-3)])
def test_discretized_decoder_is_a_distribution_over_the_256_levels(mean, std):
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, std))
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    _, p = level_probabilities(mean, std)
    mass = p > 1e-12  # where the reference's cdf difference is still accurate
    torch.testing.assert_close(log_p[mass], p[mass].log(), rtol=1e-5, atol=1e-9)


def test_discretized_decoder_far_tails_stay_finite():
    x = torch.tensor([0.0, 0.5], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, torch.tensor([-0.9, 0.9], dtype=torch.float64), torch.tensor(0.01))
    assert bool(torch.isfinite(log_p).all()) and bool((log_p < -500).all())


def test_the_prior_term_is_about_1e_5_bits_per_dim_for_the_linear_schedule():
    abar = torch.cumprod(1 - linear_beta_schedule(1000), 0)
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # every level once: E[x²] ≈ 1/3
    bits = float(prior_kl(levels, abar).mean()) / LN2
    a2 = float(abar[-1])
    expected = 0.5 * (a2 * float((levels**2).mean()) - a2 - math.log(1 - a2)) / LN2
    assert bits == pytest.approx(expected, rel=1e-9)
    assert 0.8e-5 < bits < 1.2e-5


# --- the whole bound against closed forms --------------------------------------------------------


def expected_diffusion_bits(x0, diffusion):
    """Σ_i E_ε KL(q(x_{i-1}|x_i,x0) ‖ p(x_{i-1}|x_i)) per example, in bits/dim, for the exact x̂0.

    With x̂0 = MEAN + k·(x_i - a·MEAN), k = a·STD²/(ᾱ·STD² + 1 - ᾱ), the two means differ by
    c0·(x0 - x̂0), and E_ε (x0 - x̂0)² = (1 - k·a)²·(x0 - MEAN)² + k²·(1 - ᾱ).
    """
    abar, abar_prev, betas = diffusion.alphas_cumprod[1:], diffusion.alphas_cumprod_prev[1:], diffusion.betas[1:]
    var_q = betas * (1 - abar_prev) / (1 - abar)
    var_p = betas if diffusion.variance == "beta" else var_q
    c0 = abar_prev.sqrt() * betas / (1 - abar)
    a = abar.sqrt()
    k = a * STD**2 / (abar * STD**2 + 1 - abar)
    dev = (x0.flatten(1) - MEAN)[:, :, None]  # (B, D, 1) against (T-1,)
    sq_err = (1 - k * a) ** 2 * dev**2 + k**2 * (1 - abar)
    kl = 0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1) + c0**2 * sq_err / (2 * var_p)
    return kl.sum(dim=(1, 2)) / (x0[0].numel() * LN2)


def expected_decoder_bits(x0, diffusion):
    """E_ε -log p(x0 | x at index 0) per example, in bits/dim, by Gauss-Hermite quadrature over ε."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    nodes = torch.tensor(nodes, dtype=torch.float64)
    weights = torch.tensor(weights, dtype=torch.float64) / math.sqrt(2 * math.pi)
    a2 = float(diffusion.alphas_cumprod[0])
    a, s = math.sqrt(a2), math.sqrt(1 - a2)
    k = a * STD**2 / (a2 * STD**2 + 1 - a2)
    x = x0.flatten(1)[:, :, None]
    x0_hat = MEAN + k * (a * x + s * nodes - a * MEAN)
    std = float(diffusion.posterior_variance[1]) ** 0.5
    log_p = discretized_gaussian_log_likelihood(x.expand_as(x0_hat), x0_hat, torch.tensor(std, dtype=torch.float64))
    return -(log_p * weights).sum(dim=2).sum(dim=1) / (x0[0].numel() * LN2)


@pytest.mark.parametrize(
    "T, variance, schedule", [(1000, "beta", linear_beta_schedule), (100, "posterior", cosine_beta_schedule)]
)
def test_the_bound_matches_its_closed_form_with_the_exact_denoiser(T, variance, schedule):
    d = oracle_diffusion(T, variance, schedule=schedule)
    x = gaussian_data(64)
    vb = variational_bound(d, x.float(), generator=torch.Generator().manual_seed(1), batch_size=100)
    assert vb.total.shape == (64,)
    # One draw of ε per term and value: Monte-Carlo error well under 1% over 64 × 256 values.
    assert float(vb.diffusion.mean()) == pytest.approx(float(expected_diffusion_bits(x, d).mean()), rel=0.01)
    assert float(vb.decoder.mean()) == pytest.approx(float(expected_decoder_bits(x, d).mean()), rel=0.01)
    expected_prior = prior_kl(x, d.alphas_cumprod).flatten(1).mean(1) / LN2
    torch.testing.assert_close(vb.prior, expected_prior)
    torch.testing.assert_close(vb.total, vb.prior + vb.diffusion + vb.decoder)


def test_the_bound_is_sensible_for_the_exact_denoiser():
    """An upper bound on the model's NLL, which itself cannot beat the data's own cross-entropy."""
    x = gaussian_data(64)
    _, p = level_probabilities(MEAN, STD)
    cross_entropy = float(-p[((x + 1) * 127.5).round().long()].log2().mean())  # ≈ 7.05 bits
    bits = nll(oracle_diffusion(), x.float(), generator=torch.Generator().manual_seed(2))
    assert bool(torch.isfinite(bits).all())
    assert cross_entropy < float(bits.mean()) < cross_entropy + 0.3
    # A denoiser for the wrong data does measurably worse.
    wrong = nll(oracle_diffusion(std=STD * 1.4), x.float(), generator=torch.Generator().manual_seed(2))
    assert float(wrong.mean()) > float(bits.mean()) + 0.05


def test_a_subset_of_timesteps_estimates_the_same_bound():
    d = oracle_diffusion()
    x = gaussian_data(32)
    full = float(variational_bound(d, x.float(), generator=torch.Generator().manual_seed(3)).diffusion.mean())
    some = [
        float(variational_bound(d, x.float(), steps=50, generator=torch.Generator().manual_seed(s)).diffusion.mean())
        for s in range(3)
    ]
    assert float(np.mean(some)) == pytest.approx(full, rel=0.02)


def test_the_engine_method_delegates():
    d = oracle_diffusion(T=100)
    x = gaussian_data(8).float()
    out = d.nll(x, steps=20, generator=torch.Generator().manual_seed(4))
    assert out.shape == (8,)
    torch.testing.assert_close(out, nll(d, x, steps=20, generator=torch.Generator().manual_seed(4)))


def test_likelihood_errors():
    d = oracle_diffusion(T=100)
    with pytest.raises(ValueError, match=r"8-bit data scaled to \[-1, 1\]"):
        d.nll(torch.full((2, *SHAPE), 1.5))
    with pytest.raises(ValueError, match=r"example shape \(3,\), this GaussianDiffusion expects \(4, 8, 8\)"):
        d.nll(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        d.nll(torch.zeros(2, *SHAPE), steps=0)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        d.nll(torch.zeros(2, *SHAPE), batch_size=0)
