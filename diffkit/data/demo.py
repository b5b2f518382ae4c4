"""Procedural demo sets that need no download; they double as test fixtures."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class ShapesDataset(Dataset):
    """Filled discs, squares and triangles of random size, place and colour on a dark background.

    Deterministic for a given ``seed``; labels are the shape kind (0 disc, 1 square, 2 triangle).
    """

    modality = "image"
    classes = ["disc", "square", "triangle"]

    def __init__(self, num_examples: int = 2048, size: int = 32, channels: int = 3, seed: int = 0) -> None:
        if channels not in (1, 3):
            raise ValueError(f"shapes: 'channels' must be 1 or 3, got {channels}")
        if size < 8:
            raise ValueError(f"shapes: 'size' must be >= 8, got {size}")
        self.num_examples = num_examples
        self.size = size
        self.channels = channels
        self.seed = seed
        self.example_shape = (channels, size, size)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, index))
        n = self.size
        label = int(rng.integers(3))
        r = rng.uniform(0.18, 0.35) * n
        cx, cy = rng.uniform(r, n - r, size=2)
        yy, xx = np.mgrid[0:n, 0:n] + 0.5
        if label == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif label == 1:
            mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
        else:  # upward triangle: below the apex, above the base, inside both slanted edges
            top, base = cy - r, cy + r * 0.8
            half = (yy - top) / (base - top) * r
            mask = (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)
        colour = rng.uniform(0.3, 1.0, size=self.channels) if self.channels == 3 else np.array([1.0])
        image = mask[None].astype(np.float32) * colour[:, None, None].astype(np.float32)
        return torch.from_numpy(image * 2.0 - 1.0), label
