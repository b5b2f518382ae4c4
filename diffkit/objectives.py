"""What the network predicts, and the one place that converts between the predictions.

With x_t = a·x0 + s·ε (a = sqrt(ᾱ_t), s = sqrt(1 - ᾱ_t), a² + s² = 1):

- ``eps``: ε                       (Ho et al. 2020)
- ``x0``:  x0
- ``v``:   v = a·ε - s·x0            (Salimans & Ho 2022, "Progressive Distillation")

``a`` and ``s`` may be Python floats or tensors that broadcast against ``x_t``.
"""

from __future__ import annotations

from typing import Literal, Union

import torch

Objective = Literal["eps", "x0", "v"]
OBJECTIVES: tuple[str, ...] = ("eps", "x0", "v")
Coef = Union[float, torch.Tensor]


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


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, a: Coef, s: Coef) -> torch.Tensor:
    """ε consistent with x_t and a (possibly clipped) x̂0."""
    return (x_t - a * x0) / s
