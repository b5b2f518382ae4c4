"""A folder of PNG / JPEG images as a dataset of (C, H, W) tensors in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .folder import DEFAULT_CACHE_BYTES, DataError, FolderDataset, PathLike, check_choice, random_flip

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _size_pair(size: Union[int, tuple[int, int]]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"'size' must be positive, got {size!r}")
    return int(h), int(w)


class ImageFolder(FolderDataset):
    """Every ``.png`` / ``.jpg`` / ``.jpeg`` under ``root``, as ``(channels, H, W)`` tensors in [-1, 1].

    ``channels`` is 1 (grey) or 3 (RGB). A file with another channel count is bad input, unless
    ``convert=True`` converts it with Pillow (alpha dropped, colour mixed to grey). ``resize`` says how
    a file of another size becomes ``size``: ``"crop"`` scales the shorter side to fit and cuts the
    centre (keeps the aspect ratio), ``"stretch"`` scales each side on its own, ``"none"`` rejects it.
    ``flip`` mirrors left-right with probability 1/2 at each access. With ``labels`` the class is the
    sub-folder of ``root`` a file lies in. 16-bit greyscale PNGs keep their full range.
    """

    modality = "image"
    extensions = IMAGE_EXTENSIONS
    file_kind = "PNG or JPEG image"

    def __init__(
        self,
        root: PathLike,
        size: Union[int, tuple[int, int]] = 32,
        channels: int = 3,
        resize: str = "crop",
        flip: bool = False,
        labels: bool = False,
        convert: bool = False,
        on_error: str = "raise",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"image_folder: 'channels' must be 1 or 3, got {channels}")
        check_choice("resize", resize, ("crop", "stretch", "none"))
        self.size = _size_pair(size)
        self.channels = channels
        self.resize = resize
        self.flip = flip
        self.convert = convert
        self.example_shape = (channels, *self.size)
        self._scan(root, labels, on_error, cache_bytes)

    def load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as img:
            img.load()  # decode fully now: a truncated file fails here, not at training time
            if img.mode == "P":  # a palette is an encoding of colour, not a channel count
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            bands = len(img.getbands())
            if bands != self.channels:
                if not self.convert:
                    raise DataError(
                        path, f"has {bands} channel(s) (mode {img.mode}); expected {self.channels} (or pass convert=True)"
                    )
                img = img.convert("L" if self.channels == 1 else "RGB")
            elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("L" if self.channels == 1 else "RGB")
            pixels = np.asarray(img)
        if pixels.dtype == np.uint8:
            scale = 255.0
        elif pixels.dtype.kind in "ui" and img.mode.startswith("I;16"):
            scale = 65535.0
        else:
            raise DataError(path, f"pixel mode {img.mode} is not supported; expected 8-bit or 16-bit integer pixels")
        x = torch.from_numpy(pixels.astype(np.float32) / scale)
        x = x.reshape(*x.shape[:2], -1).permute(2, 0, 1)  # (C, H, W)
        x = self._fit(path, x)
        return (x * 2 - 1).clamp_(-1, 1).contiguous()

    def _fit(self, path: Path, x: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        hx, wx = x.shape[-2:]
        if (hx, wx) == (h, w):
            return x
        if self.resize == "none":
            raise DataError(path, f"is {hx}x{wx} pixels (HxW); expected {h}x{w} with resize='none'")
        if self.resize == "crop":
            scale = max(h / hx, w / wx)
            th, tw = max(h, round(hx * scale)), max(w, round(wx * scale))
        else:
            th, tw = h, w
        if (th, tw) != (hx, wx):
            # Antialiasing keeps downscaled images free of aliasing; the clamp below removes bicubic overshoot.
            x = F.interpolate(x[None], size=(th, tw), mode="bicubic", antialias=True, align_corners=False)[0]
        top, left = (th - h) // 2, (tw - w) // 2
        return x[:, top : top + h, left : left + w].clamp(0, 1)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return random_flip(x, (-1,)) if self.flip else x
