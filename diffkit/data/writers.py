"""Writing samples back to files a person can open."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, C) uint8, clipped to the valid range."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def save_image_grid(x: torch.Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None, pad: int = 2) -> Path:
    """Save a batch of images (B, C, H, W) in [-1, 1] as one PNG grid, ``nrow`` images per row."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid expects (B, 1 or 3, H, W), got {tuple(x.shape)}")
    images = to_uint8_images(x)
    b, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return path
