"""What every folder dataset shares: finding files, labels from sub-folders, validating once, caching.

A folder dataset decodes and checks every file when it is built, so that a corrupt or mis-shaped
file stops the run at the start (``on_error="raise"``) or is left out with one counted warning
(``on_error="skip"``), never half-way through training.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

PathLike = Union[str, os.PathLike]

# Decoded examples are kept in memory up to this many bytes; beyond it files are decoded per access.
DEFAULT_CACHE_BYTES = 1 << 30
# How many skipped files a warning names before it says "and N more".
_NAMED_IN_WARNING = 5
# Whether checking a large folder shows a progress bar (off inside ``quiet_scans()``: `--no-progress`).
_SCAN_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("scan_progress", default=True)


@contextlib.contextmanager
def quiet_scans(quiet: bool = True) -> Iterator[None]:
    """Within this block folder datasets check their files without a progress bar (when ``quiet``)."""
    token = _SCAN_PROGRESS.set(not quiet)
    try:
        yield
    finally:
        _SCAN_PROGRESS.reset(token)


class DataError(ValueError):
    """A file or folder that a dataset cannot use; the message is one line naming it."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")


class DataWarning(UserWarning):
    """Files were left out of a dataset (``on_error="skip"``, or short clips with ``short="skip"``)."""


class SkipFile(Exception):
    """Raised by ``load`` for a file that is valid but left out by configuration (always skipped)."""


def one_line(text: object) -> str:
    """Collapse whitespace, newlines included, so that a library's message fits on one line."""
    return " ".join(str(text).split())


def check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name!r} must be one of {list(choices)}, got {value!r}")


def list_files(root: Path, extensions: tuple[str, ...], labels: bool) -> tuple[list[Path], list[int], Optional[list[str]]]:
    """Files under ``root`` whose names end in one of ``extensions`` (case-insensitive), sorted.

    With ``labels`` the class of a file is the first-level sub-folder it lies in; classes are the
    sorted names of sub-folders that hold at least one such file. Files lying directly in ``root``
    get the label -1 so that the caller can report them. Hidden files and folders are ignored.
    """
    if not root.is_dir():
        raise DataError(root, "not a folder; expected a folder of data files")
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file()
        and p.name.lower().endswith(extensions)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        where = " in class sub-folders" if labels else ""
        raise DataError(root, f"no data files found; expected files ending in {', '.join(extensions)}{where}")
    if not labels:
        return files, [0] * len(files), None
    parts = [p.relative_to(root).parts for p in files]
    classes = sorted({part[0] for part in parts if len(part) > 1})
    index = {name: i for i, name in enumerate(classes)}
    targets = [index[part[0]] if len(part) > 1 else -1 for part in parts]
    return files, targets, classes


class FolderDataset(Dataset):
    """Base of the folder datasets: subclasses set ``extensions`` and implement ``load`` and ``augment``.

    ``load(path)`` returns the example after every deterministic step (decoding, checks, resizing),
    raising :class:`DataError` for bad input; ``augment(x)`` applies the random steps (crops, flips)
    with torch's global generator, so a trainer that seeds torch gets reproducible runs.
    """

    modality: str
    extensions: tuple[str, ...]
    file_kind: str  # what a good file is, for error messages
    example_shape: tuple[int, ...]

    def _scan(self, root: Optional[PathLike], labels: bool, on_error: str, cache_bytes: int) -> None:
        check_choice("on_error", on_error, ("raise", "skip"))
        self.on_error = on_error
        if root is None:  # a reader of single files (see ``reader``): no folder to scan
            self.root, self.classes = None, None
            self.files, self.targets, self._cache, self.skipped = [], [], [], []
            return
        self.root = Path(root)
        files, targets, self.classes = list_files(self.root, self.extensions, labels)
        self.files: list[Path] = []
        self.targets: list[int] = []
        self._cache: list[Optional[torch.Tensor]] = []
        skipped: list[str] = []
        cached_bytes = 0
        for path, target in tqdm(list(zip(files, targets)), desc=f"checking {self.root}", leave=False,
                                disable=len(files) < 500 or not _SCAN_PROGRESS.get()):
            try:
                if target < 0:
                    raise DataError(
                        path, f"not inside a class sub-folder; expected {self.root}/<class>/{path.name} when labels=True"
                    )
                x = self._load_checked(path)
            except SkipFile as reason:
                skipped.append(f"{path.relative_to(self.root)} ({one_line(reason)})")
                continue
            except DataError as error:
                if on_error == "raise":
                    raise
                skipped.append(f"{path.relative_to(self.root)} ({error.problem})")
                continue
            size = x.numel() * x.element_size()
            keep = cached_bytes + size <= cache_bytes
            cached_bytes += size if keep else 0
            self.files.append(path)
            self.targets.append(target)
            self._cache.append(x if keep else None)
        if skipped:
            named = ", ".join(skipped[:_NAMED_IN_WARNING])
            more = f", and {len(skipped) - _NAMED_IN_WARNING} more" if len(skipped) > _NAMED_IN_WARNING else ""
            message = f"skipped {len(skipped)} of {len(files)} files in {self.root}: {named}{more}"
            if not self.files:
                raise DataError(self.root, f"no usable files; {message}")
            warnings.warn(message, DataWarning, stacklevel=3)
        self.skipped = skipped

    @classmethod
    def reader(cls, **options) -> "FolderDataset":
        """An instance with ``options`` (``root`` excepted) that reads single files with :meth:`read`, decoded
        and checked exactly as the folder dataset reads its own, without a folder to scan."""
        return cls(None, **options)

    def read(self, path: PathLike) -> torch.Tensor:
        """One file as this dataset loads it (every deterministic step, no augmentation); bad input is a
        :class:`DataError` naming the file."""
        return self._load_checked(Path(path))

    def _load_checked(self, path: Path) -> torch.Tensor:
        try:
            return self.load(path)
        except (DataError, SkipFile):
            raise
        except (MemoryError, RuntimeError) as error:
            if not isinstance(error, MemoryError) and "allocate" not in str(error):
                raise DataError(path, f"unreadable or corrupt ({type(error).__name__}: {one_line(error)}); "
                                      f"expected a valid {self.file_kind}") from error
            # A good file at an absurd size (a typo in data.options): the options are to blame, not the file.
            raise DataError(path, f"ran out of memory making a {tuple(self.example_shape)} example from it "
                                  f"({one_line(error)}); check the dataset's size options") from error
        except Exception as error:  # every decoder fails its own way: report which file, in one line
            raise DataError(
                path, f"unreadable or corrupt ({type(error).__name__}: {one_line(error)}); expected a valid {self.file_kind}"
            ) from error

    def load(self, path: Path) -> torch.Tensor:
        raise NotImplementedError

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self._cache[index]
        if x is None:
            return self.augment(self._load_checked(self.files[index])), self.targets[index]
        # A copy, so that a caller writing into the example cannot change the cache.
        return self.augment(x).clone(), self.targets[index]


def random_flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Flip ``x`` along each of ``dims`` independently with probability 1/2 (torch's global generator)."""
    flips = [d for d, coin in zip(dims, torch.rand(len(dims)).tolist()) if coin < 0.5]
    return x.flip(flips) if flips else x
