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


def _raw(run, index: int, label=None) -> np.ndarray:
    """Sample ``index`` as the engine returns it (what `diffkit sample` draws for it); ``label``: conditional runs."""
    generator = torch.Generator().manual_seed(sample_seed(0, index))
    y = None if label is None else torch.tensor([label])
    x = run.diffusion().sample(1, sampler="ddim", steps=3, y=y, generator=[generator])
    return x[0].double().numpy()


def _shifted(raw: np.ndarray, nyquist: bool = True) -> np.ndarray:
    """What "remove" writes, computed here: the mean subtracted (and by default the least-squares fit of
    +1, -1, +1, … about its mean: the Nyquist-rate component), then scaled down if a peak passes 1."""
    shifted = raw - raw.mean(-1, keepdims=True)
    if nyquist:
        signs = (-1.0) ** np.arange(raw.shape[-1])
        signs = signs - signs.mean()
        fit, *_ = np.linalg.lstsq(signs[:, None], shifted.T, rcond=None)
        shifted = shifted - fit.T * signs
    return shifted / max(1.0, np.abs(shifted).max())


def _wav(path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return data.T


def test_sampled_wavs_carry_no_dc_offset_by_default_and_keep_it_on_request(audio_run, tmp_path):
    raws = [_raw(audio_run, i, i % 2) for i in range(3)]
    assert max(abs(r.mean()) for r in raws) > 20 * PCM16  # there is an offset to remove
    assert any(np.abs(r - r.mean()).max() > 1 for r in raws)  # and the shift alone would clip
    default = audio_run.sample(3, out=tmp_path / "default")
    kept = audio_run.sample(3, out=tmp_path / "kept", dc_offset="keep", nyquist="keep")
    mean_only = audio_run.sample(3, out=tmp_path / "mean-only", nyquist="keep")
    assert len({default[0].parent, kept[0].parent, mean_only[0].parent}) == 3
    for raw, a, b, c in zip(raws, default, kept, mean_only):
        assert np.abs(_wav(b) - raw).max() <= PCM16  # "keep": the clip as sampled
        assert np.abs(_wav(a) - _shifted(raw)).max() <= PCM16
        assert np.abs(_wav(c) - _shifted(raw, nyquist=False)).max() <= PCM16
        # there was a Nyquist-rate component to remove, and none is left in the default's WAV
        signs = (-1.0) ** np.arange(raw.shape[-1])
        assert abs((raw * signs).mean()) > 10 * PCM16 and abs((_wav(a) * signs).mean()) <= PCM16
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
                 "keep", "--nyquist", "keep"]) == 0
    assert np.abs(_wav(out / "000000.wav") - raw).max() <= PCM16
    out = tmp_path / "cli-mean-only"
    assert main(["sample", str(audio_run.path), "-n", "1", "--out", str(out), "--no-progress", "--nyquist",
                 "keep"]) == 0
    assert np.abs(_wav(out / "000000.wav") - _shifted(raw, nyquist=False)).max() <= PCM16
    assert main(["sample", str(audio_run.path), "--input", str(out / "000000.wav"), "--gap", "0.01:0.02",
                 "--dc-offset", "keep"]) == 2
    assert "--dc-offset applies to clips sampled from scratch" in capsys.readouterr().err
    assert main(["sample", str(audio_run.path), "--input", str(out / "000000.wav"), "--gap", "0.01:0.02",
                 "--nyquist", "remove"]) == 2
    assert "--nyquist applies to clips sampled from scratch" in capsys.readouterr().err
    assert main(["sample", str(audio_run.path), "-n", "1", "--nyquist", "lowpass"]) == 2
    assert "--nyquist: invalid choice: 'lowpass'" in capsys.readouterr().err


def test_the_trainers_samples_pass_through_it(audio_run):
    s = audio_run.config.sample
    assert s.dc_offset == "remove" and s.nyquist == "remove"
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
    out = apply_dc_offset(torch.stack([torch.stack([quiet, quiet]), loud]), nyquist="keep")
    torch.testing.assert_close(out[0], torch.stack([quiet, quiet]) - quiet.mean())
    assert out.mean(-1).abs().max() < 1e-6
    shifted = loud - loud.mean(-1, keepdim=True)
    assert shifted.abs().max() > 1
    # the stereo clip is scaled as one: both channels by the same factor, its peak exactly 1
    torch.testing.assert_close(out[1], shifted / shifted.abs().max())
    assert out[1].abs().max() == pytest.approx(1.0)
    assert torch.equal(apply_dc_offset(loud, "keep", "keep"), loud)


# --- the noise gate (issue 16): the example's [sample] noise_gate, Run.sample, diffkit sample, the trainer --------

def _gated(raw: np.ndarray, below_db: float, sample_rate: int = 4000) -> np.ndarray:
    """What a gated WAV holds, computed here from the engine's clip: the offset removed, then the gate."""
    from diffkit.data import noise_gate

    return noise_gate(torch.from_numpy(_shifted(raw)), below_db, sample_rate).numpy()


def test_run_sample_and_the_cli_gate_on_request(audio_run, tmp_path):
    raw = _raw(audio_run, 0, 0)
    # 3 dB: this barely trained model's clips are loud throughout, so only a shallow gate silences anything.
    expected = _gated(raw, 3)
    assert np.abs(expected - _shifted(raw)).max() > 0.1  # the gate changes this clip
    paths = audio_run.sample(1, out=tmp_path / "api", noise_gate=3)
    assert np.abs(_wav(paths[0]) - expected).max() <= PCM16
    out = tmp_path / "cli"
    assert main(["sample", str(audio_run.path), "-n", "1", "--out", str(out), "--no-progress", "--noise-gate", "3"]) == 0
    assert np.abs(_wav(out / "000000.wav") - expected).max() <= PCM16
    # 0 is off, and the default folder of ungated samples keeps its name.
    ungated = audio_run.sample(1, noise_gate=0)
    assert ungated[0].parent == audio_run.sample(1)[0].parent != audio_run.sample(1, noise_gate=3)[0].parent
    assert np.abs(_wav(ungated[0]) - _shifted(raw)).max() <= PCM16


@pytest.mark.parametrize("value, message", [("-3", "expected a number of dB >= 0"), ("nan", "expected a finite number"),
                                            ("loud", "expected a number")])
def test_the_cli_refuses_a_bad_gate_in_one_line(audio_run, tmp_path, capsys, value, message):
    assert main(["sample", str(audio_run.path), "-n", "1", "--out", str(tmp_path / "x"), "--noise-gate", value]) == 2
    err = capsys.readouterr().err
    assert "--noise-gate" in err and message in err
    assert not (tmp_path / "x").exists()


def test_the_gate_is_refused_with_input_and_from_python_when_bad(audio_run, tmp_path, capsys):
    from diffkit.config import ConfigError

    wav = audio_run.sample(1, out=tmp_path / "one")[0]
    assert main(["sample", str(audio_run.path), "--input", str(wav), "--gap", "0.01:0.02", "--noise-gate", "40"]) == 2
    assert "--noise-gate applies to clips sampled from scratch" in capsys.readouterr().err
    for bad in (-1, float("nan"), True, "40"):
        with pytest.raises(ConfigError, match="noise_gate must be a number of dB >= 0"):
            audio_run.sample(1, out=tmp_path / "bad", noise_gate=bad)


def test_a_run_configured_with_a_gate_writes_gated_clips_from_the_trainer_and_run_sample(tmp_path):
    config = {
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "device": "cpu"},
        "data": {"dataset": "tones", "options": {"num_examples": 4, "sample_rate": 4000, "length": 256}, "batch_size": 2},
        "model": {"backbone": "unet1d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": []}},
        "diffusion": {"timesteps": 50, "objective": "v"},
        "train": {"steps": 1, "ema_start": 0},
        "sample": {"num": 2, "sampler": "ddim", "steps": 3, "noise_gate": 3},
    }
    run = diffkit.train(config, progress=False)
    raw = run.diffusion().sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0)).double()
    for i in range(2):
        expected = _gated(raw[i].numpy(), 3)
        assert np.abs(expected - _shifted(raw[i].numpy())).max() > 0.1
        assert np.abs(_wav(run.samples_dir / f"step_00000001_{i:04d}.wav") - expected).max() <= PCM16
    first = run.sample(1)[0]
    assert np.abs(_wav(first) - _gated(_raw(run, 0), 3)).max() <= PCM16


def _image_config(folder, **sample) -> dict:
    return {"run": {"dir": str(folder), "device": "cpu"},
            "data": {"dataset": "shapes", "options": {"num_examples": 4, "size": 8}, "batch_size": 2},
            "model": {"backbone": "unet2d", "options": {"in_channels": 3, "channels": [8, 16], "num_res_blocks": 1,
                                                        "attention_levels": []}},
            "diffusion": {"timesteps": 50}, "train": {"steps": 1}, "sample": {"num": 1, "steps": 2, **sample}}


def test_the_gate_is_refused_for_image_runs(tmp_path):
    from diffkit.config import ConfigError

    run = diffkit.train(_image_config(tmp_path / "img"), progress=False)
    with pytest.raises(ConfigError, match="noise_gate applies to audio runs; this run makes image samples"):
        run.sample(1, noise_gate=40)


def test_an_image_config_with_a_gate_is_refused_before_step_1(tmp_path):
    from diffkit.config import ConfigError

    with pytest.raises(ConfigError, match=r"sample.noise_gate: the gate applies to audio; this data is image"):
        diffkit.train(_image_config(tmp_path / "img", noise_gate=40), progress=False)
    assert not (tmp_path / "img" / "checkpoints").exists()


# --- the SDE sampler's churn: [sample] churn, Run.sample, diffkit sample, the trainer ------------------------------

def _sde_config(folder, **sample) -> dict:
    return {"run": {"dir": str(folder), "seed": 0, "device": "cpu"},
            "data": {"dataset": "tones", "options": {"num_examples": 4, "sample_rate": 4000, "length": 256},
                     "batch_size": 2},
            "model": {"backbone": "unet1d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                        "attention_levels": []}},
            "diffusion": {"timesteps": 50, "objective": "v"}, "train": {"steps": 1, "ema_start": 0},
            "sample": {"num": 2, "sampler": "dpm-solver++-sde", "steps": 4, "dc_offset": "keep",
                       "nyquist": "keep", **sample}}


def test_a_configured_churn_reaches_the_sampler_from_the_trainer_run_sample_and_the_cli(tmp_path):
    run = diffkit.train(_sde_config(tmp_path / "run", churn=4.0), progress=False)
    diffusion = run.diffusion()

    def engine(churn, seeds):  # what the engine draws for these generators
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return diffusion.sample(len(seeds), sampler="dpm-solver++-sde", steps=4, churn=churn, generator=generators)

    # The trainer's samples: one generator seeded with the run's seed, as the engine draws them.
    trained = diffusion.sample(2, sampler="dpm-solver++-sde", steps=4, churn=4.0, generator=torch.Generator().manual_seed(0))
    default = diffusion.sample(2, sampler="dpm-solver++-sde", steps=4, generator=torch.Generator().manual_seed(0))
    assert (trained - default).abs().max() > 0.05  # the churn changes the clips
    for i in range(2):
        assert np.abs(_wav(run.samples_dir / f"step_00000001_{i:04d}.wav") - trained[i].double().numpy()).max() <= PCM16
    configured = run.sample(2, out=tmp_path / "configured")
    expected = engine(4.0, [sample_seed(0, 0), sample_seed(0, 1)])
    for path, clip in zip(configured[:2], expected):
        assert np.abs(_wav(path) - clip.double().numpy()).max() <= PCM16
    # An explicit churn wins, from Python and from the CLI, and gets its own folder.
    one = run.sample(1, churn=1.0)[0]
    assert one.parent != configured[0].parent
    assert np.abs(_wav(one) - engine(1.0, [sample_seed(0, 0)])[0].double().numpy()).max() <= PCM16
    assert main(["sample", str(run.path), "-n", "1", "--churn", "0", "--out", str(tmp_path / "ode"), "--no-progress"]) == 0
    ode = diffusion.sample(1, sampler="dpm-solver++", steps=4, generator=[torch.Generator().manual_seed(sample_seed(0, 0))])
    assert np.abs(_wav(tmp_path / "ode" / "000000.wav") - ode[0].double().numpy()).max() <= 2 * PCM16
    # Inpainting takes it too: the same gap filled with churn 0 and 4 differs only inside the gap.
    fills = []
    for churn in ("0", "4"):
        assert main(["sample", str(run.path), "--input", str(configured[0]), "--gap", "0.01:0.02", "--steps", "4",
                     "--resample", "1", "--churn", churn, "--out", str(tmp_path / f"fill{churn}"), "--no-progress"]) == 0
        (made,) = sorted((tmp_path / f"fill{churn}").glob("*.wav"))
        fills.append(_wav(made))
    gap = np.zeros(256, bool)
    gap[40:80] = True
    assert np.abs(fills[0] - fills[1])[:, gap].max() > 1e-3
    assert np.abs(fills[0] - fills[1])[:, ~gap].max() <= PCM16


def test_the_configured_churn_is_left_out_for_another_sampler_but_a_given_one_is_refused(tmp_path, capsys):
    from diffkit.config import ConfigError

    run = diffkit.train(_sde_config(tmp_path / "run", churn=4.0), progress=False)
    ddim = run.sample(1, sampler="ddim", steps=3, out=tmp_path / "ddim")  # the [sample] churn was for its own sampler
    raw = run.diffusion().sample(1, sampler="ddim", steps=3, generator=[torch.Generator().manual_seed(sample_seed(0, 0))])
    assert np.abs(_wav(ddim[0]) - raw[0].double().numpy()).max() <= PCM16
    with pytest.raises(ConfigError, match="churn applies to the dpm-solver\\+\\+-sde sampler, not 'ddim'"):
        run.sample(1, sampler="ddim", steps=3, churn=2.0)
    assert main(["sample", str(run.path), "-n", "1", "--sampler", "unipc", "--churn", "2"]) == 2
    assert "churn applies to the dpm-solver++-sde sampler, not 'unipc'" in capsys.readouterr().err
    assert main(["sample", str(run.path), "-n", "1", "--churn", "-1"]) == 2
    assert "--churn: expected a number >= 0 (0: the ODE), got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("option, sampler", [({"churn": 2.0}, "ddim"), ({"churn_stop": 10}, "unipc")])
def test_a_config_with_a_churn_option_for_another_sampler_is_refused_before_step_1(tmp_path, option, sampler):
    from diffkit.config import ConfigError

    config = _sde_config(tmp_path / "run", **option)
    config["sample"]["sampler"] = sampler
    (name,) = option
    with pytest.raises(ConfigError, match=rf"sample.{name}: applies to the dpm-solver\+\+-sde sampler; this "
                                          rf"section's sampler is '{sampler}' \(remove {name} or set sampler"):
        diffkit.train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_churn_stop_reaches_the_sampler_from_the_config_run_sample_and_the_cli(tmp_path, capsys):
    from diffkit.config import ConfigError

    run = diffkit.train(_sde_config(tmp_path / "run", churn=4.0, churn_stop=20), progress=False)
    diffusion = run.diffusion()

    def engine(seeds, **options):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return diffusion.sample(len(seeds), sampler="dpm-solver++-sde", steps=4, churn=4.0, generator=generators,
                                **options)

    trained = diffusion.sample(2, sampler="dpm-solver++-sde", steps=4, churn=4.0, churn_stop=20,
                               generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert np.abs(_wav(run.samples_dir / f"step_00000001_{i:04d}.wav") - trained[i].double().numpy()).max() <= PCM16
    seeds = [sample_seed(0, 0), sample_seed(0, 1)]
    configured = run.sample(2, out=tmp_path / "configured")
    stopped, to_the_end = engine(seeds, churn_stop=20), engine(seeds)
    assert (stopped - to_the_end).abs().max() > 1e-3  # the stop changes the clips
    for path, clip in zip(configured[:2], stopped):
        assert np.abs(_wav(path) - clip.double().numpy()).max() <= PCM16
    # Given from Python or the CLI, it wins and gets its own folder; 0 churns to the end again.
    again = run.sample(1, churn_stop=0)[0]
    assert again.parent != run.sample(1)[0].parent
    assert run.sample(1, churn=4, churn_stop=0)[0] == run.sample(1, churn=4.0, churn_stop=0)[0]  # one folder for both
    assert np.abs(_wav(again) - to_the_end[0].double().numpy()).max() <= PCM16
    assert main(["sample", str(run.path), "-n", "1", "--churn-stop", "1000", "--out", str(tmp_path / "ode"),
                 "--no-progress"]) == 0
    ode = diffusion.sample(1, sampler="dpm-solver++", steps=4, generator=[torch.Generator().manual_seed(seeds[0])])
    assert np.abs(_wav(tmp_path / "ode" / "000000.wav") - ode[0].double().numpy()).max() <= 2 * PCM16
    # Mistakes: one line each, nothing written.
    with pytest.raises(ConfigError, match="churn_stop applies to the dpm-solver\\+\\+-sde sampler, not 'ddim'"):
        run.sample(1, sampler="ddim", steps=3, churn_stop=10)
    folders = sorted(run.samples_dir.iterdir())
    for options, expected in (({"churn_stop": -1}, "churn_stop must be a timestep \\(an integer >= 0\\), got -1"),
                              ({"churn_stop": 2.5}, "churn_stop must be a timestep \\(an integer >= 0\\), got 2.5"),
                              ({"churn": float("nan")}, "churn must be a finite number >= 0, got nan"),
                              ({"churn": -1.0}, "churn must be a finite number >= 0, got -1.0")):
        with pytest.raises(ConfigError, match=expected):
            run.sample(1, **options)
    assert sorted(run.samples_dir.iterdir()) == folders  # refused before any folder is made
    for flag, expected in (("-1", "expected a timestep from 0 to 1,000,000,000, got -1"),
                           ("2.5", "expected a timestep (an integer >= 0), got '2.5'")):
        assert main(["sample", str(run.path), "-n", "1", "--churn-stop", flag]) == 2
        assert f"--churn-stop: {expected}" in capsys.readouterr().err
    ddim = run.sample(1, sampler="ddim", steps=3, out=tmp_path / "ddim")  # the configured stop was for its sampler
    assert ddim[0].is_file()
