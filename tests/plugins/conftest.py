"""Shared by the backbone tests: tiny labelled data of any rank, and a short conditional training run."""

from __future__ import annotations

import math

import pytest
import torch

import diffkit
from diffkit.schedules import linear_beta_schedule


def _balls(spatial: tuple[int, ...], labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, *spatial) in [-1, 1]: a centred ball (interval, disc, sphere) whose radius grows with the label."""
    coords = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in spatial), indexing="ij")
    radius = torch.stack(coords).square().sum(0).sqrt()
    masks = [(radius < 0.35 + 0.3 * float(y)).float() for y in labels]
    return (2 * torch.stack(masks) - 1).unsqueeze(1)


def _tones(length: int, labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, length) waveforms: a sine of 2 or 5 periods (by label), amplitude 0.8."""
    n = torch.arange(length) / length
    return torch.stack([0.8 * torch.sin(2 * math.pi * (2 + 3 * float(y)) * n) for y in labels]).unsqueeze(1)


@pytest.fixture
def balls():
    return _balls


@pytest.fixture
def tones():
    return _tones


@pytest.fixture
def train_conditional():
    """Train ``backbone`` (built with the labels' cond_dim) on a fixed batch; return (loss before, after, diffusion).

    Losses are measured in eval mode on the same 4 draws of (t, noise) per example before and after
    training, so the comparison does not depend on which timesteps a training step happened to draw.
    """

    def run(name: str, data: torch.Tensor, labels: torch.Tensor, *, steps: int = 40, lr: float = 2e-3,
            num_classes: int = 2, dim: int = 16, **options):
        torch.manual_seed(0)
        model = diffkit.create_backbone(name, cond_dim=dim, **options)
        conditioner = diffkit.create_conditioner("labels", num_classes=num_classes, dim=dim, dropout=0.2)
        diffusion = diffkit.GaussianDiffusion(model, data.shape[1:], linear_beta_schedule(1000), conditioner=conditioner)
        optimizer = torch.optim.Adam(diffusion.parameters(), lr=lr)
        x_eval, y_eval = data.repeat(4, *(1,) * (data.ndim - 1)), labels.repeat(4)

        def eval_loss() -> float:
            diffusion.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)
                loss = float(diffusion(x_eval, y_eval))
            diffusion.train()
            return loss

        before = eval_loss()
        for _ in range(steps):
            loss = diffusion(data, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return before, eval_loss(), diffusion

    return run


@pytest.fixture
def trains_and_samples(train_conditional):
    """Assert that a backbone's eval loss falls below 0.7× in a short run, then sample with guidance."""

    def check(name: str, data: torch.Tensor, labels: torch.Tensor, **options) -> None:
        before, after, diffusion = train_conditional(name, data, labels, **options)
        assert after < 0.7 * before, f"{name}: eval loss {before:.3f} → {after:.3f}, wanted < 0.7×"
        diffusion.eval()
        samples = diffusion.sample(3, y=torch.tensor([0, 1, 1]), guidance_scale=3.0, sampler="ddim", steps=5,
                                   generator=torch.Generator().manual_seed(0))
        assert samples.shape == (3, *data.shape[1:])
        assert bool(torch.isfinite(samples).all())

    return check
