"""Finds plugins through the ``diffkit`` entry-point group and keeps what they register."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pluggy
import torch.nn as nn

from . import hookspecs

ENTRY_POINT_GROUP = "diffkit"
# Set to 1 to load only the plugins that ship with diffkit itself.
DISABLE_ENV = "DIFFKIT_DISABLE_THIRD_PARTY_PLUGINS"


class PluginError(RuntimeError):
    """A plugin is missing, broken, or clashes with another."""


@dataclass(frozen=True)
class Entry:
    """One registered backbone or conditioner."""

    name: str
    kind: str  # "backbone" or "conditioner"
    factory: Callable[..., nn.Module]
    plugin: str  # entry-point name
    distribution: str
    description: str = ""


@dataclass
class Registry:
    backbones: dict[str, Entry] = field(default_factory=dict)
    conditioners: dict[str, Entry] = field(default_factory=dict)
    # "distribution (entry point): error" for each plugin that could not be used.
    failures: list[str] = field(default_factory=list)
    # (kind, name) claimed by two plugins: the name is disabled, the message says by whom and the way out.
    clashes: dict[tuple[str, str], str] = field(default_factory=dict)


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown distribution>"


def load_registry() -> Registry:
    """Load every plugin of the ``diffkit`` entry-point group and collect what it registers.

    A plugin that fails to import or raises in a hook is reported (warning, and in ``failures``)
    and skipped; the others still load. A name registered by two plugins is disabled (in ``clashes``,
    with a warning): everything else stays usable, and choosing that name is the error naming both.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    dists: dict[str, str] = {}
    third_party_off = os.environ.get(DISABLE_ENV, "") not in ("", "0")
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = _dist_name(ep)
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        if third_party_off and dist != "diffkit":
            continue
        plugin_id = f"{dist}:{ep.name}"
        try:
            module = ep.load()
            pm.register(module, name=plugin_id)
        except Exception as exc:  # a broken plugin must not take the others down
            _fail(registry, f"plugin {ep.name!r} from distribution {dist!r} failed to load: {type(exc).__name__}: {exc}")
            continue
        dists[plugin_id] = dist

    for kind, hook, table in (
        ("backbone", pm.hook.diffkit_register_backbones, registry.backbones),
        ("conditioner", pm.hook.diffkit_register_conditioners, registry.conditioners),
    ):
        for impl in hook.get_hookimpls():
            dist = dists.get(impl.plugin_name, impl.plugin_name)
            plugin = impl.plugin_name.split(":", 1)[-1]
            register = _registrar(kind, table, plugin, dist, registry)
            try:
                impl.function(register=register)
            except Exception as exc:
                _fail(registry, f"plugin {plugin!r} from distribution {dist!r} failed to register its {kind}s: "
                                f"{type(exc).__name__}: {exc}")
    return registry


def _fail(registry: Registry, message: str) -> None:
    registry.failures.append(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _registrar(kind: str, table: dict[str, Entry], plugin: str, dist: str, registry: Registry) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., nn.Module], description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"plugin {plugin!r} from distribution {dist!r} registered a {kind} with a bad name {name!r}")
        if not callable(factory):
            raise TypeError(f"plugin {plugin!r} from distribution {dist!r} registered {kind} {name!r} "
                            f"with a factory that is not callable")
        key = (kind, name)
        if key in registry.clashes:
            registry.clashes[key] += f" and by plugin {plugin!r} of distribution {dist!r}"
            return
        if name in table:
            other = table.pop(name)
            registry.clashes[key] = (f"{kind} name {name!r} is claimed by plugin {other.plugin!r} of distribution "
                                     f"{other.distribution!r} and by plugin {plugin!r} of distribution {dist!r}")
            warnings.warn(f"{registry.clashes[key]}; the name is disabled until one of them is uninstalled",
                          RuntimeWarning, stacklevel=2)
            return
        table[name] = Entry(name, kind, factory, plugin, dist, description)

    return register


_registry: Optional[Registry] = None


def get_registry() -> Registry:
    """The plugins found so far (loaded on first use)."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def reload_plugins() -> Registry:
    """Forget the loaded plugins and look for them again (after installing one, or in tests)."""
    global _registry
    _registry = None
    return get_registry()


def available_backbones() -> list[str]:
    """Names of every installed backbone, sorted."""
    return sorted(get_registry().backbones)


def available_conditioners() -> list[str]:
    """Names of every installed conditioner, sorted."""
    return sorted(get_registry().conditioners)


def _create(table: dict[str, Entry], kind: str, name: str, options: dict[str, Any]) -> nn.Module:
    clash = get_registry().clashes.get((kind, name))
    if clash is not None:
        raise PluginError(f"{clash}, so it is disabled; uninstall one of them, or set {DISABLE_ENV}=1 to use "
                          "diffkit's own plugins only")
    if name not in table:
        available = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {kind} {name!r}; available {kind}s: {available}")
    entry = table[name]
    origin = f"{kind} {name!r} (from {entry.distribution})"
    try:
        module = entry.factory(**options)
    except TypeError as exc:
        raise TypeError(f"{origin}: {exc}") from exc
    except ValueError:
        raise  # a bad option value: the plugin's own message names it
    except Exception as exc:
        raise PluginError(f"{origin} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise PluginError(f"{origin} returned a {type(module).__name__}, not a torch.nn.Module")
    # Lets later errors (e.g. a wrong output shape) name the plugin that built the module.
    module.diffkit_origin = origin
    return module


def create_backbone(name: str, **options: Any) -> nn.Module:
    """Build the backbone registered as ``name`` with its ``options``."""
    return _create(get_registry().backbones, "backbone", name, options)


def create_conditioner(name: str, **options: Any) -> nn.Module:
    """Build the conditioner registered as ``name`` with its ``options``."""
    return _create(get_registry().conditioners, "conditioner", name, options)
