"""Generated audio as written to WAV files (issue 16): each clip's DC offset removed by default, by the
trainer, by ``Run.sample`` and by ``diffkit sample``; kept on request; the engine's tensor untouched."""

import numpy as np
import pytest
import soundfile as sf
import torch

import diffkit
from diffkit.cli import main
from diffkit.generate import sample_seed

# soundfile writes x·32767 rounded and reads back /32768: within this of the float sample.
PCM16 = 2 / 32768


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """A tiny, barely trained class-conditional tones run: its clips carry DC offsets of several hundredths."""
    root = tmp_path_factory.mktemp("audio")
    config = {
        "run": {"dir": str(root / "run"), "seed": 0, "device": "cpu"},
        "data": {"dataset": "tones", "options": {"num_examples": 8, "sample_rate": 4000, "length": 256,
                                                 "num_classes": 2}, "batch_size": 4},
        "model": {"backbone": "unet1d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": [], "cond_dim": 8},
                  "conditioner": {"name": "labels", "options": {"num_classes": 2, "dim": 8}}},
        "diffusion": {"timesteps": 50, "objective": "v"},
        "train": {"steps": 2, "log_every": 1, "ema_start": 0},
        "sample": {"num": 3, "sampler": "ddim", "steps": 3},
    }
    return diffkit.train(config, progress=False)


def _raw(run, index: int, label: int) -> np.ndarray:
    """Sample ``index`` as the engine returns it (what `diffkit sample` draws for it)."""
    generator = torch.Generator().manual_seed(sample_seed(0, index))
    x = run.diffusion().sample(1, sampler="ddim", steps=3, y=torch.tensor([label]), generator=[generator])
    return x[0].double().numpy()


def _shifted(raw: np.ndarray) -> np.ndarray:
    """What "remove" writes, computed here: the mean subtracted, then scaled down if a peak passes 1."""
    shifted = raw - raw.mean(-1, keepdims=True)
    return shifted / max(1.0, np.abs(shifted).max())


def _wav(path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return data.T


def test_sampled_wavs_carry_no_dc_offset_by_default_and_keep_it_on_request(audio_run, tmp_path):
    raws = [_raw(audio_run, i, i % 2) for i in range(3)]
    assert max(abs(r.mean()) for r in raws) > 20 * PCM16  # there is an offset to remove
    assert any(np.abs(r - r.mean()).max() > 1 for r in raws)  # and the shift alone would clip
    default = audio_run.sample(3, out=tmp_path / "default")
    kept = audio_run.sample(3, out=tmp_path / "kept", dc_offset="keep")
    assert default[0].parent != kept[0].parent
    for raw, a, b in zip(raws, default, kept):
        assert np.abs(_wav(b) - raw).max() <= PCM16  # "keep": the clip as sampled
        assert np.abs(_wav(a) - _shifted(raw)).max() <= PCM16
        # No offset is left, and the shift clips nothing: this tiny model's clips sit at ±1, so the shift
        # pushes them past full scale and they are scaled back down to a peak of 1.
        assert abs(_wav(a).mean()) <= PCM16 and np.abs(_wav(a)).max() <= 1.0


def test_the_cli_removes_it_by_default_and_says_why_not_with_input(audio_run, tmp_path, capsys):
    raw = _raw(audio_run, 0, 0)
    out = tmp_path / "cli"
    assert main(["sample", str(audio_run.path), "-n", "1", "--out", str(out), "--no-progress"]) == 0
    assert np.abs(_wav(out / "000000.wav") - _shifted(raw)).max() <= PCM16
    out = tmp_path / "cli-keep"
    assert main(["sample", str(audio_run.path), "-n", "1", "--out", str(out), "--no-progress", "--dc-offset",
                 "keep"]) == 0
    assert np.abs(_wav(out / "000000.wav") - raw).max() <= PCM16
    assert main(["sample", str(audio_run.path), "--input", str(out / "000000.wav"), "--gap", "0.01:0.02",
                 "--dc-offset", "keep"]) == 2
    assert "--dc-offset applies to clips sampled from scratch" in capsys.readouterr().err


def test_the_trainers_samples_pass_through_it(audio_run):
    s = audio_run.config.sample
    assert s.dc_offset == "remove"
    generator = torch.Generator().manual_seed(audio_run.config.run.seed)
    y = torch.arange(s.num) % 2  # every class in turn
    raw = audio_run.diffusion().sample(s.num, sampler=s.sampler, steps=s.steps, y=y, generator=generator).double()
    for i in range(s.num):
        written = _wav(audio_run.samples_dir / f"step_00000002_{i:04d}.wav")
        expected = _shifted(raw[i].numpy())
        assert np.abs(written - expected).max() <= PCM16


def test_removing_the_offset_shifts_a_clip_and_scales_it_only_past_full_scale():
    from diffkit.data import apply_dc_offset

    t = torch.linspace(0, 1, 400)
    quiet = 0.5 * torch.sin(2 * torch.pi * 10 * t) + 0.1  # stays within [-1, 1] once shifted
    pulses = torch.where(torch.sin(2 * torch.pi * 10 * t) > 0.9, 1.0, -0.2)  # mean below 0, peaks at +1
    loud = torch.stack([pulses, 0.3 * torch.sin(2 * torch.pi * 7 * t)])
    out = apply_dc_offset(torch.stack([torch.stack([quiet, quiet]), loud]))
    torch.testing.assert_close(out[0], torch.stack([quiet, quiet]) - quiet.mean())
    assert out.mean(-1).abs().max() < 1e-6
    shifted = loud - loud.mean(-1, keepdim=True)
    assert shifted.abs().max() > 1
    # the stereo clip is scaled as one: both channels by the same factor, its peak exactly 1
    torch.testing.assert_close(out[1], shifted / shifted.abs().max())
    assert out[1].abs().max() == pytest.approx(1.0)
    assert torch.equal(apply_dc_offset(loud, "keep"), loud)
