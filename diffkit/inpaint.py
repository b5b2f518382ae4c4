"""Sampling with a known part held fixed: inpainting, gap filling and continuation, for any sampler and rank.

``mask`` is True where the data is known. After every transition of the sampler, landing on index t,
the known part of the state is put back as a fresh draw of q(x_t | known) = N(sqrt(ᾱ_t)·known,
(1-ᾱ_t)·I), and as ``known`` itself on clean data (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", app. I.2, imputation). This is done through the samplers' ``step_hook``, so every
sampler inpaints, at no extra network call.

Replacement alone lets the unknown part hear of the known part only through the network's view of
the noisy state; the two drift apart (the test with a correlated Gaussian, whose true conditional is
known in closed form, shows by how much). RePaint's resampling (Lugmayr et al. 2022) harmonises them:
the visited steps are cut into segments of ``jump_length``; each segment is run down ``resample``
times, going back up to its start in between with a draw of q(x_t | x_t') = N(sqrt(ᾱ_t/ᾱ_t')·x_t',
(1-ᾱ_t/ᾱ_t')·I).

Those loops are a Markov chain at each noise level, and a chain must mix: whatever the sampler, the
descents of resampled segments are DDPM's ancestral steps (σ² = β) over the same visited steps. With
the sampler's own steps the loops mix less: on the oracle, with the same settings, the conditional's
std comes out 8-13 % off (the bar is 5 %; benchmarks/results/inpainting_oracle.md), and with 1,500
calls DPM-Solver++'s deterministic loops still left the mean up to 3.9 standard errors off.
Inpainting is random anyway as soon as it resamples (the loops' way up draws fresh noise); the
sampler's own steps are kept where the noise is high and nothing is resampled.

Where to resample: the loop at noise level t mixes toward the conditional given the *noisy* known
part, which is the true conditional only as the noise vanishes; loops at high noise cost calls and buy
little, the low-noise end decides the result. So only segments that start where the noise-to-signal ratio
σ_t/α_t = sqrt((1-ᾱ_t)/ᾱ_t) is at most ``resample_below`` are resampled.
Network calls: steps + (resample - 1) × (steps at σ_t/α_t ≤ resample_below, rounded up to whole segments).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch

from .objectives import eps_from_x0
from .samplers import Denoiser, noise_like, sample_ddpm


class Inpainting(NamedTuple):
    """RePaint's settings: each segment of ``jump_length`` visited steps that starts where σ_t/α_t is at
    most ``resample_below`` is run down ``resample`` times."""

    resample: int
    jump_length: int
    resample_below: float


# The inpainting defaults of each sampler: the cheapest (in network calls) that meet the bar on
# the correlated Gaussian oracle (tests/test_inpaint.py: conditional mean within 3 standard errors, std
# within 5 %, ranks 2-5) at the steps the test visits: all T for DDPM (its default), 50 for DDIM, 25 for
# the logSNR samplers. From a sweep of resample 10-60, jump 1-10, resample_below 0.5-inf over 3 seeds;
# their cost there: 825, 717 and 685 calls. Fewer visited low-noise steps need more loops per step.
DEFAULT_RESAMPLE: dict[str, Inpainting] = {
    "ddpm": Inpainting(30, 5, 0.5),
    "ddim": Inpainting(30, 3, 1.0),
    "dpm-solver++": Inpainting(45, 2, 1.0),
    "dpm-solver++-sde": Inpainting(45, 2, 1.0),
    "unipc": Inpainting(45, 2, 1.0),
}
FALLBACK_RESAMPLE = Inpainting(45, 2, 1.0)  # a sampler not listed above (e.g. a plugin's)
RESAMPLE_BELOW = FALLBACK_RESAMPLE.resample_below  # sample_known's default


def default_resample(sampler: str) -> Inpainting:
    """The (resample, jump_length, resample_below) ``sample(..., known=...)`` uses when it is not told."""
    return DEFAULT_RESAMPLE.get(sampler, FALLBACK_RESAMPLE)


def network_calls(timesteps: Sequence[int], alphas_cumprod: torch.Tensor, resample: int, jump_length: int,
                  resample_below: float = RESAMPLE_BELOW) -> int:
    """Network calls of :func:`sample_known` over the visited ``timesteps``."""
    abar = alphas_cumprod.double().cpu().tolist()
    calls = 0
    for start in range(0, len(timesteps), jump_length):
        segment = len(timesteps[start:start + jump_length])
        calls += segment * (resample if _resampled(abar[timesteps[start]], resample_below) else 1)
    return calls


def _resampled(abar_start: float, resample_below: float) -> bool:
    return (1.0 - abar_start) <= resample_below**2 * abar_start


def check_known(known: torch.Tensor, mask: torch.Tensor, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``known`` and ``mask`` broadcast to the sample's ``shape`` (B, C, *spatial), ``mask`` boolean.

    Either may have fewer or size-1 dimensions where it is the same for every example or channel
    (torch's broadcasting rules: a (B, 1, H, W) or (H, W) mask applies to every channel).
    """
    shape = tuple(shape)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask must be boolean (True = known) or 0/1 integers, got dtype {mask.dtype}")
        mask = mask.bool()
    for name, tensor in (("known", known), ("mask", mask)):
        try:
            torch.broadcast_shapes(tensor.shape, shape)
        except RuntimeError:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, which does not broadcast to the "
                             f"samples' shape {shape}") from None
        if torch.broadcast_shapes(tensor.shape, shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, larger than the samples' shape {shape}")
    mask = mask.expand(shape)
    if not bool(mask.any()):
        raise ValueError("mask marks nothing as known (True = known); sample without known= instead")
    if bool(mask.all()):
        raise ValueError("mask marks everything as known (True = known): there is nothing to fill")
    if not bool(torch.isfinite(known).masked_select(mask.expand(torch.broadcast_shapes(known.shape, shape))).all()):
        raise ValueError("known has NaN or infinite values where mask is True")
    return known.expand(shape), mask


def reconstruction_guided(
    denoise: Denoiser,
    alphas_cumprod: torch.Tensor,
    known: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
    limit_x0: Callable[[torch.Tensor], torch.Tensor] = lambda x0: x0,
) -> Denoiser:
    """``denoise`` with reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7): x̂0 is
    moved by -``weight``·α_t/2 · ∇_{x_t} ‖mask·(x̂0(x_t) - known)‖², then kept in range by ``limit_x0``.

    Replacement tells the unknown part about the known part only through the noisy state; the gradient
    tells it what x̂0 of the known part the network would have to predict, and which way to move. Read as
    a posterior score, it takes p(known | x_t) to be Gaussian around x̂0 with variance σ_t²/(weight·α_t²).
    Each call is one forward and one backward pass of the network (about three forwards' work).
    """
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"reconstruction weight must be a finite number >= 0, got {weight}")
    from .diffusion import extract  # diffusion imports this module

    sqrt_abar = alphas_cumprod.sqrt()
    sqrt_one_minus = (1.0 - alphas_cumprod).sqrt()
    with torch.inference_mode(False):  # tensors made under inference mode cannot be saved for backward
        known, mask = known.clone(), mask.clone()

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x_t.clone().requires_grad_(True)
            _, x0 = denoise(x_in, t)
            (grad,) = torch.autograd.grad((x0 - known).masked_fill(~mask, 0.0).square().sum(), x_in)
        a = extract(sqrt_abar, t, x_t.shape).to(x_t.dtype)
        s = extract(sqrt_one_minus, t, x_t.shape).to(x_t.dtype)
        x0 = limit_x0(x0.detach() - weight * a / 2 * grad)
        return eps_from_x0(x_t, x0, a, s), x0

    return guided


class _Landed(Exception):
    """Raised by the step hook when a segment's descent reaches its end: stops the sampler there."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


def sample_known(
    sampler_fn: Callable[..., torch.Tensor],
    denoise: Denoiser,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    known: torch.Tensor,
    mask: torch.Tensor,
    *,
    resample: int = 1,
    jump_length: int = 1,
    resample_below: float = RESAMPLE_BELOW,
    loop_sampler: Optional[Callable[..., torch.Tensor]] = sample_ddpm,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """Run ``sampler_fn`` from ``x`` with the known part put back after every transition, and RePaint's
    resampling when ``resample`` > 1 (its loops descend with ``loop_sampler``, DDPM's ancestral steps:
    see the module's docstring; None: with ``sampler_fn``'s own). ``known`` and ``mask`` are already shaped like ``x`` (see :func:`check_known`); the
    result holds ``known`` exactly where ``mask`` is True."""
    if resample < 1 or jump_length < 1:
        raise ValueError(f"resample and jump_length must be >= 1, got {resample} and {jump_length}")
    if not resample_below >= 0:  # NaN too
        raise ValueError(f"resample_below must be >= 0 (a noise-to-signal ratio), got {resample_below}")
    abar = alphas_cumprod.double().cpu().tolist()
    known = known.to(device=x.device, dtype=x.dtype)
    mask = mask.to(x.device)

    def noise() -> torch.Tensor:
        return noise_like(x.shape, generator, x.device, x.dtype)

    def put_back(x_t: torch.Tensor, t: int) -> torch.Tensor:
        if t < 0:
            return torch.where(mask, known, x_t)
        return torch.where(mask, math.sqrt(abar[t]) * known + math.sqrt(1.0 - abar[t]) * noise(), x_t)

    timesteps = list(timesteps)
    x = put_back(x, timesteps[0])
    if resample == 1:
        return sampler_fn(denoise, x, alphas_cumprod, timesteps, generator=generator, progress=progress,
                          step_hook=put_back, **options)

    levels = timesteps + [-1]  # -1: clean data, ᾱ = 1
    for start in range(0, len(timesteps), jump_length):
        end = min(start + jump_length, len(timesteps))
        t_start, t_end = levels[start], levels[end]
        segment = timesteps[start:end] if t_end < 0 else timesteps[start:end + 1]

        def hook(x_t: torch.Tensor, t: int, t_end: int = t_end) -> torch.Tensor:
            x_t = put_back(x_t, t)
            if t == t_end and t_end >= 0:
                raise _Landed(x_t)  # the sampler would now call the network at t_end: stop it
            return x_t

        repeats = resample if _resampled(abar[t_start], resample_below) else 1
        # A resampled segment is a loop, which must mix: ancestral steps, not the sampler's own.
        looping = repeats > 1 and loop_sampler is not None
        descend = loop_sampler if looping else sampler_fn
        descend_options = options if descend is sampler_fn else {}  # the sampler's options are its own
        for r in range(repeats):
            try:
                x_end = descend(denoise, x, alphas_cumprod, segment, generator=generator, progress=progress,
                                step_hook=hook, **descend_options)
            except _Landed as landed:
                x_end = landed.x
            if r + 1 < repeats:  # back up to the segment's start: a draw of q(x_start | x_end)
                a_end = abar[t_end] if t_end >= 0 else 1.0
                ratio = abar[t_start] / a_end
                x = math.sqrt(ratio) * x_end + math.sqrt(1.0 - ratio) * noise()
            else:
                x = x_end
    return x


def extend(
    diffusion: Any,
    x: torch.Tensor,
    length: int,
    *,
    overlap: Optional[int] = None,
    **sample_options: Any,
) -> torch.Tensor:
    """Continue ``x`` (B, C, *spatial) along its last axis to ``length``, one model window at a time.

    Each window holds the last ``overlap`` elements made so far as its known part (default: half the
    window) and fills the rest; the windows' other axes are the model's. ``x`` may be shorter or longer
    than a window, but not shorter than ``overlap``. ``sample_options`` go to ``diffusion.sample`` (sampler,
    steps, y, generator, resample, …). Network calls: (number of windows) × steps × resample.
    """
    window = diffusion.input_shape[-1]
    overlap = window // 2 if overlap is None else overlap
    if not 1 <= overlap < window:
        raise ValueError(f"overlap must be between 1 and the model's window - 1 = {window - 1}, got {overlap}")
    if tuple(x.shape[1:-1]) != tuple(diffusion.input_shape[:-1]):
        raise ValueError(f"x has shape {tuple(x.shape)}; continuing needs (B, {', '.join(map(str, diffusion.input_shape[:-1]))}, L)")
    if x.shape[-1] < overlap:
        raise ValueError(f"x has {x.shape[-1]} elements along its last axis, fewer than the overlap {overlap}")
    if length <= x.shape[-1]:
        raise ValueError(f"length {length} is not beyond the {x.shape[-1]} elements x already has")
    step = window - overlap
    made = x.shape[-1]
    windows = -(-(length - made) // step)
    # One buffer for the whole result: concatenating what was made at every window would copy it all each time.
    result = torch.empty(*x.shape[:-1], made + windows * step, dtype=x.dtype, device=x.device)
    result[..., :made] = x
    mask = torch.zeros(window, dtype=torch.bool, device=x.device)
    mask[:overlap] = True
    for _ in range(windows):
        known = torch.nn.functional.pad(result[..., made - overlap:made], (0, step))
        out = diffusion.sample(x.shape[0], known=known, mask=mask, **sample_options)
        result[..., made:made + step] = out[..., overlap:].to(x.dtype)
        made += step
    return result[..., :length]
