"""Exponential moving average of a model's weights (Polyak averaging, as used by Ho et al. 2020)."""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn as nn


class EMA:
    """Keeps ``self.model``, an averaged copy of a model, in eval mode and without gradients.

    Until ``start_step`` updates have been seen the copy simply tracks the live weights (the seed's
    ``ema_start``): averaging the random initial weights would only slow the average down.
    After that, every ``update_every``-th call moves it: ``ema ← decay·ema + (1-decay)·θ``.

    ``warmup=True`` uses ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th averaging update after
    ``start_step`` (n = 1, 2, …; the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=…)``):
    the average's window grows with the run instead of starting at ``1 / (1 - decay)`` updates, so a
    short run's average is not dominated by the weights it had at ``start_step``. Off by default (the seed).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, start_step: int = 2000, update_every: int = 1,
                 warmup: bool = False) -> None:
        _check_settings(decay, start_step, update_every)
        self.decay = decay
        self.start_step = start_step
        self.update_every = update_every
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the averaging update made at ``self.num_updates`` (0 while it only copies)."""
        if self.num_updates <= self.start_step:
            return 0.0
        if not self.warmup:
            return self.decay
        n = (self.num_updates - self.start_step) // self.update_every
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Count one training step and average (or copy) ``model``'s weights into ``self.model``."""
        self.num_updates += 1
        if self.num_updates % self.update_every:
            return
        if self.num_updates <= self.start_step:
            self._copy_from(model)
        else:
            self.update_model_average(self.model, model, self.current_decay())

    def update_model_average(self, ema_model: nn.Module, current_model: nn.Module,
                             decay: Optional[float] = None) -> None:
        """The seed's name: one averaging step of ``ema_model`` towards ``current_model`` (``decay``: default
        ``self.decay``)."""
        decay = self.decay if decay is None else decay
        ema_params = [p for p in ema_model.parameters() if p.is_floating_point()]
        cur_params = [p.detach() for p in current_model.parameters() if p.is_floating_point()]
        if len(ema_params) != len(cur_params):
            raise ValueError("EMA: the averaged model and the live model have different parameters")
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, cur_params, 1.0 - decay)
            for e, c in zip(ema_model.buffers(), current_model.buffers()):
                e.copy_(c)

    @torch.no_grad()
    def _copy_from(self, model: nn.Module) -> None:
        for e, c in zip(self.model.parameters(), model.parameters()):
            e.copy_(c.detach())
        for e, c in zip(self.model.buffers(), model.buffers()):
            e.copy_(c)

    def counters(self) -> dict[str, Any]:
        """The settings and the update count, without the weights (the trainer saves those as safetensors)."""
        return {"decay": self.decay, "start_step": self.start_step, "update_every": self.update_every,
                "warmup": self.warmup, "num_updates": self.num_updates}

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to go on exactly: :meth:`counters` plus the averaged weights
        under ``"model"`` (what ``torch.save`` / ``torch.load(weights_only=True)`` carry)."""
        return {**self.counters(), "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (or :meth:`counters`, which leaves the weights as they are)."""
        if "num_updates" not in state:
            raise ValueError(f"EMA state has no 'num_updates'; got keys {sorted(state)}")
        settings = {key: state.get(key, getattr(self, key)) for key in ("decay", "start_step", "update_every", "warmup")}
        _check_settings(settings["decay"], settings["start_step"], settings["update_every"])
        if "model" in state:
            _check_fits(self.model.state_dict(), state["model"])
            self.model.load_state_dict(state["model"])
        for key, value in settings.items():
            setattr(self, key, value)
        self.num_updates = int(state["num_updates"])


def _check_settings(decay: float, start_step: int, update_every: int) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    if start_step < 0 or update_every < 1:
        raise ValueError("EMA start_step must be >= 0 and update_every >= 1")


def _check_fits(own: dict[str, Any], given: dict[str, Any]) -> None:
    """One line naming what keeps ``given`` weights from loading into a model whose state is ``own``."""
    problems = [f"{what} {names[:3]}{' …' if len(names) > 3 else ''}" for what, names in (
        ("missing", sorted(set(own) - set(given))),
        ("unexpected", sorted(set(given) - set(own))),
        ("of another shape", sorted(k for k in set(own) & set(given)
                                    if tuple(getattr(given[k], "shape", ())) != tuple(own[k].shape))),
    ) if names]
    if problems:
        raise ValueError(f"EMA state: its weights do not fit this model: {'; '.join(problems)}")
