"""A folder of PNG / JPEG images as a dataset of (C, H, W) tensors in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

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
    ``convert=True`` converts it at the file's own bit depth (alpha dropped, grey repeated into RGB,
    colour mixed to grey with BT.601 luma). ``resize`` says how
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
            # A camera's JPEG stores its pixels unrotated plus an EXIF orientation that viewers apply.
            upright = ImageOps.exif_transpose(img)
            x, grey, bands = _pixels(path, upright)
        if bands != self.channels:
            if not self.convert:
                raise DataError(path, f"has {bands} channel(s) (mode {img.mode}); expected {self.channels} "
                                      "(or pass convert=True)")
            x = _convert(x, grey, self.channels)
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


# ITU-R BT.601 luma, the weights Pillow's own RGB → L conversion uses.
_LUMA = (0.299, 0.587, 0.114)


def _pixels(path: Path, img: Image.Image) -> tuple[torch.Tensor, bool, int]:
    """(C, H, W) float32 in [0, 1] at the file's own bit depth with alpha dropped, whether it is grey, and
    the file's band count (alpha included).

    Every conversion between grey and colour happens afterwards, in floating point: Pillow's own
    ``convert`` clips 16-bit grey to 8 bits (a 16-bit ramp converted to RGB becomes almost white).
    """
    deep = _deep_colour_png(path)
    if deep is not None:
        return deep
    if img.mode == "P":  # a palette is an encoding of colour, not a channel count
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
        img = img.convert("RGBA" if img.mode in ("RGBa", "PA") else "LA" if img.mode == "La" else "RGB")
    mode = img.mode
    if mode == "1":
        pixels, scale = np.asarray(img, dtype=np.float32), 1.0
    elif mode.startswith("I;16") or mode == "I":
        # A PNG holds at most 16 bits per sample; Pillow reads 16-bit grey as I;16 or I.
        pixels, scale = np.asarray(img).astype(np.float32), 65535.0
        if mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise DataError(path, f"32-bit pixel values {int(pixels.min())}…{int(pixels.max())} do not fit 16 bits; "
                                  "expected 8- or 16-bit integer pixels")
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pixels, scale = np.asarray(img, dtype=np.float32), 255.0
    else:
        raise DataError(path, f"pixel mode {mode} is not supported; expected 8-bit or 16-bit integer pixels")
    x = torch.from_numpy(pixels / scale)
    x = x.reshape(*x.shape[:2], -1).permute(2, 0, 1)  # (C, H, W)
    grey = mode in ("1", "L", "LA", "I") or mode.startswith("I;16")
    colours = 1 if grey else 3
    return x[:colours].contiguous(), grey, x.shape[0]  # alpha dropped, as Pillow's RGBA → RGB does


# PNG colour types whose 16-bit form Pillow reads at 8 bits: grey + alpha, RGB, RGBA (16-bit grey it keeps).
_DEEP_COLOUR_TYPES = {4: 2, 2: 3, 6: 4}  # colour type → samples per pixel


def _deep_colour_png(path: Path) -> Optional[tuple[torch.Tensor, bool, int]]:
    """A 16-bit grey+alpha, RGB or RGBA PNG read at its full depth with pypng (as ``_pixels`` returns it),
    or None for every other file."""
    with open(path, "rb") as f:
        head = f.read(26)
    # Signature, IHDR length and type, width, height, then bit depth (byte 24) and colour type (byte 25).
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or head[24] != 16:
        return None
    planes = _DEEP_COLOUR_TYPES.get(head[25])
    if planes is None:
        return None
    import png  # pypng: pure Python, only for these files

    width, height, rows, _ = png.Reader(filename=str(path)).asDirect()
    pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    x = torch.from_numpy(pixels.astype(np.float32) / 65535.0).permute(2, 0, 1)
    grey = planes == 2
    colours = 1 if grey else 3
    return x[:colours].contiguous(), grey, planes


def _convert(x: torch.Tensor, grey: bool, channels: int) -> torch.Tensor:
    """Grey → RGB by repetition, RGB → grey by BT.601 luma, in floating point (alpha is already gone)."""
    if grey == (channels == 1):
        return x
    if grey:
        return x.expand(3, *x.shape[1:]).contiguous()
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
    return (x * weights).sum(0, keepdim=True)
