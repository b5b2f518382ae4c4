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
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

# σ² of the DDPM sampler: β (as the seed and Ho et al.) or the posterior's β̃.
VARIANCES: tuple[str, ...] = ("beta", "posterior")

Denoiser = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
StepHook = Callable[[torch.Tensor, int], torch.Tensor]
Spacing = Literal["leading", "trailing", "linspace", "logsnr", "logsnr-tapered"]
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace", "logsnr", "logsnr-tapered")

# "logsnr-tapered" (see _logsnr_targets). Below λ = -log 80 (EDM's σ_max = 80 for data in [-1, 1],
# Karras et al. 2022) data of unit scale is < 1/80 of the noise, so one first-order step from T-1
# crosses that stretch with a variance error of about exp(2λ)/2 ≈ 1e-4.
LOGSNR_FLOOR = -math.log(80.0)
# Steps are equally spaced in exp(κ·λ): they shrink by exp(-κ) per unit of λ toward the data.
# DPM-Solver++(2M) extrapolates x̂0 linearly in λ and so overshoots where x̂0 saturates (high λ);
# slightly finer steps there cancel most of its O(h²) bias. κ is calibrated with the exact Gaussian
# oracle (data std 0.1 to 3, linear and cosine schedules, T = 100 to 4000); see
# benchmarks/sampler_quality.py.
LOGSNR_TAPER = 1.0 / 16.0


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
    - ``logsnr-tapered``: T-1, then from λ = max(λ(T-1), -log 80) to λ(0) even in exp(λ/16), so the
      steps shrink toward the data; the default of ``dpm-solver++``.

    The λ spacings need ``alphas_cumprod``; they snap each λ to the index of nearest λ, keeping
    ``steps`` distinct indices, the first T-1 and the last 0.
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
    elif spacing in ("logsnr", "logsnr-tapered"):
        if alphas_cumprod is None or len(alphas_cumprod) != T:
            raise ValueError(f"spacing {spacing!r} needs the schedule's alphas_cumprod (length T={T})")
        lam = half_log_snr(alphas_cumprod)
        return _snap(lam, _logsnr_targets(float(lam[-1]), float(lam[0]), steps, tapered=spacing == "logsnr-tapered"))
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {list(SPACINGS)}")
    return sorted(set(ts), reverse=True)


def _logsnr_targets(first: float, last: float, steps: int, tapered: bool) -> list[float]:
    """The λ each step should sit at, from λ(T-1) = ``first`` up to λ(0) = ``last``."""
    if steps == 1:
        return [first]
    if not tapered:
        return torch.linspace(first, last, steps, dtype=torch.float64).tolist()
    jump = first < LOGSNR_FLOOR < last and steps > 2  # one step from T-1 over the invisible stretch
    start, count = (LOGSNR_FLOOR, steps - 1) if jump else (first, steps)
    k = LOGSNR_TAPER
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


def sample_dpmpp_2m(
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    step_hook: Optional[StepHook] = None,
    order: Literal[1, 2] = 2,
) -> torch.Tensor:
    """DPM-Solver++(2M) of Lu et al. 2022 (arXiv 2211.01095), Algorithm 2: multistep, data prediction, in λ.

    From t to t' (h = λ_t' - λ_t): x_t' = (σ_t'/σ_t)·x_t - α_t'·(e^{-h} - 1)·D, with D = x̂0_t (first
    order: the first step, and ``order=1``, which is DDIM) or D = x̂0_t + (x̂0_t - x̂0_prev)·h/(2·h_prev).
    The last step lands on σ = 0, where the update is x̂0 itself (h = ∞ leaves no room for a slope).
    Deterministic: ``generator`` is unused.
    """
    if order not in (1, 2):
        raise ValueError(f"dpm-solver++ order must be 1 or 2, got {order!r}")
    x0_prev, h_prev = None, None
    for t, a_t, t_next, a_next in _transitions(alphas_cumprod, timesteps, "dpm-solver++", progress):
        _, x0 = denoise(x, _batch_t(t, x))
        if t_next < 0:
            return x0 if step_hook is None else step_hook(x0, t_next)
        alpha, sigma = math.sqrt(a_t), math.sqrt(1.0 - a_t)
        alpha_next, sigma_next = math.sqrt(a_next), math.sqrt(1.0 - a_next)
        h = math.log(alpha_next / sigma_next) - math.log(alpha / sigma)
        d = x0 if order == 1 or x0_prev is None else x0 + (x0 - x0_prev) * (h / (2.0 * h_prev))
        x = (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * d
        if step_hook is not None:
            x = step_hook(x, t_next)
        x0_prev, h_prev = x0, h
    return x  # no steps at all: x unchanged


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpm-solver++": sample_dpmpp_2m,
}

# The timestep spacing each sampler uses unless sample(..., spacing=...) says otherwise.
DEFAULT_SPACING: dict[str, str] = {
    "ddpm": "trailing",
    "ddim": "trailing",
    "dpm-solver++": "logsnr-tapered",
}
