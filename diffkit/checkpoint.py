"""Checkpoints on disk: weights in safetensors, the rest in a file ``torch.load(weights_only=True)`` reads.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding ``model.safetensors``,
``ema.safetensors`` and ``state.pt``. It is written under a temporary name and renamed into place,
so a crash mid-write leaves the previous checkpoints untouched and no partial folder under a final name.
Pruning renames a folder out of its final name before deleting it, for the same reason; a folder
under a final name that still lacks one of :data:`CHECKPOINT_FILES` is never picked by a loader.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import TMP_PREFIX
from .files import fsync as _fsync

_STEP_DIR = re.compile(r"^step_(\d{8})$")
PathLike = Union[str, os.PathLike]
# What a complete checkpoint folder holds: the raw weights, the EMA weights, the rest of the training state.
MODEL_FILE, EMA_FILE, STATE_FILE = "model.safetensors", "ema.safetensors", "state.pt"
CHECKPOINT_FILES = (MODEL_FILE, EMA_FILE, STATE_FILE)
# Prefixes of the folders a save or a prune passes through; recover() tidies them after a crash.
_TMP, _OLD, _TRASH, _INCOMPLETE = TMP_PREFIX, ".old-", ".trash-", ".incomplete-"


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file."""


def _check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"refusing to write {what}: tensor '{name}' holds NaN or Inf")


def save_weights(tensors: dict[str, torch.Tensor], path: PathLike) -> None:
    """Write tensors to a safetensors file (contiguous CPU copies; nothing pickled)."""
    _check_finite(tensors, str(path))
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))


def load_weights(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or foreign file fails with its name in the message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found")
    if path.stat().st_size < 8:
        raise CheckpointError(f"weights file '{path}' is empty or truncated ({path.stat().st_size} bytes)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"weights file '{path}' is a git-lfs pointer, not the weights: run 'git lfs pull'")
    if head[:2] == b"\x80\x02" or head[:2] == b"PK":
        raise CheckpointError(f"weights file '{path}' is a pickle / torch.save file; diffkit reads only safetensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"weights file '{path}' is not a valid safetensors file: {exc}") from None


def load_into(module: torch.nn.Module, path: PathLike) -> None:
    """Load a safetensors file into ``module``; missing, unexpected, mis-shaped or mis-typed tensors are named,
    and so is a tensor holding NaN or Inf."""
    weights = load_weights(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    common = sorted(set(own) & set(weights))
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in common if weights[k].shape != own[k].shape]
    # load_state_dict would cast silently: int32 or bf16 weights are not the model's weights.
    mistyped = [f"'{k}' is {str(weights[k].dtype).removeprefix('torch.')}, the model's is "
                f"{str(own[k].dtype).removeprefix('torch.')}" for k in common if weights[k].dtype != own[k].dtype]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape (file vs model), first {wrong[0]}")
    if mistyped:
        problems.append(f"{len(mistyped)} tensor(s) of the wrong dtype, first {mistyped[0]}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, first '{missing[0]}'")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), first '{unexpected[0]}'")
    if problems:
        raise CheckpointError(f"weights file '{path}' does not fit this model: {'; '.join(problems)}")
    for name in common:
        tensor = weights[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"weights file '{path}': tensor '{name}' holds NaN or Inf; these weights cannot be used")
    module.load_state_dict(weights)


def load_state(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint's ``state.pt`` with ``weights_only=True``: tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint state '{path}' not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler refuses anything but tensors and plain data
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
            # PyTorch's own message advises weights_only=False, i.e. running the file's code: not here.
            raise CheckpointError(f"checkpoint state '{path}' holds pickled code or objects, not plain data; "
                                  "diffkit never runs code from a file, so it cannot be loaded") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint state '{path}' cannot be loaded safely: {first}") from None


def checkpoint_name(step: int) -> str:
    """The folder name of step ``step``'s checkpoint: ``step_00001500``."""
    return f"step_{step:08d}"


def save_checkpoint(
    root: PathLike,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically and keep only the newest ``keep`` of them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP}{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, tensors in weights.items():
            save_weights(tensors, tmp / f"{name}.safetensors")
        torch.save(state, tmp / STATE_FILE)
        for file in tmp.iterdir():
            _fsync(file)
        if final.exists():  # saving the same step again: swap, then drop the old one
            old = root / f"{_OLD}{checkpoint_name(step)}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, keep)
    return final


def prune(root: PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints: each leaves its final name (a rename) before its files go,
    so a crash half-way through a deletion leaves a hidden folder that :func:`recover` removes, never a
    partial checkpoint under a final name."""
    root = Path(root)
    stale = list_checkpoints(root)[:-keep]
    for folder in stale:
        trash = root / f"{_TRASH}{folder.name}-{os.getpid()}"
        os.rename(folder, trash)
    if stale:
        _fsync(root)
    for path in root.iterdir():
        if path.name.startswith(_TRASH):
            shutil.rmtree(path, ignore_errors=True)


def recover(root: PathLike) -> list[str]:
    """Tidy after a crash mid-save: put back a checkpoint caught mid-swap, drop partial temporary folders.

    Call only while holding the run directory's lock. Returns what was done, for the log.
    """
    root = Path(root)
    done: list[str] = []
    if not root.is_dir():
        return done
    for path in sorted(root.iterdir()):
        if path.name.startswith(_OLD + "step_"):
            final = root / path.name[len(_OLD):].rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.rename(path, final)
                done.append(f"restored {final.name}")
    for path in sorted(root.iterdir()):
        if path.name.startswith(_TMP + "step_"):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the partial {path.name}")
        elif path.name.startswith(_TRASH):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"finished deleting {path.name[len(_TRASH):].rsplit('-', 1)[0]}")
        elif path.is_dir() and _STEP_DIR.match(path.name) and missing_files(path):
            # Left by an older diffkit's prune, or by hand: set aside (not deleted), never loaded.
            aside = root / f"{_INCOMPLETE}{path.name}"
            if aside.exists():
                shutil.rmtree(aside)
            os.rename(path, aside)
            done.append(f"set the incomplete {path.name} aside as {aside.name} (missing {', '.join(missing_files(aside))})")
    return done


def missing_files(folder: PathLike) -> list[str]:
    """Which of :data:`CHECKPOINT_FILES` ``folder`` lacks (empty for a complete checkpoint)."""
    return [name for name in CHECKPOINT_FILES if not (Path(folder) / name).is_file()]


def list_checkpoints(root: PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary and incomplete folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and not missing_files(p)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: PathLike) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint folder from a run directory (its newest), a ``checkpoints/`` folder, or the folder itself."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint or run '{path}' not found")
    if any((path / name).is_file() for name in CHECKPOINT_FILES):
        missing = missing_files(path)
        if missing:
            raise CheckpointError(f"checkpoint '{path}' is incomplete (missing {', '.join(missing)}): an interrupted "
                                  "save or prune left it; choose another checkpoint")
        return path
    for root in (path / "checkpoints", path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"no complete checkpoint found in '{path}' (expected {path}/checkpoints/step_XXXXXXXX/ "
                          f"holding {', '.join(CHECKPOINT_FILES)})")
