"""Objectives: conversions between ε / x0 / v, x0 thresholding and Min-SNR-γ loss weights."""

import pytest
import torch

from diffkit import GaussianDiffusion, objectives
from diffkit.objectives import (
    dynamic_threshold,
    eps_and_x0,
    min_snr_weight,
    snr,
    threshold_x0,
    training_target,
)
from diffkit.schedules import linear_beta_schedule
from diffkit.testing import GaussianOracle

MEAN, STD = 0.3, 0.5
SHAPES = [(5,), (2, 5), (2, 3, 4), (1, 2, 3, 4)]  # ranks 2 to 5 once batched


def oracle_diffusion(shape, objective="eps", **kwargs):
    betas = linear_beta_schedule(1000)
    abar = torch.cumprod(1 - betas, 0)
    kwargs.setdefault("threshold", "none")  # the oracle is exact: sample it unclipped
    return GaussianDiffusion(GaussianOracle(abar, MEAN, STD, objective), shape, betas, objective=objective, **kwargs)


def coefficients(t, ndim):
    abar = torch.cumprod(1 - linear_beta_schedule(1000), 0)[t].reshape(-1, *([1] * (ndim - 1)))
    return abar.sqrt(), (1 - abar).sqrt()


# --- conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_target_converts_back_to_eps_and_x0(shape, objective):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, *shape, generator=g, dtype=torch.float64)
    eps = torch.randn(4, *shape, generator=g, dtype=torch.float64)
    a, s = coefficients(torch.tensor([0, 10, 500, 999]), len(shape) + 1)
    x_t = a * x0 + s * eps
    eps_hat, x0_hat = eps_and_x0(objective, training_target(objective, x0, eps, a, s), x_t, a, s)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    # x0 from ε divides by a = sqrt(ᾱ) ≈ 0.006 at t = 999: looser there.
    torch.testing.assert_close(x0_hat, x0, rtol=1e-7, atol=1e-7)


def test_v_is_a_eps_minus_s_x0():
    x0, eps = torch.tensor([1.0]), torch.tensor([2.0])
    assert float(training_target("v", x0, eps, 0.6, 0.8)) == pytest.approx(0.6 * 2 - 0.8 * 1)


@pytest.mark.parametrize("objective", ["x0", "v"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_objective_gives_the_engine_the_same_prediction(shape, objective):
    x_t = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 10, 500, 999])
    eps_ref, x0_ref = oracle_diffusion(shape, "eps").predict(x_t, t)
    eps, x0 = oracle_diffusion(shape, objective).predict(x_t, t)
    torch.testing.assert_close(eps, eps_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x0, x0_ref, rtol=1e-3, atol=1e-3)


def test_unknown_objective():
    with pytest.raises(ValueError, match=r"unknown objective 'score'; choose one of \['eps', 'x0', 'v'\]"):
        oracle_diffusion((3,), objective="score")


# --- thresholding --------------------------------------------------------------------------------


def test_clip_threshold_clamps():
    x0 = torch.tensor([[-3.0, -0.5, 0.0, 0.7, 1.5]])
    torch.testing.assert_close(threshold_x0(x0, "clip"), torch.tensor([[-1.0, -0.5, 0.0, 0.7, 1.0]]))
    assert threshold_x0(x0, "none") is x0


@pytest.mark.parametrize("shape", SHAPES)
def test_dynamic_threshold_rescales_each_example_by_its_percentile(shape):
    g = torch.Generator().manual_seed(2)
    inside = torch.rand(*shape, generator=g) * 1.8 - 0.9  # |x| < 1: s = 1, untouched
    outside = torch.randn(*shape, generator=g) * 3.0
    x0 = torch.stack([inside, outside])
    out = dynamic_threshold(x0, percentile=0.8)
    torch.testing.assert_close(out[0], inside)
    s = float(torch.quantile(outside.abs().flatten(), 0.8))
    assert s > 1
    torch.testing.assert_close(out[1], outside.clamp(-s, s) / s)
    assert float(out.abs().max()) <= 1.0 + 1e-6
    # Percentile 1: s is the largest |x|, so the example is only rescaled.
    torch.testing.assert_close(dynamic_threshold(x0, 1.0)[1], outside / outside.abs().max())


@pytest.mark.parametrize("threshold", ["clip", "dynamic"])
def test_the_engine_thresholds_x0_and_keeps_eps_consistent(threshold):
    d = oracle_diffusion((2, 3, 4), threshold=threshold)
    t = torch.tensor([0, 10, 100])  # little noise: x̂0 ≈ x_t, which reaches well past ±1
    x_t = torch.randn(3, 2, 3, 4, generator=torch.Generator().manual_seed(3)) * 3
    eps, x0 = d.predict(x_t, t)
    assert float(x0.abs().max()) <= 1.0 + 1e-6
    a, s = coefficients(t, 4)
    torch.testing.assert_close(a.float() * x0 + s.float() * eps, x_t, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(x0, oracle_diffusion((2, 3, 4), threshold="none").predict(x_t, t)[1])


def test_clip_x0_still_means_clip_and_clipping_is_the_engines_default():
    assert oracle_diffusion((3,), clip_x0=True, threshold="clip").threshold == "clip"
    assert GaussianDiffusion(torch.nn.Identity(), (3,), linear_beta_schedule(50), clip_x0=True).threshold == "clip"
    assert oracle_diffusion((3,), clip_x0=False).threshold == "none"
    d = oracle_diffusion((3,), threshold="clip")
    assert d.clip_x0
    betas = linear_beta_schedule(50)
    assert GaussianDiffusion(torch.nn.Identity(), (3,), betas).threshold == "clip"


def test_threshold_errors():
    with pytest.raises(ValueError, match=r"unknown x0 threshold 'soft'; choose one of \['none', 'clip', 'dynamic'\]"):
        oracle_diffusion((3,), threshold="soft")
    with pytest.raises(ValueError, match="clip_x0=True contradicts threshold='dynamic'"):
        oracle_diffusion((3,), clip_x0=True, threshold="dynamic")
    with pytest.raises(ValueError, match="clip_x0=True contradicts threshold='none'"):
        oracle_diffusion((3,), clip_x0=True, threshold="none")
    with pytest.raises(ValueError, match=r"threshold_percentile must lie in \(0, 1\], got 99.5"):
        oracle_diffusion((3,), threshold="dynamic", threshold_percentile=99.5)


# --- Min-SNR-γ -----------------------------------------------------------------------------------


def test_snr():
    assert snr(torch.tensor([0.8, 0.5])).tolist() == pytest.approx([4.0, 1.0])


def test_min_snr_weights_by_hand():
    s = torch.tensor([0.5, 5.0, 20.0], dtype=torch.float64)
    # γ = 5: min(SNR, γ) = [0.5, 5, 5].
    assert min_snr_weight("eps", s, 5.0).tolist() == pytest.approx([1.0, 1.0, 0.25])
    assert min_snr_weight("x0", s, 5.0).tolist() == pytest.approx([0.5, 5.0, 5.0])
    assert min_snr_weight("v", s, 5.0).tolist() == pytest.approx([0.5 / 1.5, 5.0 / 6.0, 5.0 / 21.0])
    assert min_snr_weight("eps", s, 1.0).tolist() == pytest.approx([1.0, 0.2, 0.05])


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_min_snr_loss_is_the_weighted_mse_on_the_same_draws(objective):
    d = oracle_diffusion((2, 3), objective, loss_weighting="min-snr", min_snr_gamma=5.0)
    x = torch.randn(64, 2, 3, generator=torch.Generator().manual_seed(4)) * STD + MEAN
    torch.manual_seed(5)
    loss = d(x)
    # Replay the engine's draws (t, then the noise) and weight by hand.
    torch.manual_seed(5)
    t = torch.randint(0, 1000, (64,))
    noise = torch.randn_like(x)
    a, s = coefficients(t, 3)
    x_t = a.float() * x + s.float() * noise
    target = training_target(objective, x, noise, a.float(), s.float())
    abar = a.squeeze() ** 2
    ratio = abar / (1 - abar)
    clipped = ratio.clamp(max=5)
    weight = {"eps": clipped / ratio, "x0": clipped, "v": clipped / (ratio + 1)}[objective]
    per_example = (d.model(x_t, t) - target).square().mean(dim=(1, 2))
    assert float(loss) == pytest.approx(float((weight * per_example).mean()), rel=1e-5)


def test_min_snr_weighs_every_objective_alike():
    """On the same draws the weighted ε, x0 and v losses of the exact predictor coincide: each is
    min(SNR, γ)·‖x̂0 - x0‖². Unweighted, they differ."""
    x = torch.randn(2048, 4, generator=torch.Generator().manual_seed(6)) * STD + MEAN
    losses = {}
    for weighting in ("none", "min-snr"):
        for objective in ("eps", "x0", "v"):
            d = oracle_diffusion((4,), objective, loss_weighting=weighting)
            torch.manual_seed(7)
            losses[weighting, objective] = float(d(x))
    assert losses["min-snr", "x0"] == pytest.approx(losses["min-snr", "eps"], rel=1e-4)
    assert losses["min-snr", "v"] == pytest.approx(losses["min-snr", "eps"], rel=1e-4)
    assert abs(losses["none", "x0"] / losses["none", "eps"] - 1) > 0.1
    assert abs(losses["none", "v"] / losses["none", "eps"] - 1) > 0.1


def test_loss_weighting_errors():
    with pytest.raises(ValueError, match=r"unknown loss_weighting 'p2'; choose one of \['none', 'min-snr'\]"):
        oracle_diffusion((3,), loss_weighting="p2")
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0, got 0"):
        oracle_diffusion((3,), loss_weighting="min-snr", min_snr_gamma=0)
    assert objectives.LOSS_WEIGHTINGS == ("none", "min-snr")
