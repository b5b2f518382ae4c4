import math

import numpy as np
import pytest
import soundfile as sf
import torch

from diffkit.data import AudioFolder, create_dataset


def write(path, samples, rate, subtype=None):
    """``samples`` is (frames,) or (frames, channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples), rate, subtype=subtype)
    return path


def dominant_frequency(x, rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64)))
    return np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()]


def test_resampling_keeps_the_pitch(tmp_path):
    t = np.arange(8000) / 8000
    write(tmp_path / "a440.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000, subtype="FLOAT")
    ds = AudioFolder(tmp_path, sample_rate=16000, length=16000)
    assert ds.sample_rate == 16000 and ds.modality == "audio" and ds.example_shape == (1, 16000)
    x, y = ds[0]
    assert x.shape == (1, 16000) and x.dtype == torch.float32 and y == 0
    assert dominant_frequency(x[0], 16000) == pytest.approx(440, abs=1.0)
    # The amplitude survives too: RMS of a 0.5 sine is 0.5 / sqrt(2).
    assert float(x[0, 1000:-1000].pow(2).mean().sqrt()) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_flac_downsampled(tmp_path):
    t = np.arange(44100) / 44100
    write(tmp_path / "a.flac", 0.4 * np.sin(2 * np.pi * 1000 * t), 44100)
    x, _ = AudioFolder(tmp_path, sample_rate=16000, length=16000)[0]
    assert dominant_frequency(x[0], 16000) == pytest.approx(1000, abs=1.0)


def test_mono_mix_down_and_kept_channels(tmp_path):
    stereo = np.stack([np.full(64, 0.5), np.full(64, -0.25)], axis=1)
    write(tmp_path / "s.wav", stereo, 8000)  # PCM_16 holds 0.5 and -0.25 exactly
    mono, _ = AudioFolder(tmp_path, sample_rate=8000, length=64)[0]
    assert torch.equal(mono, torch.full((1, 64), 0.125))
    both = AudioFolder(tmp_path, sample_rate=8000, length=64, channels=2)
    assert both.example_shape == (2, 64)
    assert torch.equal(both[0][0], torch.tensor([[0.5], [-0.25]]).expand(2, 64))


def test_full_scale_samples_reach_minus_one_and_clipping_of_float_files(tmp_path):
    write(tmp_path / "int.wav", np.array([-32768, 32767, 0, 0], dtype=np.int16), 8000)
    write(tmp_path / "float.wav", np.array([-1.0, 1.0, 1.5, -2.0], dtype=np.float32), 8000, subtype="FLOAT")
    ds = AudioFolder(tmp_path, sample_rate=8000, length=4)
    xs = {p.name: ds[i][0][0] for i, p in enumerate(ds.files)}
    assert torch.equal(xs["int.wav"], torch.tensor([-1.0, 32767 / 32768, 0.0, 0.0]))
    assert torch.equal(xs["float.wav"], torch.tensor([-1.0, 1.0, 1.0, -1.0]))


def test_random_crops_are_slices_drawn_from_torch_rng(tmp_path):
    ramp = np.arange(1000, dtype=np.float32) / 1000
    write(tmp_path / "ramp.wav", ramp, 8000, subtype="FLOAT")
    ds = AudioFolder(tmp_path, sample_rate=8000, length=100)

    def starts():
        out = []
        for _ in range(10):
            x = ds[0][0][0].numpy()
            start = int(round(x[0] * 1000))
            assert np.array_equal(x, ramp[start : start + 100])
            out.append(start)
        return out

    torch.manual_seed(0)
    first = starts()
    torch.manual_seed(0)
    assert starts() == first
    assert len(set(first)) > 5 and all(0 <= s <= 900 for s in first)


def test_short_clips_are_padded_or_skipped(tmp_path, skip_warning):
    write(tmp_path / "short.wav", np.full(50, 0.5, np.float32), 8000, subtype="FLOAT")
    write(tmp_path / "long.wav", np.full(200, 0.25, np.float32), 8000, subtype="FLOAT")
    padded = AudioFolder(tmp_path, sample_rate=8000, length=100)
    x = padded[padded.files.index(tmp_path / "short.wav")][0][0]
    assert torch.equal(x[:50], torch.full((50,), 0.5)) and torch.equal(x[50:], torch.zeros(50))
    ds, message = skip_warning(lambda: AudioFolder(tmp_path, sample_rate=8000, length=100, short="skip"))
    assert [p.name for p in ds.files] == ["long.wav"]
    assert message.startswith("skipped 1 of 2 files") and "short.wav (too short: 50 samples" in message


def test_labels_from_sub_folders(tmp_path):
    for cls, name in [("dog", "d1.wav"), ("cat", "c1.flac"), ("cat", "c2.wav")]:
        write(tmp_path / cls / name, np.zeros(32), 8000)
    ds = create_dataset("audio_folder", root=tmp_path, sample_rate=8000, length=32, labels=True)
    assert ds.classes == ["cat", "dog"]
    assert {p.name: ds[i][1] for i, p in enumerate(ds.files)} == {"c1.flac": 0, "c2.wav": 0, "d1.wav": 1}


def test_uncached_clips_match_cached_ones(tmp_path):
    write(tmp_path / "a.wav", np.linspace(-1, 1, 64), 8000, subtype="FLOAT")
    write(tmp_path / "b.wav", np.linspace(1, -1, 64), 8000, subtype="FLOAT")
    cached = AudioFolder(tmp_path, sample_rate=8000, length=64)
    # Room for one clip only (64 float32 samples): the second is decoded again at each access.
    partly = AudioFolder(tmp_path, sample_rate=8000, length=64, cache_bytes=64 * 4)
    assert partly._cache[0] is not None and partly._cache[1] is None
    assert all(torch.equal(cached[i][0], partly[i][0]) for i in range(2))


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path, data_error):
    def folder(name):
        (tmp_path / name).mkdir()
        return tmp_path / name

    empty = folder("empty")
    data_error(lambda: AudioFolder(empty), "empty", ".wav")

    corrupt = folder("corrupt")
    (corrupt / "noise.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage!")
    data_error(lambda: AudioFolder(corrupt), "noise.wav", "corrupt")

    truncated = folder("truncated")
    write(truncated / "cut.wav", np.zeros(1000), 8000)
    data = (truncated / "cut.wav").read_bytes()
    (truncated / "cut.wav").write_bytes(data[:300])
    data_error(lambda: AudioFolder(truncated, sample_rate=8000, length=8), "cut.wav", "truncated", "300")

    bad_flac = folder("bad_flac")
    write(bad_flac / "cut.flac", np.random.default_rng(0).uniform(-1, 1, 20000), 8000)
    data = (bad_flac / "cut.flac").read_bytes()
    (bad_flac / "cut.flac").write_bytes(data[:30])
    data_error(lambda: AudioFolder(bad_flac, sample_rate=8000, length=8), "cut.flac", "corrupt")

    mono = folder("mono")
    write(mono / "one.wav", np.zeros(16), 8000)
    data_error(lambda: AudioFolder(mono, sample_rate=8000, length=8, channels=2), "one.wav", "1 channel", "expected 2")

    odd = folder("odd")
    write(odd / "odd_rate.wav", np.zeros(16), 44101)
    data_error(lambda: AudioFolder(odd, sample_rate=16000, length=8), "odd_rate.wav", "44101 Hz", "16000 Hz")

    nan = folder("nan")
    write(nan / "nan.wav", np.array([0.0, np.nan, 0.0], np.float32), 8000, subtype="FLOAT")
    data_error(lambda: AudioFolder(nan, sample_rate=8000, length=3), "nan.wav", "NaN")

    silent = folder("silent")
    write(silent / "zero.wav", np.zeros(0), 8000)
    data_error(lambda: AudioFolder(silent, sample_rate=8000, length=3), "zero.wav", "no samples")


def test_skip_counts_every_bad_file_in_one_warning(tmp_path, skip_warning):
    write(tmp_path / "good.wav", np.zeros(16), 8000)
    write(tmp_path / "odd.wav", np.zeros(16), 44101)
    (tmp_path / "junk.flac").write_bytes(b"fLaC nonsense")
    ds, message = skip_warning(lambda: AudioFolder(tmp_path, sample_rate=8000, length=16, on_error="skip"))
    assert len(ds) == 1 and ds[0][0].shape == (1, 16)
    assert message.startswith(f"skipped 2 of 3 files in {tmp_path}: junk.flac (") and "odd.wav (sample rate 44101" in message


def test_options_are_checked():
    with pytest.raises(ValueError, match="short"):
        AudioFolder(".", short="trim")
    with pytest.raises(ValueError, match="positive"):
        AudioFolder(".", length=0)


# --- generated clips' DC offset (issue 16) ---------------------------------------------------------


def _tone(length: int, omega: float, phase: float, amplitude: float) -> torch.Tensor:
    n = torch.arange(length, dtype=torch.float64)
    return amplitude * torch.sin(omega * n + phase)


def _tone_mean(length: int, omega: float, phase: float, amplitude: float) -> float:
    """Closed form of mean(A·sin(ω·n + φ)), n = 0 … N-1: A·sin(φ + ω(N-1)/2)·sin(Nω/2) / (N·sin(ω/2))."""
    return amplitude * math.sin(phase + omega * (length - 1) / 2) * math.sin(length * omega / 2) / (
        length * math.sin(omega / 2))


@pytest.mark.parametrize("periods", [10.0, 10.37])
def test_remove_dc_takes_out_a_known_offset_and_leaves_the_tone(periods):
    from diffkit.data import remove_dc

    length, amplitude, phase = 1000, 0.6, 0.9
    omega = 2 * math.pi * periods / length
    tone = _tone(length, omega, phase, amplitude)
    offsets = torch.tensor([[0.3], [-0.05]], dtype=torch.float64)  # one per channel
    x = (tone + offsets)[None].repeat(3, 1, 1)  # (B, C, L)
    out = remove_dc(x)
    assert out.shape == x.shape
    assert out.mean(-1).abs().max() < 1e-12
    # What goes is the offset plus the tone's own mean over a partial period, no more.
    expected = tone - _tone_mean(length, omega, phase, amplitude)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-12)
    shift = abs(_tone_mean(length, omega, phase, amplitude))
    assert shift < 1e-12 if periods == int(periods) else 1e-4 < shift <= amplitude / (length * math.sin(omega / 2))
    # Pitch and amplitude: every DFT bin but the DC one is untouched (a constant lives in bin 0 alone).
    spec_in, spec_out = (torch.fft.rfft(v[0, 0]) for v in (x, out))
    assert torch.allclose(spec_out[1:], spec_in[1:], atol=1e-9) and abs(spec_out[0]) < 1e-9
    assert int(spec_out.abs().argmax()) == round(periods)


def test_remove_dc_works_on_any_rank_along_the_last_axis():
    from diffkit.data import remove_dc

    for shape in [(64,), (2, 64), (3, 2, 64), (2, 1, 2, 64)]:
        x = torch.randn(shape) + 5
        out = remove_dc(x)
        assert out.shape == x.shape and out.mean(-1).abs().max() < 1e-5
        assert torch.allclose(x - out, x.mean(-1, keepdim=True).expand_as(x), atol=1e-5)


def test_apply_dc_offset_keeps_or_removes_and_names_the_choices():
    from diffkit.data import DC_OFFSETS, DEFAULT_DC_OFFSET, apply_dc_offset

    x = torch.randn(2, 1, 32) + 0.5
    assert DEFAULT_DC_OFFSET == "remove" and set(DC_OFFSETS) == {"remove", "keep"}
    assert apply_dc_offset(x, "keep", "keep") is x
    assert apply_dc_offset(x).mean(-1).abs().max() < 1e-6
    assert not torch.equal(apply_dc_offset(x, "keep"), x)  # the Nyquist-rate component still goes by default
    with pytest.raises(ValueError, match=r"'dc_offset' must be one of \['remove', 'keep'\], got 'highpass'"):
        apply_dc_offset(x, "highpass")
    with pytest.raises(ValueError, match=r"'nyquist' must be one of \['remove', 'keep'\], got 'lowpass'"):
        apply_dc_offset(x, "keep", "lowpass")


@pytest.mark.parametrize("length", [1000, 1001])
def test_remove_nyquist_takes_out_a_known_alternation_and_leaves_the_tone_and_its_mean(length):
    from diffkit.data import remove_nyquist

    omega = 2 * math.pi * 10.37 / length
    tone = _tone(length, omega, 0.9, 0.6) + 0.05  # a partial period and an offset: a mean of its own
    signs = torch.tensor([(-1.0) ** n for n in range(length)], dtype=torch.float64)
    amplitudes = torch.tensor([[0.01], [-0.3]], dtype=torch.float64)  # one per channel
    x = (tone + amplitudes * signs)[None].repeat(2, 1, 1)  # (B, C, L)
    out = remove_nyquist(x)
    assert out.shape == x.shape
    # The alternation is gone: nothing left along it once the mean is set aside, the mean is the clip's own.
    centred = signs - signs.mean()
    assert (out * centred).sum(-1).abs().max() < 1e-9
    assert torch.allclose(out.mean(-1), x.mean(-1), atol=1e-12)
    if length % 2 == 0:
        # An even length holds (-1)^n in the Nyquist bin alone: that bin goes to 0, every other stays as it was.
        spec_in, spec_out = (torch.fft.rfft(v[0, 1]) for v in (x, out))
        assert abs(spec_out[-1]) < 1e-9 < abs(spec_in[-1])
        assert torch.allclose(spec_out[:-1], spec_in[:-1], atol=1e-9)
    # What is taken out is the fit of the alternation (closed form: <x, c> / <c, c>), channel by channel.
    fit = (x * centred).sum(-1, keepdim=True) / centred.square().sum()
    assert torch.allclose(x - out, fit * centred, atol=1e-12)
    assert torch.allclose(fit[0, :, 0], amplitudes[:, 0] + (tone * centred).sum() / centred.square().sum())


def test_remove_nyquist_works_on_any_rank_and_both_removals_scale_only_past_full_scale():
    from diffkit.data import apply_dc_offset, remove_nyquist

    for shape in [(64,), (2, 64), (3, 2, 63), (2, 1, 2, 64)]:
        x = torch.randn(shape)
        out = remove_nyquist(x)
        signs = 1.0 - 2.0 * (torch.arange(shape[-1]) % 2)
        assert out.shape == x.shape and (out * (signs - signs.float().mean())).sum(-1).abs().max() < 1e-4
    signs = 1.0 - 2.0 * (torch.arange(400) % 2).float()
    tone = 0.9 * torch.sin(2 * math.pi * 10 * torch.arange(400) / 400)  # whole periods: no alternation of its own
    clip = torch.stack([tone + 0.3 * signs, 0.5 * tone])[None]  # (1, 2, L): the alternation takes it past 1
    assert clip.abs().max() > 1
    kept_dc = apply_dc_offset(clip, "keep", "remove")
    expected = torch.stack([tone, 0.5 * tone])[None]
    torch.testing.assert_close(kept_dc, expected / max(1.0, float(expected.abs().max())), atol=1e-5, rtol=0)
    loud = torch.stack([1.2 * tone + 0.1 * signs, 0.5 * tone])[None]
    out = apply_dc_offset(loud, "keep", "remove")  # past full scale once removed: both channels scaled as one
    assert out.abs().max() == pytest.approx(1.0)
    removed = torch.stack([1.2 * tone, 0.5 * tone])
    torch.testing.assert_close(out[0], removed / removed.abs().max(), atol=1e-5, rtol=0)
    assert apply_dc_offset(loud, "keep", "keep") is loud
