"""A folder of 3-D arrays (``.npy``, or NIfTI with nibabel) as a dataset of (C, D, H, W) tensors in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .folder import DEFAULT_CACHE_BYTES, DataError, FolderDataset, PathLike, check_choice, random_flip

VOLUME_EXTENSIONS = (".npy", ".nii", ".nii.gz")
# normalize="percentile" maps these percentiles of each channel to -1 and 1 (robust to outliers).
PERCENTILES = (0.5, 99.5)


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel  # optional: only NIfTI needs it
    except ImportError:
        raise DataError(
            path, "reading NIfTI needs nibabel, which is not installed; expected `pip install 'diffkit[nifti]'`"
        ) from None
    array = np.asarray(nibabel.load(str(path)).dataobj)
    # NIfTI keeps channels (or time) on the last axis; diffkit wants them first.
    return np.moveaxis(array, -1, 0) if array.ndim == 4 else array


def load_npy(path: PathLike) -> np.ndarray:
    """A ``.npy`` file's array, never unpickling anything: a file without NumPy's header, or one holding
    Python objects, is a :class:`DataError` (numpy's own message would suggest loading it unsafely)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(path, "is not a .npy array (no NumPy header); expected a file written by numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(path, "holds Python objects (pickled), which diffkit never loads; "
                                  "expected a numeric .npy array") from None
        raise


class VolumeFolder(FolderDataset):
    """Every ``.npy`` / ``.nii`` / ``.nii.gz`` under ``root`` as ``(channels, *shape)`` tensors in [-1, 1].

    An array of rank 3 is one channel ``(D, H, W)``; rank 4 is ``(C, D, H, W)`` (NIfTI: ``(X, Y, Z, C)``)
    and its ``C`` must equal ``channels``. ``normalize`` maps intensities to [-1, 1] per channel of each
    volume: ``"minmax"`` (min → -1, max → 1; a constant channel becomes -1), ``"percentile"`` (the 0.5th
    and 99.5th percentiles → -1 and 1, clipped beyond), or ``"none"`` (values must already lie in
    [-1, 1]). Each spatial axis is then cropped (centre, or random with ``crop="random"``) or padded
    with -1 on both sides to ``shape``. ``flip_axes`` lists spatial axes (0, 1, 2) mirrored with
    probability 1/2 at each access. NaN or infinite voxels are bad input.
    """

    modality = "volume"
    extensions = VOLUME_EXTENSIONS
    file_kind = ".npy array or NIfTI volume"

    def __init__(
        self,
        root: PathLike,
        shape: tuple[int, int, int] = (32, 32, 32),
        channels: int = 1,
        normalize: str = "minmax",
        crop: str = "center",
        flip_axes: tuple[int, ...] = (),
        labels: bool = False,
        on_error: str = "raise",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"volume_folder: 'shape' must be three positive sizes (D, H, W), got {shape}")
        if channels < 1:
            raise ValueError(f"volume_folder: 'channels' must be positive, got {channels}")
        check_choice("normalize", normalize, ("minmax", "percentile", "none"))
        check_choice("crop", crop, ("center", "random"))
        if any(a not in (0, 1, 2) for a in flip_axes):
            raise ValueError(f"volume_folder: 'flip_axes' must be spatial axes among 0, 1, 2, got {tuple(flip_axes)}")
        self.shape = shape
        self.channels = channels
        self.normalize = normalize
        self.crop = crop
        self.flip_axes = tuple(sorted(set(flip_axes)))
        self.example_shape = (channels, *shape)
        self._scan(root, labels, on_error, cache_bytes)

    def load(self, path: Path) -> torch.Tensor:
        x, _ = self.normalized(path, self.array(path))
        if self.crop == "center":
            x = self._crop_or_pad(x, random=False)
        return x.contiguous()

    def array(self, path: Path) -> np.ndarray:
        """The file's array (C, D, H, W) as stored, checked: real, finite, of this dataset's channels, not empty."""
        if path.name.lower().endswith(".npy"):
            array = load_npy(path)
        else:
            array = _read_nifti(path)
        if array.dtype.kind not in "biuf":
            raise DataError(path, f"has dtype {array.dtype}; expected real numbers")
        if array.ndim == 3:
            array = array[None]
        elif array.ndim != 4:
            raise DataError(path, f"has rank {array.ndim} (shape {array.shape}); expected (D, H, W) or (C, D, H, W)")
        if array.shape[0] != self.channels:
            raise DataError(path, f"has {array.shape[0]} channel(s) (shape {array.shape}); expected {self.channels}")
        if 0 in array.shape:
            raise DataError(path, f"is empty (shape {array.shape}); expected at least one voxel")
        if array.dtype.kind == "f":  # checked in the file's own precision: float64 beyond float32's range is finite
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise DataError(path, f"holds {bad} NaN or infinite voxel(s); expected finite values")
        return array

    def normalized(self, path: Path, array: np.ndarray) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """``array`` mapped to [-1, 1] per channel as ``normalize`` says (float32), and the (lo, hi) per channel,
        each (C, 1, 1, 1) float64, that map to -1 and 1 (None with ``normalize="none"``): see :meth:`denormalize`."""
        # In float64: the span of values near ±3.4e38 overflows float32 (inf, then NaN after dividing).
        wide = torch.from_numpy(np.asarray(array, dtype=np.float64))
        flat = wide.flatten(1)
        if self.normalize == "none":
            lo, hi = float(flat.min()), float(flat.max())
            if lo < -1 or hi > 1:
                raise DataError(path, f"values span [{lo:g}, {hi:g}]; expected [-1, 1] with normalize='none'")
            return wide.float(), None
        if self.normalize == "minmax":
            lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        else:
            # numpy rather than torch.quantile, which refuses inputs of more than 2**24 elements.
            lo, hi = torch.from_numpy(np.percentile(flat.numpy(), PERCENTILES, axis=1))
        lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
        span = hi - lo
        # A constant channel has no range to stretch; it maps to -1 (background) rather than to NaN.
        scaled = torch.where(span > 0, (wide - lo) / span.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(wide))
        out = (scaled * 2 - 1).clamp_(-1, 1).float()
        if not bool(torch.isfinite(out).all()):
            raise DataError(path, f"normalising its values ({float(flat.min()):g}…{float(flat.max()):g}) gives "
                                  "non-finite numbers; expected finite values of a usable range")
        return out, (lo, hi)

    @staticmethod
    def denormalize(x: torch.Tensor, bounds: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The inverse of :meth:`normalized` (float64): [-1, 1] back to the file's units (a constant channel
        comes back as its constant)."""
        if bounds is None:
            return x.double()
        lo, hi = bounds
        return lo + (x.double() + 1) / 2 * (hi - lo)

    def _crop_or_pad(self, x: torch.Tensor, random: bool) -> torch.Tensor:
        for axis, want in enumerate(self.shape, start=1):
            have = x.shape[axis]
            if have > want:
                start = int(torch.randint(0, have - want + 1, ())) if random else (have - want) // 2
                x = x.narrow(axis, start, want)
            elif have < want:
                before = (want - have) // 2
                pad = [0, 0] * (3 - axis) + [before, want - have - before]  # F.pad lists the last axis first
                x = F.pad(x, pad, value=-1.0)
        return x

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop == "random":
            x = self._crop_or_pad(x, random=True)
        return random_flip(x, tuple(a + 1 for a in self.flip_axes))
