"""Samplers against the exact Gaussian denoiser: with it, a sampler's only error is its discretisation."""

import math

import pytest
import torch
import torch.nn as nn

from diffkit import GaussianDiffusion
from diffkit.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    _lagrange_weights,
    half_log_snr,
    logsnr_tapered_settings,
    sample_ddim,
    sample_dpmpp,
    sample_dpmpp_2m,
    sample_dpmpp_sde,
    sample_unipc,
    timestep_schedule,
)
from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule
from diffkit.testing import GaussianOracle

MEAN, STD = 0.3, 0.5
SHAPES = [(32,), (2, 16), (2, 4, 4), (2, 2, 2, 4)]  # ranks 2 to 5 once batched, 32 values each
SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


def abar_of(betas):
    return torch.cumprod(1 - betas, 0)


def oracle_diffusion(shape=(4,), schedule="linear", objective="eps", T=1000, model=None, std=STD, **kwargs):
    betas = SCHEDULES[schedule](T)
    model = GaussianOracle(abar_of(betas), MEAN, std, objective) if model is None else model
    kwargs.setdefault("threshold", "none")  # the oracle is exact: sample it unclipped
    return GaussianDiffusion(model, shape, betas, objective=objective, **kwargs)


def oracle_denoiser(abar, mean=MEAN, std=STD):
    """denoise(x_t, t) -> (ε̂, x̂0) of N(mean, std²) data, in float64, as a sampler receives it."""

    def denoise(x, t):
        a2 = abar[t].reshape(-1, *([1] * (x.ndim - 1)))
        eps = (1 - a2).sqrt() * (x - a2.sqrt() * mean) / (a2 * std**2 + 1 - a2)
        return eps, (x - (1 - a2).sqrt() * eps) / a2.sqrt()

    return denoise


class CountingOracle(GaussianOracle):
    """The oracle, recording the timesteps of every call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def forward(self, x_t, t, cond=None):
        self.calls.append(t.clone())
        return super().forward(x_t, t, cond)


# --- timestep schedules --------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "logsnr", "logsnr-tapered"])
@pytest.mark.parametrize("T, steps", [(1000, 1), (1000, 2), (1000, 10), (1000, 999), (50, 50), (50, 37), (25, 3)])
def test_every_spacing_gives_exactly_steps_decreasing_indices(spacing, T, steps):
    abar = abar_of(linear_beta_schedule(T))
    ts = timestep_schedule(T, steps, spacing, abar)
    assert all(isinstance(t, int) for t in ts)
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert 0 <= ts[-1] and ts[0] <= T - 1
    assert len(ts) == steps
    if spacing in ("trailing", "logsnr", "logsnr-tapered"):
        assert ts[0] == T - 1
    if spacing.startswith("logsnr") and steps > 1:
        assert ts[-1] == 0


def test_logsnr_spacing_is_even_in_log_snr():
    abar = abar_of(linear_beta_schedule(1000))
    lam = half_log_snr(abar)
    ts = timestep_schedule(1000, 10, "logsnr", abar)
    gaps = torch.diff(lam[ts])
    assert gaps.min() > 0
    # Even in λ up to the snapping to integer indices (λ moves by < 0.01 per index in the middle).
    assert float(gaps.max() - gaps.min()) < 0.12 * float(gaps.mean())
    assert lam[ts[0]] == pytest.approx(0.5 * math.log(abar[-1] / (1 - abar[-1])))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_tapered_spacing_jumps_then_shrinks_toward_the_data(schedule):
    abar = abar_of(SCHEDULES[schedule](1000))
    lam = half_log_snr(abar)
    ts = timestep_schedule(1000, 20, "logsnr-tapered", abar)
    assert ts[0] == 999 and ts[-1] == 0
    assert float(lam[ts[1]]) == pytest.approx(-3.0, abs=0.05)  # one first-order step to λ = -3
    gaps = torch.diff(lam[ts[1:]])
    assert float(gaps[0]) > float(gaps[-1]) * 1.3  # steps shrink toward the data end
    assert bool((gaps > 0).all())


@pytest.mark.parametrize(
    "steps, jump, taper", [(5, -0.75, -0.11), (7, -1.75, 0.0), (8, -2.25, 0.055), (10, -3.0, 0.1), (12, -3.0, 0.1)]
)
def test_tapered_spacing_is_placed_for_the_budget(steps, jump, taper):
    assert logsnr_tapered_settings(steps) == pytest.approx((jump, taper))
    abar = abar_of(linear_beta_schedule(10_000))  # fine indices: little snapping
    lam = half_log_snr(abar)
    ts = timestep_schedule(10_000, steps, "logsnr-tapered", abar)
    assert float(lam[ts[1]]) == pytest.approx(jump, abs=0.05)
    # Between the jump and λ(0) the steps are even in exp(κ·λ) (in λ when κ = 0), up to snapping.
    inner = lam[ts[1:]]
    w = inner if taper == 0 else torch.exp(taper * inner)
    gaps = torch.diff(w[:-2])  # the last ones end near index 0, where the indices are coarsest in λ
    assert float(gaps.max() - gaps.min()) < 0.05 * abs(float(gaps.mean()))


def test_timestep_schedule_errors_name_what_is_accepted():
    abar = abar_of(linear_beta_schedule(100))
    with pytest.raises(ValueError, match="between 1 and the schedule's T=100, got 101"):
        timestep_schedule(100, 101)
    with pytest.raises(ValueError, match="between 1 and"):
        timestep_schedule(100, 0)
    with pytest.raises(ValueError, match="unknown timestep spacing 'karras'.*'logsnr-tapered'"):
        timestep_schedule(100, 10, "karras", abar)
    with pytest.raises(ValueError, match="needs the schedule's alphas_cumprod"):
        timestep_schedule(100, 10, "logsnr")


# --- the bar: DPM-Solver++ quality per network call ------------------------------------------------


def sample_stats(d, sampler, steps, n=25_000, **options):
    x = d.sample(n, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0), **options)
    return float(x.mean()), float(x.std())


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpm_solver_default_reproduces_the_data_within_2_5_percent(schedule, steps):
    d = oracle_diffusion(schedule=schedule)
    mean, std = sample_stats(d, "dpm-solver++", steps)
    # 100 000 values: the sample std itself is off by about 0.2% (one standard error).
    assert std / STD - 1 == pytest.approx(0.0, abs=0.025)
    assert mean == pytest.approx(MEAN, abs=0.01)


# Issue 14's test: data N(MEAN, 0.3²), 64 values per example, 1,024 samples, T = 1000, default settings.
FEW_CALL_TARGETS = {5: 0.10, 8: 0.025, 10: 0.025, 20: 0.025}


@pytest.mark.parametrize("steps", sorted(FEW_CALL_TARGETS))
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpm_solver_default_meets_the_few_call_targets(schedule, steps):
    d = oracle_diffusion((64,), schedule=schedule, std=0.3)
    x = d.sample(1024, sampler="dpm-solver++", steps=steps, generator=torch.Generator().manual_seed(0))
    # 65 536 values: the std itself is uncertain by about 0.3%.
    assert abs(float(x.std()) / 0.3 - 1) <= FEW_CALL_TARGETS[steps]
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_stochastic_dpm_solver_reproduces_the_data_at_20_calls(schedule):
    d = oracle_diffusion((64,), schedule=schedule, std=0.3)
    # churn 2 at 50 calls: the tones example's setting; churn 4 at 50 its earlier one (at 20 calls churn 4 widens
    # the data by 2.3-2.7%)
    for churn, calls, stop in ((1.0, 20, 0), (0.5, 20, 0), (2.0, 50, 0), (4.0, 50, 0), (4.0, 50, 300)):
        generator = torch.Generator().manual_seed(0)
        x = d.sample(1024, sampler="dpm-solver++-sde", steps=calls, churn=churn, churn_stop=stop, generator=generator)
        assert abs(float(x.std()) / 0.3 - 1) <= 0.025
        assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)


def test_churn_stop_churns_only_the_steps_that_land_at_or_above_it():
    abar = abar_of(cosine_beta_schedule(1000))
    ts = timestep_schedule(1000, 12, "logsnr-tapered", abar)
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def run(**options):
        generator = torch.Generator().manual_seed(1)
        out = sample_dpmpp_sde(oracle_denoiser(abar), x_T, abar, ts, churn=4.0, generator=generator, **options)
        return out, generator.get_state()

    torch.testing.assert_close(run(churn_stop=1000)[0], sample_dpmpp(oracle_denoiser(abar), x_T, abar, ts))
    default, _ = run()
    assert torch.equal(run(churn_stop=0)[0], default)
    for k in (1, 5, 10):  # steps to ts[1] … ts[k] draw fresh noise, the later ones none
        out, state = run(churn_stop=ts[k])
        drawn = torch.Generator().manual_seed(1)
        for _ in range(k):
            torch.randn(x_T.shape, generator=drawn, dtype=x_T.dtype)
        assert torch.equal(state, drawn.get_state()), k
        assert not torch.equal(out, default)


def test_stochastic_dpm_solver_without_churn_is_the_ode_solver():
    abar = abar_of(cosine_beta_schedule(1000))
    ts = timestep_schedule(1000, 9, "logsnr-tapered", abar)
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = sample_dpmpp_sde(oracle_denoiser(abar), x_T, abar, ts, churn=0.0)
    torch.testing.assert_close(out, sample_dpmpp(oracle_denoiser(abar), x_T, abar, ts))


def test_stochastic_dpm_solver_is_stochastic_and_seeded():
    d = oracle_diffusion((8,))
    a, b, c = (
        d.sample(4, sampler="dpm-solver++-sde", steps=6, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 0, 1)
    )
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_the_bar_can_fail():
    """Even log-SNR steps over the whole schedule (diffusers' use_lu_lambdas) miss it (+3.2% here, an
    O(h²) overshoot of 2M), even-t steps badly."""
    d = oracle_diffusion(schedule="linear")
    _, std = sample_stats(d, "dpm-solver++", 10, spacing="logsnr")
    assert std / STD - 1 > 0.025
    _, std = sample_stats(d, "dpm-solver++", 10, spacing="linspace")
    assert abs(std / STD - 1) > 0.2


# --- every sampler, objective and rank -------------------------------------------------------------

# (steps, tolerance on the relative std error): the full ancestral chain, DDIM with enough steps for
# its first-order error to be small, DPM-Solver++ at 20 calls.
SAMPLER_RUNS = {
    "ddpm": (None, 0.02),
    "ddim": (200, 0.025),
    "dpm-solver++": (20, 0.02),
    "unipc": (20, 0.02),
    "dpm-solver++-sde": (20, 0.025),
}


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler", sorted(SAMPLER_RUNS))
@pytest.mark.parametrize("shape", SHAPES)
def test_samplers_reproduce_the_data_for_every_objective_and_rank(shape, sampler, objective):
    steps, tol = SAMPLER_RUNS[sampler]
    d = oracle_diffusion(shape, objective=objective)
    x = d.sample(1024, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1))
    assert x.shape == (1024, *shape)
    # 32 768 values: standard errors of 0.4% (std) and 0.003 (mean).
    assert float(x.std()) / STD - 1 == pytest.approx(0.0, abs=tol)
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.015)


@pytest.mark.parametrize("sampler", sorted(SAMPLER_RUNS))
def test_samplers_do_not_depend_on_the_rank(sampler):
    """The oracle acts per value, so the same noise gives the same values whatever the example's shape."""
    steps, _ = SAMPLER_RUNS[sampler]
    outs = [
        oracle_diffusion(shape).sample(64, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(2))
        for shape in SHAPES
    ]
    for out in outs[1:]:
        torch.testing.assert_close(out.reshape(64, -1), outs[0].reshape(64, -1))


def test_ddpm_fails_with_a_wrong_predictor():
    d = oracle_diffusion((32,))
    d.model.std = STD * 1.1
    _, std = sample_stats(d, "ddpm", None, n=1024)
    assert std / STD - 1 > 0.05


# --- independent references ------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_is_euler_on_the_probability_flow_ode(schedule):
    """DDIM η=0 is Euler's method for dy/dρ = ε̂ with y = x/α, ρ = σ/α (Song et al. 2021, eq. 14)."""
    abar = abar_of(SCHEDULES[schedule](1000))
    denoise = oracle_denoiser(abar)
    ts = timestep_schedule(1000, 25, "trailing")
    x_T = torch.randn(256, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    # Reference: Euler in (y, ρ), stepping to ρ = 0 after the last visited index.
    y, rho = x_T / abar[ts[0]].sqrt(), ((1 - abar[ts[0]]) / abar[ts[0]]).sqrt()
    for i, t in enumerate(ts):
        eps, _ = denoise(y * abar[t].sqrt(), torch.full((256,), t))
        rho_next = ((1 - abar[ts[i + 1]]) / abar[ts[i + 1]]).sqrt() if i + 1 < len(ts) else 0.0
        y, rho = y + (rho_next - rho) * eps, rho_next

    out = sample_ddim(denoise, x_T, abar, ts, eta=0.0)
    torch.testing.assert_close(out, y, rtol=1e-6, atol=1e-6)


def test_dpm_solver_first_order_is_ddim():
    abar = abar_of(linear_beta_schedule(1000))
    denoise = oracle_denoiser(abar)
    ts = timestep_schedule(1000, 12, "logsnr-tapered", abar)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(sample_dpmpp_2m(denoise, x_T, abar, ts, order=1), sample_ddim(denoise, x_T, abar, ts))


def test_dpm_solver_is_second_order():
    """Halving the λ-steps cuts the error fourfold (twofold for the first-order variant)."""
    abar = abar_of(linear_beta_schedule(1000))
    a_T, s_T = abar[-1].sqrt(), (1 - abar[-1]).sqrt()
    a_0, s_0 = abar[0].sqrt(), (1 - abar[0]).sqrt()
    # Exact flow from index T-1 to index 0 for N(MEAN, STD²) data, then the exact x̂0 at index 0:
    # x_0 = a_0·MEAN + scale·(x_T - a_T·MEAN), x̂0 = MEAN + a_0·STD²/(a_0²·STD² + s_0²)·(x_0 - a_0·MEAN).
    scale = math.sqrt((a_0**2 * STD**2 + s_0**2) / (a_T**2 * STD**2 + s_T**2))
    exact = scale * a_0 * STD**2 / (a_0**2 * STD**2 + s_0**2)
    x_T = torch.tensor([[0.0], [1.0]], dtype=torch.float64)  # the map is affine: two points give its slope

    def error(steps, order):
        ts = timestep_schedule(1000, steps, "logsnr", abar)
        out = sample_dpmpp_2m(oracle_denoiser(abar), x_T, abar, ts, order=order)
        return abs(float(out[1, 0] - out[0, 0]) - exact)

    ratio_2 = error(41, 2) / error(81, 2)
    ratio_1 = error(41, 1) / error(81, 1)
    assert 3.2 < ratio_2 < 4.8
    assert 1.6 < ratio_1 < 2.4


def exact_slope_error(sampler, steps, T=20_000, **options):
    """|slope of the sampler's affine map x_T -> sample - the exact flow's| on N(MEAN, STD²) data (see above).

    A fine schedule (T = 20 000, the same continuous-time schedule as T = 1000) keeps the steps near
    the data from snapping onto neighbouring indices, which would hide a higher order.
    """
    abar = abar_of(linear_beta_schedule(T))
    a_T, s_T = abar[-1].sqrt(), (1 - abar[-1]).sqrt()
    a_0, s_0 = abar[0].sqrt(), (1 - abar[0]).sqrt()
    scale = math.sqrt((a_0**2 * STD**2 + s_0**2) / (a_T**2 * STD**2 + s_T**2))
    exact = scale * a_0 * STD**2 / (a_0**2 * STD**2 + s_0**2)
    ts = timestep_schedule(T, steps, "logsnr", abar)
    out = sampler(oracle_denoiser(abar), torch.tensor([[0.0], [1.0]], dtype=torch.float64), abar, ts, **options)
    return abs(float(out[1, 0] - out[0, 0]) - exact)


@pytest.mark.parametrize(
    "sampler, options, low, high",
    [
        (sample_dpmpp, {"order": 3}, 4.8, 9.6),  # 3M: third order, beyond 2M's 4
        (sample_unipc, {"order": 1}, 3.2, 4.8),  # UniP-1 + UniC-1: second order
        (sample_unipc, {"order": 2}, 6.4, 9.6),  # UniP-2 + UniC-2: third order
        (sample_unipc, {"order": 3}, 9.6, 19.2),  # UniP-3 + UniC-3: fourth order, beyond 8
    ],
)
def test_higher_order_solvers_converge_at_their_order(sampler, options, low, high):
    """Halving the λ-steps (21 -> 41 calls) cuts the error about 2^order-fold. The first steps run
    at lower orders (there is no history yet), and with many more steps their error would dominate:
    so the comparison is made where the order itself shows."""
    ratio = exact_slope_error(sampler, 21, **options) / exact_slope_error(sampler, 41, **options)
    assert low < ratio < high


def test_lagrange_weights_integrate_polynomials_exactly():
    """Σ w_k·p(τ_k) = ∫_0^h e^{τ-h}·p(τ) dτ for p of degree < number of nodes, here p = 1 - τ + 3τ²."""
    h, nodes = 0.7, [0.0, -0.4, -1.1]
    w = _lagrange_weights(nodes, h)
    p = lambda tau: 1 - tau + 3 * tau**2  # noqa: E731
    # Closed form: ∫_0^h e^{τ-h}·τ^n dτ is 1-e^{-h}, h-1+e^{-h}, h²-2h+2-2e^{-h} for n = 0, 1, 2.
    e = math.exp(-h)
    exact = (1 - e) - (h - 1 + e) + 3 * (h * h - 2 * h + 2 - 2 * e)
    assert sum(wk * p(tk) for wk, tk in zip(w, nodes)) == pytest.approx(exact, rel=1e-12)
    assert sum(w) == pytest.approx(1 - e, rel=1e-12)


# --- network calls, progress, errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler, steps, spacing",
    [
        ("ddpm", None, None),
        ("ddim", 7, None),
        ("ddim", 10, "linspace"),
        ("dpm-solver++", 1, None),
        ("dpm-solver++", 2, None),
        ("dpm-solver++", 3, None),
        ("dpm-solver++", 10, None),
        ("dpm-solver++", 20, None),
        ("dpm-solver++", 50, "logsnr"),
        ("dpm-solver++", 100, "trailing"),
        ("unipc", 5, None),
        ("unipc", 12, None),
        ("dpm-solver++-sde", 5, None),
        ("dpm-solver++-sde", 20, None),
    ],
)
def test_the_network_is_called_once_per_step_with_training_indices(sampler, steps, spacing):
    T = 100
    betas = linear_beta_schedule(T)
    model = CountingOracle(abar_of(betas), MEAN, STD)
    d = GaussianDiffusion(model, (3,), betas, threshold="none")
    options = {} if spacing is None else {"spacing": spacing}
    d.sample(5, sampler=sampler, steps=steps, **options)
    assert len(model.calls) == (T if steps is None else steps)
    visited = [int(t[0]) for t in model.calls]
    assert visited[0] == T - 1
    assert all(a > b for a, b in zip(visited, visited[1:]))
    for t in model.calls:
        assert t.dtype == torch.long and t.shape == (5,) and bool((t == t[0]).all())


def test_each_sampler_declares_a_default_spacing():
    assert set(DEFAULT_SPACING) == set(SAMPLERS)
    assert DEFAULT_SPACING["ddim"] == "trailing"


def test_progress_bar(capsys):
    d = oracle_diffusion(T=30)
    d.sample(2, sampler="dpm-solver++", steps=5, progress=True)
    assert "sampling (dpm-solver++)" in capsys.readouterr().err
    d.sample(2, sampler="dpm-solver++", steps=5)
    assert "sampling" not in capsys.readouterr().err


def test_sampler_errors_say_what_is_accepted():
    d = oracle_diffusion(T=30)
    with pytest.raises(ValueError, match=r"unknown sampler 'euler'; choose one of \['ddim', 'ddpm', 'dpm-solver\+\+'"):
        d.sample(1, sampler="euler")
    with pytest.raises(ValueError, match=r"sampler 'dpm-solver\+\+' does not take option\(s\) \['eta'\]"):
        d.sample(1, sampler="dpm-solver++", steps=5, eta=0.5)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['variance'\]"):
        d.sample(1, sampler="ddim", steps=5, variance="beta")
    with pytest.raises(ValueError, match="order must be 1, 2 or 3, got 4"):
        d.sample(1, sampler="dpm-solver++", steps=5, order=4)
    with pytest.raises(ValueError, match="unipc order must be 1, 2 or 3"):
        d.sample(1, sampler="unipc", steps=5, order=0)
    with pytest.raises(ValueError, match="churn must be a finite number >= 0"):
        d.sample(1, sampler="dpm-solver++-sde", steps=5, churn=-1.0)
    for stop in (-1, 2.5, True, "300"):
        with pytest.raises(ValueError, match=r"churn_stop must be a timestep \(an integer >= 0\), got"):
            d.sample(1, sampler="dpm-solver++-sde", steps=5, churn_stop=stop)
    with pytest.raises(ValueError, match="unknown timestep spacing 'uniform'"):
        d.sample(1, sampler="dpm-solver++", steps=5, spacing="uniform")
    with pytest.raises(ValueError, match="between 1 and the schedule's T=30, got 31"):
        d.sample(1, sampler="dpm-solver++", steps=31)
    with pytest.raises(ValueError, match="between 1 and the schedule's T=30, got 0"):
        d.sample(1, sampler="ddpm", steps=0)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        d.sample(1, sampler="ddim", steps=5, eta=-1.0)


def test_guided_sampling_keeps_one_call_per_step():
    """Classifier-free guidance batches both branches into the step's single network call."""

    class Labels(nn.Module):
        def forward(self, y):
            return nn.functional.one_hot(y, 3).double()

        def null(self, batch_size):
            return torch.zeros(batch_size, 3, dtype=torch.float64)

    betas = linear_beta_schedule(50)
    model = CountingOracle(abar_of(betas), MEAN, STD)
    d = GaussianDiffusion(model, (4,), betas, conditioner=Labels(), threshold="none")
    d.sample(3, sampler="dpm-solver++", steps=8, y=torch.tensor([0, 1, 2]), guidance_scale=3.0)
    assert len(model.calls) == 8
    assert model.calls[0].shape == (6,)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_calls_the_step_hook_after_each_transition(name):
    abar = torch.cumprod(1 - linear_beta_schedule(50), 0)
    seen = []

    def denoise(x, t):
        return torch.zeros_like(x), torch.zeros_like(x)

    def hook(x, t_next):
        seen.append(t_next)
        return torch.full_like(x, 0.5) if t_next < 0 else x

    out = SAMPLERS[name](denoise, torch.randn(2, 1, 4), abar, [40, 20, 5], step_hook=hook)
    assert seen == [20, 5, -1]
    assert torch.equal(out, torch.full_like(out, 0.5))  # what the hook returns last is the sample
