"""What the network predicts, the one place that converts between the predictions, and what is done
to a prediction (thresholding, loss weights).

With x_t = a·x0 + s·ε (a = sqrt(ᾱ_t), s = sqrt(1 - ᾱ_t), a² + s² = 1):

- ``eps``: ε                       (Ho et al. 2020)
- ``x0``:  x0
- ``v``:   v = a·ε - s·x0            (Salimans & Ho 2022, "Progressive Distillation")

``a`` and ``s`` may be Python floats or tensors that broadcast against ``x_t``.

Data whose standard deviation σ_d is far from 1 (quiet audio: 0.1) make these targets lopsided: at a
step where the data and the noise are equally loud (a·σ_d = s), v is 0.995·ε − 0.0995·x0, the data's
part 40 dB below the noise's. ``GaussianDiffusion(data_std=σ_d)`` therefore runs the diffusion in units
of σ_d (Karras et al. 2022, "Elucidating the Design Space", §5: c_in and the σ_data-scaled target):
the network sees x_t·c_in with c_in = 1/sqrt(a²σ_d² + s²), and its objective is the one above for
x0/σ_d with (a, s) replaced by (a·σ_d·c_in, s·c_in) (:func:`scaled_coefficients`), so that input
and target have unit variance at every step. σ_d = 1 leaves everything as written above.
"""

from __future__ import annotations

from typing import Literal, Union

import torch

Objective = Literal["eps", "x0", "v"]
OBJECTIVES: tuple[str, ...] = ("eps", "x0", "v")
Coef = Union[float, torch.Tensor]

Threshold = Literal["none", "clip", "dynamic"]
THRESHOLDS: tuple[str, ...] = ("none", "clip", "dynamic")

LossWeighting = Literal["none", "min-snr"]
LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "min-snr")


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")


def training_target(objective: str, x0: torch.Tensor, noise: torch.Tensor, a: Coef, s: Coef) -> torch.Tensor:
    """The tensor the network is trained to output."""
    if objective == "eps":
        return noise
    if objective == "x0":
        return x0
    return a * noise - s * x0


def eps_and_x0(objective: str, output: torch.Tensor, x_t: torch.Tensor, a: Coef, s: Coef) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, x̂0) implied by the network's ``output`` at ``x_t``."""
    if objective == "eps":
        eps = output
        return eps, (x_t - s * eps) / a
    if objective == "x0":
        x0 = output
        return (x_t - a * x0) / s, x0
    v = output
    return s * x_t + a * v, a * x_t - s * v


def scaled_coefficients(alphas_cumprod: torch.Tensor, data_std: float) -> dict[str, torch.Tensor]:
    """``scaled_a``, ``scaled_s`` and ``input_scale`` (c_in) per step for data of standard deviation
    ``data_std``: x_t·c_in = scaled_a·(x0/data_std) + scaled_s·ε, with scaled_a² + scaled_s² = 1.
    For ``data_std`` 1 they are sqrt(ᾱ), sqrt(1-ᾱ) and 1 exactly."""
    a, s = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
    if data_std == 1.0:
        return {"scaled_a": a, "scaled_s": s, "input_scale": torch.ones_like(a)}
    c_in = (alphas_cumprod * data_std**2 + 1.0 - alphas_cumprod).rsqrt()
    return {"scaled_a": a * data_std * c_in, "scaled_s": s * c_in, "input_scale": c_in}


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, a: Coef, s: Coef) -> torch.Tensor:
    """ε consistent with x_t and a (possibly clipped) x̂0."""
    return (x_t - a * x0) / s


# --- thresholding the predicted x0 ---------------------------------------------------------------


def check_threshold(threshold: str, percentile: float = 0.995) -> None:
    if threshold not in THRESHOLDS:
        raise ValueError(f"unknown x0 threshold {threshold!r}; choose one of {list(THRESHOLDS)}")
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"threshold_percentile must lie in (0, 1], got {percentile}")


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Dynamic thresholding of Saharia et al. 2022 (Imagen, §2.3): per example, s = max(1, the
    ``percentile`` quantile of |x̂0|); clamp to [-s, s] and divide by s. Any rank."""
    # A sort, not torch.quantile: the latter refuses inputs over 2**24 elements (a batch of volumes).
    ordered = x0.detach().flatten(1).abs().float().sort(dim=1).values
    position = percentile * (ordered.shape[1] - 1)
    below, frac = int(position), position - int(position)
    above = min(below + 1, ordered.shape[1] - 1)
    s = ordered[:, below] + frac * (ordered[:, above] - ordered[:, below])
    s = s.clamp_min(1.0).to(x0.dtype).reshape(-1, *((1,) * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def threshold_x0(x0: torch.Tensor, threshold: str, percentile: float = 0.995) -> torch.Tensor:
    """x̂0 kept inside [-1, 1], the range of the data: ``"clip"`` clamps, ``"dynamic"`` rescales."""
    if threshold == "none":
        return x0
    if threshold == "clip":
        return x0.clamp(-1.0, 1.0)
    if threshold == "dynamic":
        return dynamic_threshold(x0, percentile)
    check_threshold(threshold)
    raise AssertionError


# --- loss weighting ------------------------------------------------------------------------------


def check_loss_weighting(weighting: str, gamma: float = 5.0) -> None:
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss_weighting {weighting!r}; choose one of {list(LOSS_WEIGHTINGS)}")
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ / (1 - ᾱ)."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weight(objective: str, snr_t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-γ loss weight of Hang et al. 2023 for the MSE of ``objective``'s output.

    Every objective's MSE is a multiple of the x0 error: ‖ε̂-ε‖² = SNR·‖x̂0-x0‖² and
    ‖v̂-v‖² = (SNR+1)·‖x̂0-x0‖². Weighting the x0 error by min(SNR, γ) therefore reads
    min(SNR, γ)/SNR for ``eps``, min(SNR, γ) for ``x0`` and min(SNR, γ)/(SNR + 1) for ``v``.
    """
    check_objective(objective)
    clipped = snr_t.clamp(max=gamma)
    if objective == "eps":
        return clipped / snr_t
    if objective == "x0":
        return clipped
    return clipped / (snr_t + 1.0)
