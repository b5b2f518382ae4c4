"""The hooks a diffkit plugin implements (pluggy project ``diffkit``).

A plugin is a module named by an entry point in the ``diffkit`` group; it marks its hook
functions with :data:`diffkit.hookimpl`. Each hook receives a ``register`` callback, so one plugin
may add any number of backbones or conditioners under names of its choosing.
"""

from __future__ import annotations

from typing import Callable, Protocol

import pluggy
import torch.nn as nn

PROJECT = "diffkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterFn(Protocol):
    def __call__(self, name: str, factory: Callable[..., nn.Module], description: str = "") -> None: ...


@hookspec
def diffkit_register_backbones(register: RegisterFn) -> None:
    """Register denoising networks: call ``register(name, factory, description)`` once per backbone.

    ``factory(**options)`` builds an ``nn.Module`` called as ``model(x_t, t, cond=None)`` where ``x_t``
    is ``(B, C, *spatial)``, ``t`` a ``(B,)`` LongTensor of training-schedule indices and ``cond``
    ``None`` or a ``(B, cond_dim)`` embedding; it returns a tensor shaped like ``x_t``. Bad options
    should raise ``TypeError`` or ``ValueError`` naming the option.
    """


@hookspec
def diffkit_register_conditioners(register: RegisterFn) -> None:
    """Register conditioners: call ``register(name, factory, description)`` once per conditioner.

    ``factory(**options)`` builds an ``nn.Module`` with an ``int`` attribute ``dim``; calling it on a
    batch of conditions ``y`` returns ``(B, dim)`` embeddings (in training mode it may replace some by
    the null condition, for classifier-free guidance), and ``null(batch_size)`` returns the embedding
    of "no condition", ``(batch_size, dim)``.
    """
