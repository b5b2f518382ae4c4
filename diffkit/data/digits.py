"""scikit-learn's 8x8 handwritten digits: a small real labelled image set that ships with scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .folder import check_choice

# The split is fixed so that "train" and "test" never overlap, whoever builds them.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


class DigitsDataset(Dataset):
    """The 1797 8x8 greyscale digits of ``sklearn.datasets.load_digits``, labels 0-9.

    Pixels (0-16 in the source) map linearly to [-1, 1]; ``size`` > 8 upsamples bilinearly.
    ``split`` is ``"train"`` (80 %), ``"test"`` (20 %) or ``"all"``, from one fixed shuffle.
    """

    modality = "image"
    classes = [str(d) for d in range(10)]

    def __init__(self, size: int = 8, split: str = "train") -> None:
        check_choice("split", split, ("train", "test", "all"))
        if size < 8:
            raise ValueError(f"digits: 'size' must be >= 8 (the source resolution), got {size}")
        try:
            from sklearn.datasets import load_digits  # optional: scikit-learn is only in the dev extra
        except ImportError:
            raise ModuleNotFoundError(
                "the 'digits' dataset needs scikit-learn, which is not installed; `pip install scikit-learn`"
            ) from None
        digits = load_digits()
        order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
        n_test = round(len(order) * TEST_FRACTION)
        keep = {"train": order[n_test:], "test": order[:n_test], "all": np.arange(len(order))}[split]
        x = torch.from_numpy(digits.images[keep].astype(np.float32) / 16.0)[:, None]
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        self.images = (x * 2 - 1).clamp_(-1, 1).contiguous()
        self.labels = digits.target[keep].astype(np.int64).tolist()
        self.size = size
        self.split = split
        self.example_shape = (1, size, size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].clone(), self.labels[index]
