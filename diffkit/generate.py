"""Sampling a trained run into files, at any scale: micro-batches of bounded memory, numbered outputs,
resumable, and split over processes under ``torchrun`` with identical results.

Every sample's noise comes from its own generator, seeded by the call's seed and the sample's index, so
sample ``i`` is the same whether it is made alone, in a batch, in another process, or on a re-run that
fills in what an interrupted call left missing. A call writes into a folder named after its settings
(``settings.json`` inside records them): another call never overwrites its files.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .build import churn_options, sample_labels
from .config import MAX_SEED, ConfigError
from .data import (
    DC_OFFSETS,
    NYQUIST_CHOICES,
    as_written,
    check_noise_gate,
    save_image,
    save_image_grid,
    save_spectrogram_png,
    save_volume,
    save_volume_slices_png,
    save_wav,
)
from .distributed import device_kind, init_distributed, launched_by_torchrun, pick_device
from .files import write_text_atomic

if TYPE_CHECKING:
    from .run import Run

SETTINGS_FILE = "settings.json"
# Elements of one micro-batch (examples × values per example) when no batch size is given: about 2 M
# floats keep a UNet's activations within a few GiB.
_BATCH_ELEMENTS = 1 << 21
_MAX_BATCH = 64
# How many samples the summary picture (grid, spectrograms, slices) shows.
_SUMMARY = {"image": 64, "audio": 8, "volume": 8}
_EXTENSION = {"image": ".png", "audio": ".wav", "volume": ".npy"}


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s generator: distinct for every (seed, index) pair below 2**32."""
    return (int(seed) << 32) | int(index)


def generate(
    run: "Run",
    num: Optional[int] = None,
    *,
    sampler: Optional[str] = None,
    steps: Optional[int] = None,
    eta: Optional[float] = None,
    labels: Optional[Sequence[int]] = None,
    guidance: Optional[float] = None,
    seed: int = 0,
    out: Union[str, Path, None] = None,
    ema: Optional[bool] = None,
    checkpoint: Union[str, Path, None] = None,
    device: Optional[str] = None,
    batch_size: Optional[int] = None,
    progress: bool = False,
    dc_offset: Optional[str] = None,
    noise_gate: Optional[float] = None,
    churn: Optional[float] = None,
    churn_stop: Optional[int] = None,
    nyquist: Optional[str] = None,
) -> list[Path]:
    """Write samples ``000000`` … of a run as PNG / WAV / ``.npy`` files; returns their paths and the summary picture.

    Unset settings come from the run's ``[sample]`` config. ``labels`` (conditional models): one class per
    sample, default every class in turn. ``out``: the folder (default ``RUN/samples/<settings>``); files
    already there are kept and only the missing ones made. Under ``torchrun`` each process makes its share.
    ``dc_offset`` (audio): ``"remove"`` each clip's mean before writing its WAV, or ``"keep"`` it; ``nyquist`` the
    same for its Nyquist-rate component (+a, -a, …), which a backbone folding 2 samples cannot reach.
    ``noise_gate`` (audio): silence the parts of each clip that many dB quieter than its loudest (0: off).
    ``churn`` and ``churn_stop`` (``dpm-solver++-sde`` only): the fresh noise of each step, and the timestep
    below which the steps take none; the run's [sample] ones apply only when its sampler is the one used.
    """
    s = run.sample_defaults()
    num = (len(labels) if labels is not None else s.num) if num is None else num
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"num: the number of samples must be a positive integer, got {num!r}")
    if labels is not None and len(labels) != num:
        raise ConfigError(f"labels: {len(labels)} labels for {num} samples; give one per sample")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in 0…{MAX_SEED}, got {seed!r}")
    sampler = s.sampler if sampler is None else sampler
    steps = s.steps if steps is None else steps
    eta = s.eta if eta is None else eta
    guidance = s.guidance_scale if guidance is None else guidance
    options = churn_options(sampler, {"churn": churn, "churn_stop": churn_stop}, s)
    use_ema = s.use_ema if ema is None else ema
    dc_offset = s.dc_offset if dc_offset is None else dc_offset
    if dc_offset not in DC_OFFSETS:
        raise ConfigError(f"dc_offset must be one of {list(DC_OFFSETS)}, got {dc_offset!r}")
    nyquist = s.nyquist if nyquist is None else nyquist
    if nyquist not in NYQUIST_CHOICES:
        raise ConfigError(f"nyquist must be one of {list(NYQUIST_CHOICES)}, got {nyquist!r}")
    noise_gate = s.noise_gate if noise_gate is None else noise_gate
    try:
        check_noise_gate(noise_gate)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if noise_gate and run.info.modality != "audio":
        raise ConfigError(f"noise_gate applies to audio runs; this run makes {run.info.modality} samples")
    if labels is None and s.labels and num == s.num:
        labels = s.labels

    device = device or run.default_device()
    d = init_distributed(device_kind(device)) if launched_by_torchrun() else None
    target = pick_device(device, d) if d is not None else device
    folder = run.checkpoint(checkpoint)
    diffusion = run.diffusion(ema=use_ema, checkpoint=folder, device=target)
    dev = diffusion.alphas_cumprod.device
    y_all = sample_labels(diffusion, num, labels)
    try:
        diffusion.check_sample_args(num, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance, y=y_all,
                                    **options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    info = run.info
    # The churn options only when set: the folders of earlier samples keep their names.
    settings = {"checkpoint": folder.name, "weights": "ema" if use_ema else "raw", "sampler": sampler,
                "steps": steps, "eta": eta, "guidance": guidance, "seed": seed,
                "labels": None if y_all is None else y_all.tolist(), **options}
    if info.modality == "audio":
        settings["dc_offset"] = dc_offset
        if nyquist == "remove":  # only when removed: the folders of earlier samples (kept) keep their names
            settings["nyquist"] = nyquist
        if noise_gate:  # only when on: the folders of earlier samples keep their names
            settings["noise_gate"] = noise_gate
    out_dir = Path(out) if out is not None else run.samples_dir / _folder_name(settings)
    rank, world = (d.rank, d.world) if d is not None else (0, 1)
    if rank == 0:
        _claim(out_dir, settings)
    if d is not None:
        d.barrier()

    ext = _EXTENSION[info.modality]
    paths = [out_dir / f"{i:06d}{ext}" for i in range(num)]
    per_example = math.prod(info.example_shape)
    batch = batch_size or max(1, min(_MAX_BATCH, _BATCH_ELEMENTS // per_example))
    # Blocks of `batch` consecutive indices, dealt round-robin: the same batches whatever the process count.
    blocks = [list(range(b, min(b + batch, num))) for b in range(0, num, batch)][rank::world]
    todo = [[i for i in block if not paths[i].is_file()] for block in blocks]
    todo = [block for block in todo if block]
    bar = tqdm(total=sum(map(len, todo)), desc="sampling", unit="sample", disable=not (progress and rank == 0))
    for block in todo:
        generators = [torch.Generator(dev).manual_seed(sample_seed(seed, i)) for i in block]
        y = None if y_all is None else y_all[block].to(dev)
        with torch.no_grad():
            x = diffusion.sample(len(block), sampler=sampler, steps=steps, eta=eta, y=y, guidance_scale=guidance,
                                 generator=generators, **options)
        if info.modality == "audio":
            x = as_written(x, dc_offset, noise_gate, info.sample_rate, nyquist)
        for i, example in zip(block, x):
            _save_one(example, paths[i], info.modality, info.sample_rate)
        bar.update(len(block))
    bar.close()
    if d is not None:
        d.barrier()
    summary = _summary(paths, out_dir, info.modality, info.sample_rate) if rank == 0 else None
    if d is not None:
        d.barrier()
        d.close()
    return paths + ([summary] if summary is not None else [])


def _folder_name(settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    steps = "all" if settings["steps"] is None else settings["steps"]
    return f"{settings['checkpoint']}-{settings['weights']}-{settings['sampler']}-{steps}steps-seed{settings['seed']}-{digest}"


def _claim(out_dir: Path, settings: dict[str, Any]) -> None:
    """Make ``out_dir`` this call's, or check that it holds samples of these very settings."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out: '{out_dir}' is a file; choose a folder")
    record = out_dir / SETTINGS_FILE
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            saved = None
        if saved != settings:
            raise ConfigError(f"out: '{out_dir}' holds samples made with other settings ({record.name}); "
                              "choose another folder so that no file is overwritten")
        return
    if out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        raise ConfigError(f"out: '{out_dir}' is not empty and holds no {SETTINGS_FILE}; choose a new or empty folder")
    try:
        write_text_atomic(record, json.dumps(settings, indent=2) + "\n")
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"out: cannot write into '{out_dir}': {exc.strerror or exc}") from None


def _save_one(x: torch.Tensor, path: Path, modality: str, sample_rate: Optional[int]) -> None:
    if modality == "image":
        save_image(x, path)
    elif modality == "audio":
        save_wav(x, path, int(sample_rate))
    else:
        save_volume(x, path)


def _load_one(path: Path, modality: str) -> torch.Tensor:
    if modality == "image":
        from PIL import Image

        with Image.open(path) as img:
            pixels = np.asarray(img, dtype=np.float32) / 127.5 - 1
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)
    if modality == "audio":
        import soundfile as sf

        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T))
    return torch.from_numpy(np.load(path, allow_pickle=False))


def _summary(paths: list[Path], out_dir: Path, modality: str, sample_rate: Optional[int]) -> Optional[Path]:
    """One picture of the first samples: a grid of images, mel spectrograms of clips, mid-slices of volumes."""
    shown = [p for p in paths[: _SUMMARY[modality]] if p.is_file()]
    if not shown:
        return None
    x = torch.stack([_load_one(p, modality) for p in shown])
    if modality == "image":
        return save_image_grid(x, out_dir / "grid.png", scale=max(1, 64 // max(x.shape[2:])))
    if modality == "audio":
        return save_spectrogram_png(x, out_dir / "spectrograms.png", int(sample_rate))
    return save_volume_slices_png(x, out_dir / "slices.png")
