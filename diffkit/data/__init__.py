"""Datasets for every modality, built-in demo sets, and writing samples back to files.

Every dataset yields ``(x, y)``: ``x`` a float32 tensor ``(C, *spatial)`` scaled to [-1, 1] and ``y`` an
integer class index (0 when the set has no labels). Each has ``modality`` ("image", "audio" or
"volume"), ``example_shape`` and ``classes`` (a list of names, or None).
"""

from .demo import ShapesDataset
from .writers import save_image_grid

DATASETS = {"shapes": ShapesDataset}


def create_dataset(name: str, **options):
    """Build the dataset registered as ``name``."""
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
    return cls(**options)


__all__ = ["DATASETS", "ShapesDataset", "create_dataset", "save_image_grid"]
