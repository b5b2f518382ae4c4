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


# Each tone class draws its frequencies from these bands (Hz); all stay below 2 kHz, so any
# sample_rate >= 4 kHz represents them without aliasing.
_TONE_CLASSES = ["low tone", "high tone", "rising chirp", "falling chirp", "fifth", "tremolo"]
_MIN_TONE_RATE = 4000


class TonesDataset(Dataset):
    """Sine tones, chirps, chords and tremolos of random pitch, loudness and phase: mono waveforms.

    Class ``k`` is the ``k``-th of: low tone (110-220 Hz), high tone (440-880 Hz), rising chirp
    (f → 2f over the clip), falling chirp (2f → f), fifth (f with 1.5f), tremolo (a tone whose
    loudness swings at 2-8 Hz), with f in 220-660 Hz for the last four; ``num_classes`` keeps the
    first few. Peaks stay within [-0.9, 0.9].
    Deterministic for a given ``seed``.
    """

    modality = "audio"

    def __init__(
        self, num_examples: int = 2048, sample_rate: int = 16000, length: int = 8192, num_classes: int = 4, seed: int = 0
    ) -> None:
        if not 1 <= num_classes <= len(_TONE_CLASSES):
            raise ValueError(f"tones: 'num_classes' must be between 1 and {len(_TONE_CLASSES)}, got {num_classes}")
        if sample_rate < _MIN_TONE_RATE:
            raise ValueError(
                f"tones: 'sample_rate' must be >= {_MIN_TONE_RATE} so every tone lies below Nyquist, got {sample_rate}"
            )
        if length < 1:
            raise ValueError(f"tones: 'length' must be positive, got {length}")
        self.num_examples = num_examples
        self.sample_rate = sample_rate
        self.length = length
        self.num_classes = num_classes
        self.seed = seed
        self.classes = _TONE_CLASSES[:num_classes]
        self.example_shape = (1, length)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.integers(self.num_classes))
        t = np.arange(self.length) / self.sample_rate
        duration = self.length / self.sample_rate
        f = rng.uniform(440, 880) if label == 1 else rng.uniform(110, 220) if label == 0 else rng.uniform(220, 660)
        phase = rng.uniform(0, 2 * np.pi)
        amplitude = rng.uniform(0.4, 0.9)
        if label in (0, 1):
            wave = np.sin(2 * np.pi * f * t + phase)
        elif label in (2, 3):  # linear chirp: the phase is the integral of the instantaneous frequency
            f0, f1 = (f, 2 * f) if label == 2 else (2 * f, f)
            wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)) + phase)
        elif label == 4:
            wave = 0.5 * (np.sin(2 * np.pi * f * t + phase) + np.sin(2 * np.pi * 1.5 * f * t))
        else:
            rate = rng.uniform(2, 8)
            wave = np.sin(2 * np.pi * f * t + phase) * (0.5 + 0.5 * np.cos(2 * np.pi * rate * t))
        return torch.from_numpy((amplitude * wave).astype(np.float32)[None]), label


class SolidsDataset(Dataset):
    """Spheres and axis-aligned cubes of random size, place and brightness in a dark cube of side ``size``.

    One channel, background -1, the solid at a brightness in [0.2, 1]; labels 0 sphere, 1 cube.
    Deterministic for a given ``seed``.
    """

    modality = "volume"
    classes = ["sphere", "cube"]

    def __init__(self, num_examples: int = 1024, size: int = 16, seed: int = 0) -> None:
        if size < 6:
            raise ValueError(f"solids: 'size' must be >= 6, got {size}")
        self.num_examples = num_examples
        self.size = size
        self.seed = seed
        self.example_shape = (1, size, size, size)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, index))
        n = self.size
        label = int(rng.integers(2))
        r = rng.uniform(0.2, 0.35) * n
        centre = rng.uniform(r, n - r, size=3)
        grid = np.stack(np.mgrid[0:n, 0:n, 0:n]) + 0.5 - centre[:, None, None, None]
        if label == 0:
            mask = (grid**2).sum(0) <= r**2
        else:  # a cube of the same volume as the sphere would be, so size does not give the class away
            mask = (np.abs(grid) <= r * 0.806).all(0)
        brightness = rng.uniform(0.2, 1.0)
        volume = np.where(mask, brightness, -1.0).astype(np.float32)
        return torch.from_numpy(volume[None]), label
