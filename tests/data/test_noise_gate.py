"""diffkit.data.noise_gate: silences the parts of a clip more than N dB under its loudest frame (issue 16)."""

import math

import numpy as np
import pytest
import torch

from diffkit.data import noise_gate


def _reference(clip: np.ndarray, below_db: float, sample_rate: int) -> np.ndarray:
    """The documented gate, written out with loops: 32 ms frames every 16 ms, all channels together, gain 1 or 0
    at each frame's centre and linear in between."""
    channels, length = clip.shape
    hop = round(sample_rate * 0.016)
    centres = range(0, length + 1, hop)
    levels = []
    for c in centres:
        lo, hi = max(0, c - hop), min(length, c + hop)
        levels.append(10 * math.log10(max((clip[:, lo:hi] ** 2).sum() / (channels * 2 * hop), 1e-30)))
    keep = [1.0 if lv > max(levels) - below_db else 0.0 for lv in levels]
    gain = np.empty(length)
    for n in range(length):
        f, frac = divmod(n, hop)
        nxt = keep[f + 1] if f + 1 < len(keep) else keep[-1]
        gain[n] = keep[f] + (nxt - keep[f]) * frac / hop
    return clip * gain


def _speech_like(sample_rate: int = 8000, length: int = 8000, seed: int = 0) -> torch.Tensor:
    """A tone at -9 dBFS from 0.25 s to 0.75 s over a hiss at -80 dBFS: (1, length)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    tone = 0.5 * torch.sin(2 * math.pi * 220 * t) * ((t >= 0.25) & (t < 0.75))
    return (tone + 1e-4 * torch.randn(length, generator=g, dtype=torch.float64))[None]


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_it_matches_the_documented_gate_written_with_loops(sample_rate):
    x = _speech_like(sample_rate, length=sample_rate)
    out = noise_gate(x, 40, sample_rate)
    np.testing.assert_allclose(out.numpy(), _reference(x.numpy(), 40, sample_rate), rtol=0, atol=1e-15)
    hop = round(sample_rate * 0.016)
    first, last = sample_rate // 4, 3 * sample_rate // 4
    # The hiss away from the tone is gone exactly; the tone, a frame in from its edges, is untouched bit for bit.
    assert torch.count_nonzero(out[:, : first - 2 * hop]) == 0 and torch.count_nonzero(out[:, last + 2 * hop:]) == 0
    assert torch.equal(out[:, first + hop: last - hop], x[:, first + hop: last - hop])


def test_clips_within_the_range_are_left_exactly_as_they_are():
    t = torch.arange(4096) / 8000
    # 26 dB of swell, as in speech: nothing is more than 40 dB under the loudest frame.
    swell = torch.sin(2 * math.pi * 150 * t) * (0.05 + 0.95 * torch.sin(math.pi * t / t[-1]))
    x = torch.stack([swell, 0.5 * swell])[None]
    assert torch.equal(noise_gate(x, 40, 8000), x)


def test_a_silent_clip_stays_silent_and_zero_db_is_off():
    zeros = torch.zeros(2, 1, 1000)
    assert torch.equal(noise_gate(zeros, 40, 8000), zeros)
    x = _speech_like()
    assert noise_gate(x, 0, 8000) is x
    assert noise_gate(x, 0.0, 8000) is x


def test_the_channels_of_a_clip_are_gated_together():
    x = _speech_like()
    stereo = torch.cat([x, 1e-4 * torch.ones_like(x)])  # the right channel a constant -80 dBFS
    out = noise_gate(stereo, 40, 8000)
    np.testing.assert_allclose(out.numpy(), _reference(stereo.numpy(), 40, 8000), rtol=0, atol=1e-15)
    # Where the left channel's tone opens the gate, the right channel's quiet signal passes too.
    assert torch.equal(out[1, 3000:5000], stereo[1, 3000:5000])
    assert torch.count_nonzero(out[1, :1500]) == 0


def test_any_leading_shape_and_each_clip_against_its_own_loudest():
    a, b = _speech_like(seed=1), 0.01 * _speech_like(seed=2)  # b 40 dB quieter than a overall
    batch = torch.stack([torch.stack([a, b]), torch.stack([b, a])])  # (2, 2, 1, L)
    out = noise_gate(batch, 40, 8000)
    assert out.shape == batch.shape
    for i in range(2):
        for j in range(2):
            assert torch.equal(out[i, j], noise_gate(batch[i, j], 40, 8000))
    # b's tone is kept: it is judged against b's own loudest frame, not a's.
    assert torch.equal(out[0, 1, :, 3000:5000], b[:, 3000:5000])


@pytest.mark.parametrize("bad", [-1, float("nan"), True, "40"])
def test_bad_thresholds_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="below_db must be a number of dB >= 0"):
        noise_gate(_speech_like(), bad, 8000)


def test_a_clip_without_a_channel_axis_is_refused():
    with pytest.raises(ValueError, match=r"\(…, C, L\)"):
        noise_gate(torch.zeros(100), 40, 8000)
