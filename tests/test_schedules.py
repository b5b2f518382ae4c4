import math

import pytest
import torch

from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule, make_beta_schedule


def test_linear_alpha_bar_T_matches_the_ddpm_value():
    betas = linear_beta_schedule(1000)
    assert betas.dtype == torch.float64
    assert torch.cumprod(1 - betas, 0)[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_linear_schedule_rescales_with_T():
    betas = linear_beta_schedule(250)
    assert betas[0].item() == pytest.approx(4e-4)
    assert betas[-1].item() == pytest.approx(0.08)
    assert len(betas) == 250


def test_cosine_schedule_follows_its_closed_form():
    T, s = 1000, 0.008
    abar = torch.cumprod(1 - cosine_beta_schedule(T), 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_beta_schedule(T).max().item() == pytest.approx(0.999)
    assert cosine_beta_schedule(T).dtype == torch.float64


def test_schedule_errors_name_the_choice():
    with pytest.raises(ValueError, match="'linear'"):
        make_beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="positive"):
        linear_beta_schedule(0)
    with pytest.raises(ValueError, match="T=10 would give"):
        linear_beta_schedule(10)
