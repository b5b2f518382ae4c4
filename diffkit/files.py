"""Writing files so that a crash never leaves a partial file under its final name."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]
# Files and folders being written carry this prefix until they are renamed into place.
TMP_PREFIX = ".tmp-"


def fsync(path: PathLike) -> None:
    """Flush a file's (or a folder's) contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``, so a crash
    never leaves a partial file under the final name (only a hidden ``.tmp-`` file, removed on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The extension stays last: Pillow and matplotlib pick the format from it, np.save would append one.
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def missing_folders(folder: PathLike) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first: what ``mkdir(parents=True)`` would make."""
    folder = Path(folder)
    return [p for p in (folder, *folder.parents) if not p.exists()]


def probe_writable(folder: PathLike) -> None:
    """Check that ``folder`` takes files before work that would be lost if it did not: an OSError if not.
    A folder made for the check is removed again, so that a call failing later leaves nothing behind."""
    folder = Path(folder)
    made = missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / ".write-test", "0")
    (folder / ".write-test").unlink()
    for empty in made:  # deepest first
        empty.rmdir()
