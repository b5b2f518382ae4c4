"""A folder of WAV / FLAC files as a dataset of (C, length) waveforms in [-1, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional

from .folder import DEFAULT_CACHE_BYTES, DataError, FolderDataset, PathLike, SkipFile, check_choice

AUDIO_EXTENSIONS = (".wav", ".flac")
# torchaudio's polyphase resampler builds a (new/g) x (orig/g) kernel, g = gcd of the two rates;
# above this many entries the kernel would take gigabytes, so such a pair of rates is refused.
MAX_RESAMPLE_KERNEL = 1 << 22

# What happens to a generated clip's DC offset (its mean over time, per channel) before it is written as
# a WAV file. A backbone that has not learnt to remove the DC of its input (one coordinate of L in the
# loss) leaves x̂0 with most of x_t's, so every sampler carries the starting noise's per-clip mean (std
# 1/sqrt(L): 0.016 at 4,096 samples) through to the clip, and guidance adds its own; real recordings have
# almost none (benchmarks/results/audio_dc.md). "remove" subtracts each clip's mean; "keep" writes the clip
# as sampled. GaussianDiffusion.sample() always returns the clip as sampled.
DC_OFFSETS: tuple[str, ...] = ("remove", "keep")
DEFAULT_DC_OFFSET = "remove"
# The same for the clip's Nyquist-rate component (+a, -a, +a, … over time, per channel): a backbone that folds
# 2 samples into channels (unet1d's patch_size 2, the audio-p2 preset) cannot reach the folded channels' means,
# the clip's DC and this, so the starting noise's stays in the clip: about 0.01 on the tones example, a
# constant tone at half the sample rate (real clips: 0.00005), the strongest bin of a quiet chirp's end
# (benchmarks/results/audio_quality.md). "remove" subtracts it, "keep" writes the clip as sampled.
NYQUIST_CHOICES: tuple[str, ...] = ("remove", "keep")
DEFAULT_NYQUIST = "remove"


def can_resample(orig: int, new: int) -> bool:
    """Whether torchaudio can resample between these rates with a kernel of reasonable size."""
    if orig <= 0 or new <= 0:
        return False
    g = math.gcd(orig, new)
    return (orig // g) * (new // g) <= MAX_RESAMPLE_KERNEL


def _check_riff_size(path: Path) -> None:
    """Refuse a WAV file shorter than its RIFF header declares: libsndfile would quietly read what is left."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # not plain RIFF/WAVE (FLAC, RF64, ...): libsndfile judges it
    declared = int.from_bytes(head[4:8], "little") + 8
    actual = path.stat().st_size
    # Streaming writers leave the size 0 or 0xFFFFFFFF when they cannot seek back; nothing to compare then.
    if declared - 8 not in (0, 0xFFFFFFFF) and actual < declared:
        raise DataError(
            path, f"truncated: its header declares {declared} bytes but the file has {actual}; expected a complete WAV file"
        )


def remove_dc(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its mean over the last (time) axis, for each example and channel: any shape ``(…, L)``.

    A tone over whole periods is unchanged: its mean is already 0.
    """
    return x - x.mean(dim=-1, keepdim=True)


def remove_nyquist(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its Nyquist-rate component over the last (time) axis, for each example and channel.

    The component is the least-squares fit of the alternating sequence +1, -1, +1, … taken about its own mean
    (so that an odd length leaves the clip's mean as it was); a clip without one is unchanged.
    """
    n = x.shape[-1]
    alternating = 1.0 - 2.0 * (torch.arange(n, device=x.device) % 2).to(x.dtype)
    alternating = alternating - alternating.mean()
    amplitude = (x * alternating).sum(dim=-1, keepdim=True) / alternating.square().sum().clamp_min(1e-12)
    return x - amplitude * alternating


def apply_dc_offset(x: torch.Tensor, dc_offset: str = DEFAULT_DC_OFFSET, nyquist: str = DEFAULT_NYQUIST) -> torch.Tensor:
    """Generated clips ``(…, C, L)`` as they are written: each channel's mean removed (``"remove"``) or kept
    (``"keep"``), and its Nyquist-rate component removed or kept as ``nyquist`` says (:func:`remove_nyquist`).

    Removing either can push a peak past full scale (a clip at the sampler's ±1 bound shifts by its
    offset); such a clip is then scaled down, all its channels alike, until its peak is exactly 1, so that
    the writer's clamp to [-1, 1] neither clips it nor brings an offset back. Clips that stay within
    [-1, 1] are only shifted.
    """
    check_choice("dc_offset", dc_offset, DC_OFFSETS)
    check_choice("nyquist", nyquist, NYQUIST_CHOICES)
    if dc_offset == "keep" and nyquist == "keep":
        return x
    if nyquist == "remove":
        x = remove_nyquist(x)
    if dc_offset == "remove":
        x = remove_dc(x)
    peak = x.abs().amax(dim=(-2, -1) if x.ndim >= 2 else -1, keepdim=True)
    return x / peak.clamp_min(1.0)


# A noise gate on generated clips: 0 leaves them as sampled. A network's error in a clip's pauses is a
# hiss (-59 dBFS under spoken digits, where the real clips are digital silence); a gate silences the parts
# quieter than the clip's loudest by more than this many dB, as a recording engineer's gate does. At 40 dB
# it leaves real spoken digits as they are (benchmarks/results/speech_digits.md).
DEFAULT_NOISE_GATE = 0.0
GATE_HOP_SECONDS = 0.016  # frames of twice this, centred every hop; the gain ramps linearly between centres


def check_noise_gate(below_db: object, name: str = "noise_gate") -> None:
    """Refuse a gate depth that is not a finite number of dB >= 0, naming it ``name``."""
    if isinstance(below_db, bool) or not isinstance(below_db, (int, float)) or not 0 <= below_db < math.inf:
        raise ValueError(f"{name} must be a number of dB >= 0 (0: off), got {below_db!r}")


def as_written(x: torch.Tensor, dc_offset: str, below_db: float, sample_rate: int,
               nyquist: str = DEFAULT_NYQUIST) -> torch.Tensor:
    """Generated clips ``(…, C, L)`` as they are written to WAV: :func:`apply_dc_offset`, then :func:`noise_gate`."""
    return noise_gate(apply_dc_offset(x, dc_offset, nyquist), below_db, sample_rate)


def noise_gate(x: torch.Tensor, below_db: float, sample_rate: int) -> torch.Tensor:
    """Clips ``(…, C, L)`` with their frames more than ``below_db`` dB quieter than their loudest frame silenced.

    A frame is 32 ms (all channels together), one centred every 16 ms; each frame's gain is 1 (kept) or 0
    (silenced), ramping linearly from one centre to the next, so a kept stretch is exactly unchanged and an
    edge fades over 16 ms instead of clicking. ``below_db = 0`` returns ``x`` itself.
    """
    check_noise_gate(below_db, "noise_gate: below_db")
    if below_db == 0:
        return x
    if x.ndim < 2:
        raise ValueError(f"noise_gate: clips must have shape (…, C, L), got {tuple(x.shape)}")
    hop = max(1, round(sample_rate * GATE_HOP_SECONDS))
    length = x.shape[-1]
    clips = x.reshape(-1, *x.shape[-2:])
    # Frame f covers samples [f·hop - hop, f·hop + hop): centred on f·hop, zeros beyond the clip's ends.
    frames = F.pad(clips, (hop, hop)).unfold(-1, 2 * hop, hop)  # (N, C, frames, 2·hop)
    power = frames.float().square().mean(dim=(1, 3))  # (N, frames)
    level = 10 * torch.log10(power.clamp_min(1e-30))
    keep = (level > level.amax(dim=-1, keepdim=True) - below_db).to(x.dtype)
    keep = torch.cat([keep, keep[:, -1:]], dim=-1)  # the last centre's gain also beyond it
    n = torch.arange(length, device=x.device)
    frac = (n % hop).to(x.dtype) / hop
    k0, k1 = keep[:, n // hop], keep[:, n // hop + 1]
    gain = k0 + (k1 - k0) * frac  # (N, L); exactly 1 between two kept centres
    return (clips * gain[:, None, :]).reshape(x.shape)


class AudioFolder(FolderDataset):
    """Every ``.wav`` / ``.flac`` under ``root`` as random crops of ``length`` samples at ``sample_rate``.

    ``channels=1`` mixes every file down to mono (the mean of its channels); a larger ``channels``
    keeps the file's channels and requires exactly that many. Files at another rate are resampled
    with ``torchaudio.functional.resample``. A clip shorter than ``length`` is padded with silence at
    its end (``short="pad"``) or left out with a warning (``short="skip"``). Decoded, resampled clips
    are cached in memory up to ``cache_bytes``; the rest are decoded again at each access. Float
    files with samples beyond [-1, 1] are clipped. With ``labels`` the class is the sub-folder.
    """

    modality = "audio"
    extensions = AUDIO_EXTENSIONS
    file_kind = "WAV or FLAC file"

    def __init__(
        self,
        root: PathLike,
        sample_rate: int = 16000,
        length: int = 16384,
        channels: int = 1,
        short: str = "pad",
        labels: bool = False,
        on_error: str = "raise",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if sample_rate <= 0 or length <= 0 or channels <= 0:
            raise ValueError(
                f"audio_folder: 'sample_rate', 'length' and 'channels' must be positive, got {sample_rate}, {length}, {channels}"
            )
        check_choice("short", short, ("pad", "skip"))
        self.sample_rate = int(sample_rate)
        self.length = int(length)
        self.channels = int(channels)
        self.short = short
        self.example_shape = (self.channels, self.length)
        self._scan(root, labels, on_error, cache_bytes)

    def load(self, path: Path) -> torch.Tensor:
        _check_riff_size(path)
        info = sf.info(str(path))  # header first: cheap checks before decoding
        if self.channels > 1 and info.channels != self.channels:
            raise DataError(path, f"has {info.channels} channel(s); expected {self.channels}")
        if info.samplerate != self.sample_rate and not can_resample(info.samplerate, self.sample_rate):
            raise DataError(
                path,
                f"sample rate {info.samplerate} Hz cannot be resampled to {self.sample_rate} Hz "
                f"(no usable common factor); expected a rate such as {self.sample_rate} Hz",
            )
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
        if data.shape[0] == 0:
            raise DataError(path, f"holds no samples; expected at least 1 (and {self.length} to avoid padding)")
        if not np.isfinite(data).all():
            raise DataError(path, "holds NaN or infinite samples; expected finite values in [-1, 1]")
        x = torch.from_numpy(np.ascontiguousarray(data.T))
        if self.channels == 1:
            x = x.mean(dim=0, keepdim=True)
        if rate != self.sample_rate:
            x = torchaudio.functional.resample(x, rate, self.sample_rate)
        if x.shape[-1] < self.length:
            if self.short == "skip":
                raise SkipFile(f"too short: {x.shape[-1]} samples at {self.sample_rate} Hz < length {self.length}")
            x = F.pad(x, (0, self.length - x.shape[-1]))
        return x.clamp_(-1, 1).contiguous()

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        start = int(torch.randint(0, x.shape[-1] - self.length + 1, ()))
        return x[:, start : start + self.length]
