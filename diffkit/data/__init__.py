"""Datasets for every modality, built-in demo sets, and writing samples back to files.

Every dataset yields ``(x, y)``: ``x`` a float32 tensor ``(C, *spatial)`` scaled to [-1, 1] and ``y`` an
integer class index (0 when the set has no labels). Each has ``modality`` ("image", "audio" or
"volume"), ``example_shape`` and ``classes`` (a list of names, or None); audio sets also ``sample_rate``.
Random augmentations use torch's global generator, so seeding torch makes a run reproducible.
"""

from __future__ import annotations

import inspect
import numbers
import os
import types
import typing

import numpy as np
from torch.utils.data import Dataset

from .audio import (DC_OFFSETS, DEFAULT_DC_OFFSET, DEFAULT_NYQUIST, NYQUIST_CHOICES, AudioFolder, apply_dc_offset,
                    as_written, check_noise_gate, noise_gate, remove_dc, remove_nyquist)
from .demo import ShapesDataset, SolidsDataset, TonesDataset
from .digits import DigitsDataset
from .folder import DataError, DataWarning
from .images import ImageFolder
from .volumes import VolumeFolder
from .writers import (
    save_image,
    save_image_grid,
    save_images,
    save_samples,
    save_spectrogram_png,
    save_volume,
    save_volume_slices_png,
    save_wav,
)

DATASETS: dict[str, type[Dataset]] = {
    "shapes": ShapesDataset,
    "tones": TonesDataset,
    "solids": SolidsDataset,
    "digits": DigitsDataset,
    "image_folder": ImageFolder,
    "audio_folder": AudioFolder,
    "volume_folder": VolumeFolder,
}


def create_dataset(name: str, **options) -> Dataset:
    """Build the dataset registered as ``name`` in ``DATASETS`` with the given options.

    An unknown name or option is a ValueError that lists what is accepted.
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {unknown}; accepted: {accepted}")
    _check_types(name, cls, options)
    return cls(**options)


class OptionTypeError(ValueError):
    """A dataset option of the wrong type (``key`` names it): ``labels = "false"`` is not false."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def _check_types(name: str, cls: type, options: dict) -> None:
    """Each option against the type its constructor declares, so that a value from a config file of the
    wrong type is refused by name instead of being taken for another (a string "false" is true)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # a plugin's dataset whose annotations do not resolve: its constructor judges
        return
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise OptionTypeError(key, f"dataset {name!r}: option {key!r} expects {_describe(hint)}, got {value!r}")


def _fits(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:  # numpy's integers too
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is os.PathLike:
        return isinstance(value, os.PathLike)
    if hint is type(None):
        return value is None
    return True  # a type this check does not know: the constructor judges


def _describe(hint: object) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if set(args) == {str, os.PathLike}:
            return "a path"
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
        return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[1]}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


__all__ = [
    "DATASETS",
    "DC_OFFSETS",
    "DEFAULT_DC_OFFSET",
    "DEFAULT_NYQUIST",
    "NYQUIST_CHOICES",
    "AudioFolder",
    "DataError",
    "DataWarning",
    "OptionTypeError",
    "DigitsDataset",
    "ImageFolder",
    "ShapesDataset",
    "SolidsDataset",
    "TonesDataset",
    "VolumeFolder",
    "apply_dc_offset",
    "as_written",
    "check_noise_gate",
    "create_dataset",
    "noise_gate",
    "remove_dc",
    "remove_nyquist",
    "save_image",
    "save_image_grid",
    "save_images",
    "save_samples",
    "save_spectrogram_png",
    "save_volume",
    "save_volume_slices_png",
    "save_wav",
]
