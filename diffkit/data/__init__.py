"""Datasets for every modality, built-in demo sets, and writing samples back to files.

Every dataset yields ``(x, y)``: ``x`` a float32 tensor ``(C, *spatial)`` scaled to [-1, 1] and ``y`` an
integer class index (0 when the set has no labels). Each has ``modality`` ("image", "audio" or
"volume"), ``example_shape`` and ``classes`` (a list of names, or None); audio sets also ``sample_rate``.
Random augmentations use torch's global generator, so seeding torch makes a run reproducible.
"""

from __future__ import annotations

import inspect

from torch.utils.data import Dataset

from .audio import DC_OFFSETS, DEFAULT_DC_OFFSET, AudioFolder, apply_dc_offset, remove_dc
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
    return cls(**options)


__all__ = [
    "DATASETS",
    "DC_OFFSETS",
    "DEFAULT_DC_OFFSET",
    "AudioFolder",
    "DataError",
    "DataWarning",
    "DigitsDataset",
    "ImageFolder",
    "ShapesDataset",
    "SolidsDataset",
    "TonesDataset",
    "VolumeFolder",
    "apply_dc_offset",
    "create_dataset",
    "remove_dc",
    "save_image",
    "save_image_grid",
    "save_images",
    "save_samples",
    "save_spectrogram_png",
    "save_volume",
    "save_volume_slices_png",
    "save_wav",
]
