"""Samplers: small pure functions with one shared signature.

Every sampler is called as::

    sampler(denoise, x, alphas_cumprod, timesteps, *, generator=None, progress=False, **options)

- ``denoise(x_t, t) -> (eps, x0)``: the network's prediction at ``x_t`` for the batch of integer
  timestep indices ``t`` (shape ``(B,)``), already converted from the objective, guided and clipped.
  A sampler calls it exactly once per step.
- ``x``: the starting noise x_T.
- ``alphas_cumprod``: ᾱ of the training schedule, float64, length T.
- ``timesteps``: the training-schedule indices to visit, strictly decreasing.
- ``step_hook(x, t_next) -> x`` (optional, every sampler): called on the state after each transition,
  with the index just landed on (-1 for clean data); e.g. inpainting puts the known part back there.

Between two visited steps t > t' the sampler uses ᾱ_t and ᾱ_t' directly, so skipping steps needs no
second schedule. After the last visited step every sampler lands on clean data (ᾱ = 1).

Which indices are visited is :func:`timestep_schedule`'s business; each sampler names its default
spacing in :data:`DEFAULT_SPACING`.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

# σ² of the DDPM sampler: β (as the seed and Ho et al.) or the posterior's β̃.
VARIANCES: tuple[str, ...] = ("beta", "posterior")

Denoiser = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
StepHook = Callable[[torch.Tensor, int], torch.Tensor]
Spacing = Literal["leading", "trailing", "linspace", "logsnr", "logsnr-tapered"]
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace", "logsnr", "logsnr-tapered")

# "logsnr-tapered" (see _logsnr_targets). The first step, from T-1, is first order: x̂0 there is about
# the data's mean, and stays so up to λ ≈ -log(data std). The fewer the calls, the further that cheap
# first step reaches: to λ = LOGSNR_JUMP_BASE - steps/2, but never beyond LOGSNR_JUMP_MIN (with 10 calls
# or more). The other steps are equally spaced in exp(κ·λ) up to λ(0), κ = LOGSNR_TAPER_SLOPE·(steps - 7)
# capped at LOGSNR_TAPER: below 7 calls the steps grow toward the data, from 8 on they shrink by exp(-κ)
# per unit of λ. DPM-Solver++(2M) extrapolates x̂0 linearly in λ, so it overshoots where x̂0 saturates
# (high λ) and undershoots where the steps are long; the taper balances the two. All four constants are
# calibrated with the exact Gaussian oracle (data std 0.1 to 1, linear and cosine schedules, 5 to 20
# calls, worst |std error|); see benchmarks/sampler_quality.py.
LOGSNR_JUMP_BASE = 1.75
LOGSNR_JUMP_MIN = -3.0
LOGSNR_TAPER_SLOPE = 0.055
LOGSNR_TAPER = 0.1


def half_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ_t = log(α_t/σ_t) = ½·log(ᾱ_t/(1-ᾱ_t)), float64: DPM-Solver's time variable (Lu et al. 2022)."""
    abar = alphas_cumprod.detach().double().cpu()
    return 0.5 * (abar.log() - torch.log1p(-abar))


def timestep_schedule(
    T: int,
    steps: Optional[int] = None,
    spacing: Spacing = "trailing",
    alphas_cumprod: Optional[torch.Tensor] = None,
) -> list[int]:
    """Exactly ``steps`` decreasing training-schedule indices for a sampler (all T when None).

    - ``leading`` / ``trailing`` / ``linspace``: even in t, after Lin et al. 2024, "Common Diffusion
      Noise Schedules and Sample Steps are Flawed", table 2; ``trailing`` always starts at T-1, where
      the noise the sampler starts from lives.
    - ``logsnr``: even in λ = log(α/σ) from T-1 to 0 (Lu et al. 2022, "logSNR" steps).
    - ``logsnr-tapered``: T-1, then from λ = max(1.75 - steps/2, -3) to λ(0) even in exp(κ·λ),
      κ = min(0.055·(steps - 7), 0.1): placed for the budget (see :func:`logsnr_tapered_settings`);
      the default of ``dpm-solver++``, ``unipc`` and ``dpm-solver++-sde``.

    The λ spacings need ``alphas_cumprod``; they snap each λ to the index of nearest λ, keeping
    ``steps`` distinct indices, the first T-1 and the last 0.
    """
    if steps is None:
        steps = T
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool):
        raise ValueError(f"steps must be an integer (network calls) or None, got {steps!r}")
    steps = int(steps)
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
    elif spacing in ("logsnr", "logsnr-tapered"):
        if alphas_cumprod is None or len(alphas_cumprod) != T:
            raise ValueError(f"spacing {spacing!r} needs the schedule's alphas_cumprod (length T={T})")
        lam = half_log_snr(alphas_cumprod)
        return _snap(lam, _logsnr_targets(float(lam[-1]), float(lam[0]), steps, tapered=spacing == "logsnr-tapered"))
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {list(SPACINGS)}")
    return sorted(set(ts), reverse=True)


def logsnr_tapered_settings(steps: int) -> tuple[float, float]:
    """(λ the first step from T-1 jumps to, taper κ) of the ``logsnr-tapered`` spacing for ``steps`` calls."""
    jump = max(LOGSNR_JUMP_BASE - steps / 2, LOGSNR_JUMP_MIN)
    taper = min(LOGSNR_TAPER_SLOPE * (steps - 7), LOGSNR_TAPER)
    return jump, taper


def _logsnr_targets(first: float, last: float, steps: int, tapered: bool) -> list[float]:
    """The λ each step should sit at, from λ(T-1) = ``first`` up to λ(0) = ``last``."""
    if steps == 1:
        return [first]
    if not tapered:
        return torch.linspace(first, last, steps, dtype=torch.float64).tolist()
    to, k = logsnr_tapered_settings(steps)
    jump = first < to < last and steps > 2  # one first-order step from T-1 to λ = to
    start, count = (to, steps - 1) if jump else (first, steps)
    if k == 0:
        targets = torch.linspace(start, last, count, dtype=torch.float64).tolist()
    else:
        w = torch.linspace(math.exp(k * start), math.exp(k * last), count, dtype=torch.float64)
        targets = (w.log() / k).tolist()
    targets[0], targets[-1] = start, last  # exact ends, whatever the round trip through exp and log
    return [first, *targets] if jump else targets


def _snap(lam: torch.Tensor, targets: Sequence[float]) -> list[int]:
    """Indices of nearest λ, made strictly decreasing without losing any (so one call per target)."""
    T, n = len(lam), len(targets)
    ts = [int((lam - target).abs().argmin()) for target in targets]
    for i in range(1, n):  # collisions near the data end: step down...
        ts[i] = min(ts[i], ts[i - 1] - 1)
    for i in range(n - 1, -1, -1):  # ...but leave room for the steps still to come
        ts[i] = max(ts[i], n - 1 - i)
    assert ts[0] <= T - 1 and all(a > b for a, b in zip(ts, ts[1:]))
    return ts


Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def noise_like(shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``; with a list of generators, example i draws from the i-th."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.stack([noise_like(shape[1:], g, device, dtype) for g in generator])
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, a list of them or None, got {type(generator).__name__}")
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def _noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    return noise_like(x.shape, generator, x.device, x.dtype)


def _batch_t(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _transitions(alphas_cumprod: torch.Tensor, timesteps: Sequence[int], name: str, progress: bool):
    """(t, ᾱ_t, t', ᾱ_t') for each visited step t and the next one t' (-1 and ᾱ = 1 after the last)."""
    abar = alphas_cumprod.double().cpu().tolist()
    steps = list(timesteps)
    for i, t in enumerate(tqdm(steps, desc=f"sampling ({name})", disable=not progress, leave=False)):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        yield t, abar[t], t_prev, (abar[t_prev] if t_prev >= 0 else 1.0)


def sample_ddpm(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    variance: Literal["beta", "posterior"] = "beta",
) -> torch.Tensor:
    """Ancestral sampling of Ho et al. 2020, eq. 11 via the posterior mean of eq. 7; σ² = β (as the seed) or β̃."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown DDPM variance {variance!r}; choose 'beta' (σ²=β) or 'posterior' (σ²=β̃)")
    for t, a_t, t_prev, a_prev in _transitions(alphas_cumprod, timesteps, "ddpm", progress):
        beta = 1.0 - a_t / a_prev
        _, x0 = denoise(x, _batch_t(t, x))
        # Posterior mean μ̃(x_t, x0) of q(x_{t'} | x_t, x0).
        c_x0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
        x = c_x0 * x0 + c_xt * x
        if t_prev >= 0:
            var = beta if variance == "beta" else beta * (1.0 - a_prev) / (1.0 - a_t)
            x = x + math.sqrt(var) * _noise_like(x, generator)
        if step_hook is not None:
            x = step_hook(x, t_prev)
    return x


def sample_ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM of Song et al. 2021, eq. 12; η=0 is deterministic, η=1 matches DDPM's σ."""
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    for t, a_t, t_prev, a_prev in _transitions(alphas_cumprod, timesteps, "ddim", progress):
        eps, x0 = denoise(x, _batch_t(t, x))
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * _noise_like(x, generator)
        if step_hook is not None:
            x = step_hook(x, t_prev)
    return x


def _lam(a: float) -> float:
    """λ = log(α/σ) for ᾱ = ``a``."""
    return 0.5 * (math.log(a) - math.log1p(-a))


def sample_dpmpp(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    order: Optional[Literal[1, 2, 3]] = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) and (3M) of Lu et al. 2022 (arXiv 2211.01095): multistep, data prediction, in λ.

    From t to t' (h = λ_t' - λ_t): x_t' = (σ_t'/σ_t)·x_t - α_t'·(e^{-h} - 1)·D, with D = x̂0_t (first
    order: the first step, and ``order=1``, which is DDIM), D = x̂0_t + (x̂0_t - x̂0_prev)·h/(2·h_prev)
    (2M, Algorithm 2), or for ``order=3`` the 3M update, which adds the curvature of the last three
    x̂0 (second, then third order as the history fills). The last step lands on σ = 0, where the
    update is x̂0 itself (h = ∞ leaves no room for a slope). Deterministic: ``generator`` is unused.

    ``order=None`` picks from the number of calls (the steps, ``logsnr-tapered``, are placed for it
    too): 2 below 15 calls, 3 from 15. With fewer calls 3M's larger overshoot where x̂0 saturates
    costs more than its order gains (+4.6% std error at 10 calls on the Gaussian oracle, against
    2M's 0.8%); from 15 calls 3M is as close on the Gaussian oracle and closer on a Gaussian mixture
    (benchmarks/results/sampler_quality.md).
    """
    if order is None:
        order = 2 if len(timesteps) < 15 else 3
    if order not in (1, 2, 3):
        raise ValueError(f"dpm-solver++ order must be 1, 2 or 3, got {order!r}")
    history: list[tuple[float, torch.Tensor]] = []  # (λ, x̂0) of the latest calls, newest first
    for t, a_t, t_next, a_next in _transitions(alphas_cumprod, timesteps, "dpm-solver++", progress):
        _, x0 = denoise(x, _batch_t(t, x))
        if t_next < 0:
            return x0 if step_hook is None else step_hook(x0, t_next)
        lam, lam_next = _lam(a_t), _lam(a_next)
        h = lam_next - lam
        history = [(lam, x0), *history[: order - 1]]
        phi = -math.expm1(-h)  # 1 - e^{-h}
        if len(history) == 1:
            d = x0
        elif len(history) == 2:
            lam_1, x0_1 = history[1]
            d = x0 + (x0 - x0_1) * (h / (2.0 * (lam - lam_1)))
        else:
            (lam_1, x0_1), (lam_2, x0_2) = history[1], history[2]
            r0, r1 = (lam - lam_1) / h, (lam_1 - lam_2) / h
            d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            # α'·φ·D = α'·(φ·x̂0 + c1·D1 - c2·D2): the 3M update, with φ-functions of h.
            c1 = 1.0 - phi / h
            c2 = (h - phi) / h**2 - 0.5
            d = x0 + d1 * (c1 / phi) - d2 * (c2 / phi)
        x = math.sqrt((1.0 - a_next) / (1.0 - a_t)) * x + (math.sqrt(a_next) * phi) * d
        if step_hook is not None:
            x = step_hook(x, t_next)
    return x  # no steps at all: x unchanged


sample_dpmpp_2m = sample_dpmpp  # its name before order 3 existed


def _lagrange_weights(nodes: Sequence[float], h: float) -> list[float]:
    """w_k = ∫_0^h e^{τ-h}·L_k(τ) dτ for the Lagrange basis L_k on ``nodes`` (λ offsets from the step's start).

    Exact integration of the polynomial through the x̂0 values (UniPC's coefficients without the B(h)
    approximation), by the moments I_n = ∫_0^h e^{τ-h}·τ^n dτ = h^n - n·I_{n-1}.
    """
    moments = [-math.expm1(-h)]
    for n in range(1, len(nodes)):
        moments.append(h**n - n * moments[-1])
    weights = []
    for k, node in enumerate(nodes):
        coefs = [1.0]  # L_k's coefficients, lowest power first
        for j, other in enumerate(nodes):
            if j != k:
                scale = 1.0 / (node - other)
                coefs = [a * -other * scale + b * scale for a, b in zip([*coefs, 0.0], [0.0, *coefs])]
        weights.append(sum(c * m for c, m in zip(coefs, moments)))
    return weights


def sample_unipc(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    order: Optional[Literal[1, 2, 3]] = None,
) -> torch.Tensor:
    """UniPC of Zhao et al. 2023 (arXiv 2302.04867): multistep predictor UniP-p and corrector UniC, data prediction.

    From t to t' the predictor integrates x_t' = (σ_t'/σ_t)·x_t + σ_t'·∫ e^λ·x̂0(λ) dλ with x̂0 the
    polynomial through the last ``order`` predictions; once the network has been called at t' (the call
    the next step needs anyway) the corrector redoes the step with that prediction added to the
    polynomial, so a step's accuracy gains one order for no extra call. The coefficients are the
    exact integrals of that polynomial (:func:`_lagrange_weights`). The last step lands on σ = 0 at
    the last x̂0, moved by the last correction. ``step_hook`` sees the predicted states (those the
    network sees).
    ``order=None`` picks from the number of calls: 2 below 12 calls, 3 from 12 on; on the Gaussian
    oracle the cubic overshoots the long steps of a smaller budget, and order 1 (UniP-1 with UniC-1)
    falls short (benchmarks/results/sampler_quality.md). Deterministic: ``generator`` is unused.
    """
    if order is None:
        order = 2 if len(timesteps) < 12 else 3
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3 (or None: from the number of calls), got {order!r}")
    history: list[tuple[float, torch.Tensor]] = []  # (λ, x̂0) of the latest calls, newest first
    start: Optional[tuple[float, float, torch.Tensor]] = None  # (λ, ᾱ, x) where the last step began
    for t, a_t, t_next, a_next in _transitions(alphas_cumprod, timesteps, "unipc", progress):
        _, x0 = denoise(x, _batch_t(t, x))
        lam = _lam(a_t)
        if start is not None:  # UniC: redo the step that led here, with x̂0 at its end
            lam_s, a_s, x_s = start
            nodes = [(lam, x0), *history[:order]]
            w = _lagrange_weights([l - lam_s for l, _ in nodes], lam - lam_s)
            corrected = math.sqrt((1.0 - a_t) / (1.0 - a_s)) * x_s + sum(
                (math.sqrt(a_t) * wk) * xk for wk, (_, xk) in zip(w, nodes)
            )
            # x̂0 belongs to the predicted x; moved with the correction at fixed ε̂ (a DDIM step to
            # σ = 0), the last call's x̂0 still gets the corrector's gain.
            x0_land = x0 + (corrected - x) / math.sqrt(a_t) if t_next < 0 else None
            x = corrected
        history = [(lam, x0), *history[: order - 1]]
        if t_next < 0:
            out = x0 if start is None else x0_land
            return out if step_hook is None else step_hook(out, t_next)
        w = _lagrange_weights([l - lam for l, _ in history], _lam(a_next) - lam)
        start = (lam, a_t, x)
        x = math.sqrt((1.0 - a_next) / (1.0 - a_t)) * x + sum(
            (math.sqrt(a_next) * wk) * xk for wk, (_, xk) in zip(w, history)
        )
        if step_hook is not None:  # on the predicted state, which the network sees next
            x = step_hook(x, t_next)
    return x  # no steps at all: x unchanged


def check_churn(churn: float = 1.0, churn_stop: int = 0) -> None:
    """:func:`sample_dpmpp_sde`'s ``churn`` and ``churn_stop``, or a ValueError naming the one that is wrong."""
    if isinstance(churn, bool) or not isinstance(churn, numbers.Real) or not (math.isfinite(churn) and churn >= 0):
        raise ValueError(f"dpm-solver++-sde churn must be a finite number >= 0, got {churn}")
    if not isinstance(churn_stop, numbers.Integral) or isinstance(churn_stop, bool) or churn_stop < 0:
        raise ValueError(f"dpm-solver++-sde churn_stop must be a timestep (an integer >= 0), got {churn_stop!r}")


def sample_dpmpp_sde(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    churn: float = 1.0,
    churn_stop: int = 0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) of Lu et al. 2022 (arXiv 2211.01095), with a tunable amount of fresh noise.

    From t to t' (h = λ_t' - λ_t), with η = ``churn``:
    x_t' = (σ_t'/σ_t)·e^{-ηh}·x_t + α_t'·(1 - e^{-(1+η)h})·D + σ_t'·sqrt(1 - e^{-2ηh})·z, z ~ N(0, I),
    D the 2M extrapolation of x̂0. η = 1 is the SDE (fresh noise replaces part of what each step
    denoises, so the errors of earlier steps are partly forgotten), η = 0 is DPM-Solver++(2M), between
    the two a partial churn. The last step lands on σ = 0 at x̂0.

    The steps that land below ``churn_stop`` (t' < churn_stop) take η = 0, as Karras et al. 2022 churn only
    above their S_tmin: each churned step takes a share 1 - e^{-(1+η)h} of its x̂0, so a network that keeps
    slightly less than all of a clean signal at low noise shrinks it step after step (the tones demo's high
    tones lose half their level at churn 4; benchmarks/results/audio_level.md). 0, the default, churns to the end.
    """
    check_churn(churn, churn_stop)
    x0_prev, h_prev = None, None
    for t, a_t, t_next, a_next in _transitions(alphas_cumprod, timesteps, "dpm-solver++-sde", progress):
        _, x0 = denoise(x, _batch_t(t, x))
        if t_next < 0:
            return x0 if step_hook is None else step_hook(x0, t_next)
        h = _lam(a_next) - _lam(a_t)
        d = x0 if x0_prev is None else x0 + (x0 - x0_prev) * (h / (2.0 * h_prev))
        sigma_next, eta = math.sqrt(1.0 - a_next), churn if t_next >= churn_stop else 0.0
        x = (sigma_next / math.sqrt(1.0 - a_t) * math.exp(-eta * h)) * x + (
            math.sqrt(a_next) * -math.expm1(-(1.0 + eta) * h)
        ) * d
        if eta > 0:
            x = x + (sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h))) * _noise_like(x, generator)
        if step_hook is not None:
            x = step_hook(x, t_next)
        x0_prev, h_prev = x0, h
    return x  # no steps at all: x unchanged


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpm-solver++": sample_dpmpp,
    "dpm-solver++-sde": sample_dpmpp_sde,
    "unipc": sample_unipc,
}

# The timestep spacing each sampler uses unless sample(..., spacing=...) says otherwise. The
# "logsnr-tapered" steps are placed for the number of calls (see logsnr_tapered_settings).
DEFAULT_SPACING: dict[str, str] = {
    "ddpm": "trailing",
    "ddim": "trailing",
    "dpm-solver++": "logsnr-tapered",
    "dpm-solver++-sde": "logsnr-tapered",
    "unipc": "logsnr-tapered",
}
