"""Checkpoints on disk: weights in safetensors, the rest in a file ``torch.load(weights_only=True)`` reads.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding ``model.safetensors``,
``ema.safetensors`` and ``state.pt``. It is written under a temporary name and renamed into place,
so a crash mid-write leaves the previous checkpoints untouched and no partial folder under a final name.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step_(\d{8})$")
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """Load a safetensors file into ``module``; missing, unexpected or mis-shaped tensors are named."""
    weights = load_weights(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(weights)) if weights[k].shape != own[k].shape]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape (file vs model), first {wrong[0]}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, first '{missing[0]}'")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), first '{unexpected[0]}'")
    if problems:
        raise CheckpointError(f"weights file '{path}' does not fit this model: {'; '.join(problems)}")
    module.load_state_dict(weights)


def load_state(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint's ``state.pt`` with ``weights_only=True``: tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint state '{path}' not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler refuses anything but tensors and plain data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint state '{path}' cannot be loaded safely: {first}") from None


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
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, tensors in weights.items():
            save_weights(tensors, tmp / f"{name}.safetensors")
        torch.save(state, tmp / "state.pt")
        for file in tmp.iterdir():
            _fsync(file)
        if final.exists():  # saving the same step again: swap, then drop the old one
            old = root / f".old-step_{step:08d}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in list_checkpoints(root)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def recover(root: PathLike) -> list[str]:
    """Tidy after a crash mid-save: put back a checkpoint caught mid-swap, drop partial temporary folders.

    Call only while holding the run directory's lock. Returns what was done, for the log.
    """
    root = Path(root)
    done: list[str] = []
    if not root.is_dir():
        return done
    for path in sorted(root.iterdir()):
        if path.name.startswith(".old-step_"):
            final = root / path.name[len(".old-"):].rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.rename(path, final)
                done.append(f"restored {final.name}")
    for path in sorted(root.iterdir()):
        if path.name.startswith(".tmp-step_"):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the partial {path.name}")
    return done


def list_checkpoints(root: PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: PathLike) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint folder from a run directory (its newest), a ``checkpoints/`` folder, or the folder itself."""
    path = Path(path)
    if (path / "state.pt").is_file() or (path / "model.safetensors").is_file():
        return path
    for root in (path / "checkpoints", path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"no checkpoint found in '{path}' (expected {path}/checkpoints/step_XXXXXXXX/)")
