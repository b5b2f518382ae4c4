"""Writing samples back to files a person can open."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio
from PIL import Image

from ..files import atomic_path
from .audio import DEFAULT_DC_OFFSET, DEFAULT_NOISE_GATE, DEFAULT_NYQUIST, as_written


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, C) uint8, clipped to the valid range."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _grid(tiles: list[np.ndarray], nrow: int, pad: int = 2) -> np.ndarray:
    """Lay (h, w, c) uint8 tiles out row by row, ``nrow`` per row, each in a cell of the largest tile's size."""
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    c = tiles[0].shape[2]
    rows = math.ceil(len(tiles) / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def _save_png(pixels: np.ndarray, path: Union[str, os.PathLike]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(tmp)
    return path


def save_image_grid(
    x: torch.Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None, pad: int = 2, scale: int = 1
) -> Path:
    """Save a batch of images (B, C, H, W) in [-1, 1] as one PNG grid, ``nrow`` images per row, each
    enlarged ``scale`` times by pixel repetition (so 8×8 digits stay crisp and visible)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid expects (B, 1 or 3, H, W), got {tuple(x.shape)}")
    if scale < 1:
        raise ValueError(f"save_image_grid: scale must be >= 1, got {scale}")
    images = to_uint8_images(x)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return _save_png(_grid(list(images), nrow, pad), path)


def save_image(x: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Save one image (C, H, W) in [-1, 1] as a PNG file."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (1 or 3, H, W), got {tuple(x.shape)}")
    return _save_png(to_uint8_images(x[None])[0], path)


def save_images(x: torch.Tensor, directory: Union[str, os.PathLike], stem: str = "image") -> list[Path]:
    """Save each image of a batch (B, C, H, W) in [-1, 1] as ``directory/{stem}_{i:04d}.png``."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_images expects (B, 1 or 3, H, W), got {tuple(x.shape)}")
    return [_save_png(img, Path(directory) / f"{stem}_{i:04d}.png") for i, img in enumerate(to_uint8_images(x))]


def save_wav(x: torch.Tensor, path: Union[str, os.PathLike], sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Save one waveform (C, L) in [-1, 1] as a WAV file, 16-bit PCM unless ``subtype`` names another of
    soundfile's WAV formats ("PCM_24", "FLOAT", …)."""
    if x.ndim != 2:
        raise ValueError(f"save_wav expects one waveform (C, L), got {tuple(x.shape)}")
    path = Path(path)
    # soundfile scales floats by 32767 and clips, so +1 and -1 both survive as full-scale samples.
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x.detach().cpu().to(_wav_dtype(x)).clamp(-1, 1).T.numpy(), int(sample_rate), subtype=subtype,
                 format="WAV")
    return path


def _wav_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 samples are written from float64 (32-bit PCM and DOUBLE hold more than float32 does)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def save_volume(x: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Save one volume (C, D, H, W) in [-1, 1] as a float32 ``.npy`` array of the same shape."""
    if x.ndim != 4:
        raise ValueError(f"save_volume expects one volume (C, D, H, W), got {tuple(x.shape)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        np.save(tmp, x.detach().float().cpu().clamp(-1, 1).numpy())
    return path


# A dark-to-bright ramp (black, purple, red, orange, pale yellow) so that loudness reads at a glance.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


_MARK = np.array([0, 255, 255], dtype=np.uint8)  # cyan: absent from the ramp


def _colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along ``_RAMP``."""
    stops = np.linspace(0, 1, len(_RAMP))
    return np.stack([np.interp(values, stops, _RAMP[:, k]) for k in range(3)], axis=-1).round().astype(np.uint8)


def save_spectrogram_png(
    x: torch.Tensor,
    path: Union[str, os.PathLike],
    sample_rate: int,
    n_mels: int = 64,
    top_db: float = 80.0,
    marks: Sequence[tuple[int, int]] = (),
) -> Path:
    """Save mel spectrograms of a waveform (C, L) or a batch (B, C, L) as one PNG, one example per row.

    Channels are mixed to mono; loudness is in dB, the batch's loudest bin brightest and anything
    ``top_db`` below it black; low frequencies at the bottom. ``marks`` are (start, stop) sample ranges
    (e.g. what inpainting filled) drawn as a cyan bar over the top rows and cyan edges.
    """
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"save_spectrogram_png expects (C, L) or (B, C, L), got {tuple(x.shape)}")
    length = x.shape[-1]
    if length < 32:
        raise ValueError(f"save_spectrogram_png needs at least 32 samples, got {length}")
    n_fft = min(1024, 2 ** int(math.log2(length)))
    # Fewer mel bands for short windows, so that no band falls between two FFT bins and stays empty.
    n_mels = max(1, min(n_mels, n_fft // 16))
    # About 256 frames whatever the length, so short clips still give a picture wide enough to read.
    hop = max(1, min(n_fft // 4, length // 256))
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=int(sample_rate), n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    power = mel(x.detach().float().cpu().clamp(-1, 1).mean(dim=1))  # (B, n_mels, frames)
    db = 10 * torch.log10(power.clamp_min(1e-10))
    db = db.clamp_min(db.max() - top_db)
    level = ((db - db.min()) / (db.max() - db.min()).clamp_min(1e-6)).flip(1).numpy()
    rows = [_colourise(s) for s in level]
    for start, stop in marks:
        # Frame f is centred on sample f·hop (torchaudio's center=True).
        first, last = max(0, round(start / hop)), min(level.shape[-1] - 1, round(stop / hop))
        for row in rows:
            row[: max(1, len(row) // 16), first : last + 1] = _MARK
            row[:, [first, last]] = _MARK
    return _save_png(_grid(rows, nrow=1), path)


def save_volume_slices_png(x: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Save the middle slices of a volume (C, D, H, W) or a batch (B, C, D, H, W) as one PNG.

    One row per example and channel, holding the slices through the centre across D, H and W.
    """
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise ValueError(f"save_volume_slices_png expects (C, D, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    _, _, d, h, w = x.shape
    tiles = []
    for volume in x.flatten(0, 1):  # (D, H, W) per example and channel
        for plane in (volume[d // 2], volume[:, h // 2], volume[:, :, w // 2]):
            tiles.append(plane.numpy()[..., None])
    return _save_png(_grid(tiles, nrow=3), path)


def save_samples(
    x: torch.Tensor,
    modality: str,
    directory: Union[str, os.PathLike],
    *,
    stem: str = "sample",
    sample_rate: Optional[int] = None,
    dc_offset: str = DEFAULT_DC_OFFSET,
    noise_gate_db: float = DEFAULT_NOISE_GATE,
    nyquist: str = DEFAULT_NYQUIST,
) -> list[Path]:
    """Write a batch of generated samples in its modality's own form; returns the paths written.

    image (B, C, H, W): one grid PNG ``{stem}.png``. audio (B, C, L): ``{stem}_{i:04d}.wav`` per example
    and ``{stem}_spectrogram.png`` (needs ``sample_rate``), each clip's DC offset removed or kept as
    ``dc_offset`` says (:data:`diffkit.data.audio.DC_OFFSETS`) and its Nyquist-rate component as ``nyquist``
    says, then its parts ``noise_gate_db`` dB below its
    loudest silenced (0: off; :func:`diffkit.data.audio.noise_gate`). volume (B, C, D, H, W): ``{stem}_{i:04d}.npy``
    per example and ``{stem}_slices.png``.
    """
    directory = Path(directory)
    ranks = {"image": 4, "audio": 3, "volume": 5}
    if modality not in ranks:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(ranks)}")
    if x.ndim != ranks[modality]:
        raise ValueError(f"{modality} samples must have rank {ranks[modality]} (B, C, ...), got shape {tuple(x.shape)}")
    if modality == "image":
        # Small images (8×8 digits, 16×16 shapes) are enlarged to at least 64 pixels a side to be seen.
        scale = max(1, 64 // max(x.shape[2:]))
        return [save_image_grid(x, directory / f"{stem}.png", scale=scale)]
    if modality == "audio":
        if sample_rate is None:
            raise ValueError("save_samples: audio needs 'sample_rate'")
        x = as_written(x, dc_offset, noise_gate_db, sample_rate, nyquist)
        paths = [save_wav(wave, directory / f"{stem}_{i:04d}.wav", sample_rate) for i, wave in enumerate(x)]
        return paths + [save_spectrogram_png(x, directory / f"{stem}_spectrogram.png", sample_rate)]
    paths = [save_volume(volume, directory / f"{stem}_{i:04d}.npy") for i, volume in enumerate(x)]
    return paths + [save_volume_slices_png(x, directory / f"{stem}_slices.png")]
