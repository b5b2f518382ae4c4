import math

import pytest
import torch
import torch.nn as nn

import diffkit
from diffkit import GaussianDiffusion, extract
from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule, make_beta_schedule
from diffkit.testing import GaussianOracle, gaussian_min_loss

SHAPES = [(6,), (2, 5), (2, 3, 4), (1, 2, 3, 4)]  # ranks 2 to 5 once batched
MEAN, STD = 0.4, 0.6


def oracle_diffusion(shape, betas=None, objective="eps", **kwargs):
    betas = linear_beta_schedule(1000) if betas is None else betas
    abar = torch.cumprod(1 - betas, 0)
    kwargs.setdefault("threshold", "none")  # the oracle is exact: sample it unclipped
    return GaussianDiffusion(GaussianOracle(abar, MEAN, STD, objective), shape, betas, objective=objective, **kwargs)


def _log_snr(betas):
    abar = torch.cumprod(1 - betas, 0)
    return abar.log() - (-abar).log1p()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("shift", [0.5, 2.0, 4.0])
def test_a_shifted_schedule_moves_the_log_snr_by_minus_two_log_shift(name, shift):
    base, shifted = make_beta_schedule(name, 1000), make_beta_schedule(name, 1000, shift)
    assert shifted.dtype == torch.float64 and torch.equal(make_beta_schedule(name, 1000, 1.0), base)
    capped = (shifted >= 0.999).nonzero()
    end = int(capped[0]) if len(capped) else 1000  # a β capped at 0.999 bends ᾱ from there on
    assert end > 900
    difference = _log_snr(shifted)[:end] - _log_snr(base)[:end]
    torch.testing.assert_close(difference, torch.full_like(difference, -2 * math.log(shift)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_schedule_shift_is_refused(shift):
    with pytest.raises(ValueError, match="schedule shift must be a positive number"):
        make_beta_schedule("cosine", 10, shift)


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_extract_broadcasts_over_any_rank(rank):
    a = torch.arange(10.0)
    t = torch.tensor([3, 7, 0])
    shape = (3, *([2] * (rank - 1)))
    out = extract(a, t, shape)
    assert out.shape == (3, *([1] * (rank - 1)))
    assert out.flatten().tolist() == [3.0, 7.0, 0.0]
    assert (out * torch.ones(shape)).shape == shape


@pytest.mark.parametrize("t, shown", [([0, -1], "-1…0"), ([999, 1000], "999…1000")])
def test_a_timestep_outside_the_schedule_is_a_one_line_error(t, shown):
    d = oracle_diffusion((6,))
    x = torch.zeros(2, 6)
    for call in (lambda: d.perturb_x(x, torch.tensor(t), x), lambda: d.remove_noise(x, torch.tensor(t)),
                 lambda: d.predict(x, torch.tensor(t))):
        with pytest.raises(ValueError, match=rf"^t must lie in 0…999 \(the schedule's timesteps\), got {shown}$"):
            call()


@pytest.mark.parametrize("shape", SHAPES)
def test_perturb_x_is_the_closed_form(shape):
    d = oracle_diffusion(shape)
    x = torch.randn(4, *shape)
    noise = torch.randn_like(x)
    t = torch.tensor([0, 10, 500, 999])
    abar = torch.cumprod(1 - linear_beta_schedule(1000), 0)[t].float()
    expected = abar.sqrt().view(-1, *[1] * len(shape)) * x + (1 - abar).sqrt().view(-1, *[1] * len(shape)) * noise
    torch.testing.assert_close(d.perturb_x(x, t, noise), expected)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("shape", SHAPES)
def test_exact_predictor_reaches_the_analytic_minimum_loss(shape, objective):
    torch.manual_seed(0)
    d = oracle_diffusion(shape, objective=objective)
    x = torch.randn(200_000, *shape, dtype=torch.float64) * STD + MEAN
    loss = d(x).item()
    expected = gaussian_min_loss(d.alphas_cumprod, STD, objective)
    # With 200 000 draws of t the Monte-Carlo error is about 0.5%.
    assert loss == pytest.approx(expected, rel=0.02)
    # A predictor that is slightly off does measurably worse on the same draws: the test can fail.
    d.model.mean = MEAN + 0.3
    torch.manual_seed(0)
    assert d(x).item() > expected * 1.05


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("shape", SHAPES)
def test_ddpm_sampler_with_exact_predictor_reproduces_the_data(shape, variance):
    d = oracle_diffusion(shape, variance=variance)
    gen = torch.Generator().manual_seed(1)
    x = d.sample(4000 // max(1, torch.Size(shape).numel() // 6), generator=gen)
    assert x.shape[1:] == shape
    assert x.mean().item() == pytest.approx(MEAN, abs=0.02)
    assert x.std().item() == pytest.approx(STD, rel=0.025)


def test_ddpm_sampler_fails_when_the_predictor_is_wrong():
    d = oracle_diffusion((6,))
    d.model.std = STD * 0.8
    x = d.sample(4000, generator=torch.Generator().manual_seed(1))
    assert abs(x.std().item() / STD - 1) > 0.1


def test_remove_noise_agrees_with_the_samplers_posterior_mean():
    """Seed's ε-form μθ = (x - β/√(1-ᾱ)·ε)/√α equals the x0-form posterior mean the sampler uses."""
    d = oracle_diffusion((2, 5))
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    t = torch.tensor([1, 400, 999])
    eps, x0 = d.predict(x, t)
    abar, abar_prev, betas = d.alphas_cumprod[t], d.alphas_cumprod_prev[t], d.betas[t]
    c0 = (abar_prev.sqrt() * betas / (1 - abar)).view(-1, 1, 1)
    ct = ((1 - betas).sqrt() * (1 - abar_prev) / (1 - abar)).view(-1, 1, 1)
    torch.testing.assert_close(d.remove_noise(x, t), c0 * x0 + ct * x, rtol=1e-10, atol=1e-10)


def test_sampling_is_reproducible_with_a_generator():
    d = oracle_diffusion((3,), betas=linear_beta_schedule(50))
    a = d.sample(5, generator=torch.Generator().manual_seed(3))
    b = d.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_schedule_stays_float64_when_the_module_is_cast():
    d = GaussianDiffusion(nn.Conv1d(2, 2, 1), (2, 8), linear_beta_schedule(1000))
    d.to(torch.bfloat16)
    assert d.alphas_cumprod.dtype == torch.float64
    assert d.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)
    assert d.model.weight.dtype == torch.bfloat16


def test_a_backbone_without_parameters_samples_in_the_dtype_the_engine_was_cast_to():
    from diffkit.testing import GaussianOracle

    betas = linear_beta_schedule(100)
    d = GaussianDiffusion(GaussianOracle(GaussianDiffusion(nn.Identity(), (4,), betas).alphas_cumprod), (4,), betas)
    assert d.sample(2, sampler="ddim", steps=3).dtype == torch.get_default_dtype()
    for sampler in ("ddpm", "ddim", "dpm-solver++", "dpm-solver++-sde", "unipc"):
        assert d.double().sample(2, sampler=sampler, steps=3).dtype == torch.float64, sampler
    assert d.to(torch.float32).sample(2, sampler="ddim", steps=3).dtype == torch.float32
    assert "dtype_probe" not in d.state_dict()  # checkpoints hold learned weights only


class Plain(nn.Module):
    """Any module following the backbone protocol works: here a 1x1 conv that ignores t."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1)

    def forward(self, x, t, cond=None):
        return self.conv(x)


def test_any_backbone_protocol_module_trains_and_samples():
    d = GaussianDiffusion(Plain(), (1, 2, 2, 2), cosine_beta_schedule(20))
    loss = d(torch.randn(4, 1, 2, 2, 2))
    loss.backward()
    assert loss.ndim == 0 and d.model.conv.weight.grad is not None
    assert d.sample(3).shape == (3, 1, 2, 2, 2)


def test_clear_errors():
    d = GaussianDiffusion(Plain(), (1, 2, 2, 2), linear_beta_schedule(50))
    with pytest.raises(ValueError, match=r"expects \(1, 2, 2, 2\)"):
        d(torch.randn(4, 1, 2, 2, 3))
    with pytest.raises(ValueError, match="no conditioner"):
        d(torch.randn(4, 1, 2, 2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        d.sample(1, sampler="euler")
    with pytest.raises(ValueError, match="unknown objective"):
        GaussianDiffusion(Plain(), (1, 2, 2, 2), linear_beta_schedule(50), objective="score")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        GaussianDiffusion(Plain(), (1,), torch.tensor([0.1, 1.5]))

    class Wrong(nn.Module):
        def forward(self, x, t, cond=None):
            return x[:, :, :1]

    with pytest.raises(RuntimeError, match="backbone Wrong returned shape"):
        GaussianDiffusion(Wrong(), (1, 4), linear_beta_schedule(50))(torch.randn(2, 1, 4))


class CountingBackbone(nn.Module):
    """Returns cond's first feature everywhere, so guidance arithmetic can be checked exactly."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.batch_sizes = []

    def forward(self, x, t, cond=None):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return torch.zeros_like(x) + cond[:, :1].reshape(-1, *[1] * (x.ndim - 1))


def test_classifier_free_guidance_is_one_batched_call_per_step():
    backbone = CountingBackbone()
    labels = diffkit.create_conditioner("labels", num_classes=3, dim=4)
    d = GaussianDiffusion(backbone, (1, 4), linear_beta_schedule(50), conditioner=labels, threshold="none")
    y = torch.tensor([0, 2])
    d.sample(2, y=y, guidance_scale=3.0)
    assert backbone.calls == 50 and set(backbone.batch_sizes) == {4}

    x = torch.randn(2, 1, 4)
    t = torch.tensor([3, 3])
    eps, _ = d.predict(x, t, y=y, guidance_scale=3.0)
    c = labels(y)[:, 0]
    u = labels.null(2)[:, 0]
    torch.testing.assert_close(eps[:, 0, 0], u + 3.0 * (c - u))


# --- defaults that are right for a trained (imperfect) network -----------------------------------

DATA_MEAN, DATA_STD = 0.2, 0.3  # data inside [-1, 1], as the seed scales it


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", None), ("dpm-solver++", None),
                                            ("dpm-solver++", 20), ("ddpm", 100)])
def test_default_sampling_of_an_imperfect_denoiser_stays_in_the_datas_range(schedule, sampler, steps):
    """The exact Gaussian denoiser with 5% noise on its ε, sampled with the engine's defaults."""
    betas = make_beta_schedule(schedule, 1000)
    oracle = GaussianOracle(torch.cumprod(1 - betas, 0), DATA_MEAN, DATA_STD, eps_noise=0.05, seed=1)
    d = GaussianDiffusion(oracle, (64,), betas)  # every engine default
    x = d.sample(512, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    z = (x - DATA_MEAN).abs().max() / DATA_STD
    assert z <= 6, f"a sample lies {float(z):.0f}σ from the data's mean"
    assert abs(float(x.std()) / DATA_STD - 1) <= 0.03
    assert abs(float(x.mean()) - DATA_MEAN) <= 0.02


def test_without_clipping_the_same_denoiser_leaves_the_data_range_on_the_cosine_schedule():
    """Why clipping is the default: unclipped, the first steps multiply ε's error by 1/sqrt(ᾱ_T-1) ≈ 2e4."""
    betas = make_beta_schedule("cosine", 1000)
    oracle = GaussianOracle(torch.cumprod(1 - betas, 0), DATA_MEAN, DATA_STD, eps_noise=0.05, seed=1)
    d = GaussianDiffusion(oracle, (64,), betas, threshold="none")
    x = d.sample(512, sampler="dpm-solver++", steps=20, generator=torch.Generator().manual_seed(0))
    assert float((x - DATA_MEAN).abs().max()) / DATA_STD > 20


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver++", "dpm-solver++-sde", "unipc"])
def test_with_clipping_no_sample_leaves_the_data_range(sampler):
    """x̂0 rising toward ±1 until the last step: a multistep extrapolation (UniPC's) overshoots the range
    (by 0.0075 here) unless the engine keeps the sample inside it."""
    class Rising(nn.Module):
        def forward(self, x, t, cond=None):  # predicts x0 (objective="x0")
            level = (1.0 - (t.float() / 100.0) ** 0.5).view(-1, 1)
            return level.expand_as(x) * torch.where(torch.arange(x.shape[-1]) % 2 == 0, 1.0, -1.0)

    d = GaussianDiffusion(Rising(), (16,), linear_beta_schedule(100), objective="x0")
    x = d.sample(8, sampler=sampler, steps=20, generator=torch.Generator().manual_seed(0))
    assert float(x.abs().max()) <= 1.0


# --- the Python API from the outside (audit): modes, argument types, bad input ----------------------------


def tiny_conditional(dropout=1.0):
    backbone = diffkit.create_backbone("unet1d", in_channels=1, channels=[8, 16], attention_levels=[], num_res_blocks=1,
                                       cond_dim=8, dropout=0.5)
    conditioner = diffkit.create_conditioner("labels", num_classes=3, dim=8, dropout=dropout)
    return GaussianDiffusion(backbone, (1, 16), linear_beta_schedule(50), conditioner=conditioner)


def test_sampling_and_likelihood_never_drop_labels_or_units_even_in_train_mode():
    """A fresh module is in train mode; label dropout (here every label) and the backbone's dropout are for
    training: sample() and nll() give what eval mode gives, and leave every submodule's mode as it was."""
    d = tiny_conditional(dropout=1.0)
    d.model.train()
    d.conditioner.eval()  # a mixed state, restored as it was
    y = torch.tensor([1, 2])
    run = lambda: d.sample(2, sampler="ddim", steps=3, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    in_train = run()
    assert d.model.training and not d.conditioner.training
    d.eval()
    assert torch.equal(in_train, run())
    x = torch.zeros(2, 1, 16)
    d.train()
    bpd = d.nll(x, y=y, steps=2, generator=torch.Generator().manual_seed(0))
    assert d.training
    d.eval()
    assert torch.equal(bpd, d.nll(x, y=y, steps=2, generator=torch.Generator().manual_seed(0)))


def test_labels_may_be_a_list_in_forward_sample_and_nll():
    d = tiny_conditional(dropout=0.0).eval()
    x = torch.zeros(2, 1, 16)
    assert torch.isfinite(d(x, [0, 1]))
    assert torch.equal(d.sample(2, sampler="ddim", steps=2, y=[0, 1], generator=torch.Generator().manual_seed(0)),
                       d.sample(2, sampler="ddim", steps=2, y=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0)))
    assert d.nll(x, y=[0, 1], steps=2).shape == (2,)


@pytest.mark.parametrize("call, message", [
    (lambda d: d.sample(1, steps=2.5), "steps must be an integer"),
    (lambda d: d.sample(1, steps=True), "steps must be an integer"),
    (lambda d: d.sample(1, steps="5"), "steps must be an integer"),
    (lambda d: d.sample(1, steps=2, generator=5), "generator must be a torch.Generator"),
    (lambda d: d.sample(1, sampler="dpm-solver++-sde", steps=2, churn=float("nan")), "churn must be a finite number"),
    (lambda d: d.perturb_x(torch.zeros(2, 1, 16), 3, torch.zeros(2, 1, 16)), "t must be a 1-D integer tensor"),
    (lambda d: d.perturb_x(torch.zeros(2, 1, 16), torch.tensor(3), torch.zeros(2, 1, 16)), "t must be a 1-D integer tensor"),
    (lambda d: d.perturb_x(torch.zeros(2, 1, 16), torch.tensor([0.5, 1.0]), torch.zeros(2, 1, 16)), "t must be a 1-D integer"),
    (lambda d: d(torch.zeros(2, 1, 16, dtype=torch.long)), "x must be a floating-point tensor"),
    (lambda d: d(torch.zeros(0, 1, 16)), "the batch is empty"),
    (lambda d: d(torch.zeros(2, 1, 16, dtype=torch.float64)), "x is torch.float64 but the model is torch.float32"),
])
def test_bad_arguments_are_one_line_errors_naming_the_parameter(call, message):
    d = GaussianDiffusion(diffkit.create_backbone("unet1d", in_channels=1, channels=[8, 16], attention_levels=[],
                                                  num_res_blocks=1), (1, 16), linear_beta_schedule(50))
    with pytest.raises(ValueError, match=message):
        call(d)


def test_numpy_integers_are_batch_sizes_and_steps():
    import numpy as np

    d = oracle_diffusion((1, 4))
    assert d.sample(np.int64(2), sampler="ddim", steps=np.int64(3)).shape == (2, 1, 4)


@pytest.mark.parametrize("build, message", [
    (lambda: GaussianDiffusion(lambda x, t, cond=None: x, (1, 16), linear_beta_schedule(50)), "model must be a backbone"),
    (lambda: GaussianDiffusion(nn.Identity(), (1, -16), linear_beta_schedule(50)), "input_shape must be one example's shape"),
    (lambda: GaussianDiffusion(nn.Identity(), (), linear_beta_schedule(50)), "input_shape must be one example's shape"),
    (lambda: GaussianDiffusion(nn.Identity(), 16, linear_beta_schedule(50)), "input_shape must be one example's shape"),
    (lambda: GaussianDiffusion(diffkit.create_backbone("unet1d", in_channels=1, channels=[8], attention_levels=[], cond_dim=8), (1, 16),
                               linear_beta_schedule(50), conditioner=diffkit.create_conditioner("labels", num_classes=2, dim=4)),
     "the conditioner's embedding has dim=4 but the backbone was built with cond_dim=8"),
    (lambda: cosine_beta_schedule(2.5), "T must be a positive integer, got 2.5"),
    (lambda: cosine_beta_schedule(10, s=-1), "the offset s must be a finite number >= 0"),
    (lambda: linear_beta_schedule(True), "T must be a positive integer, got True"),
])
def test_impossible_constructions_are_refused_at_once(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_known_part_outside_minus_one_to_one_is_returned_exactly_with_the_default_clipping():
    d = oracle_diffusion((1, 6), threshold="clip")  # the engine's default
    known = torch.full((1, 1, 6), 5.0)
    mask = torch.tensor([True, True, True, False, False, False])
    x = d.sample(2, sampler="ddim", steps=3, known=known, mask=mask, generator=torch.Generator().manual_seed(0))
    assert bool((x[..., :3] == 5.0).all()) and bool((x[..., 3:].abs() <= 1).all())
