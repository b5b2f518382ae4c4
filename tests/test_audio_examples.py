"""The audio example configs end to end on tiny settings, through load_config overrides and the Trainer."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffkit.config import load_config
from diffkit.data import TonesDataset, save_wav
from diffkit.trainer import Trainer
from tiny_runs import sample_in_one_and_two_processes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_folder(root: Path, classes: list[str], per_class: int = 2) -> None:
    """Tone clips at 16 kHz (the example resamples them to 8 kHz), ``per_class`` in each class sub-folder."""
    tones = TonesDataset(num_examples=len(classes) * per_class, sample_rate=16000, length=8192, num_classes=1)
    for i in range(len(tones)):
        save_wav(tones[i][0], root / classes[i % len(classes)] / f"{i:03d}.wav", 16000)


def tiny_widths(example: str) -> str:
    """Tiny widths, one per level of the example's network (audio-p2 has 5 levels, the speech example's 4)."""
    return "model.options.channels=" + ("[8, 8, 8, 16, 16]" if example == "audio_wav.toml" else "[8, 8, 16, 16]")


@pytest.mark.parametrize(
    "example, classes",
    [("audio_wav.toml", ["falling_chirp", "high_tone", "low_tone", "rising_chirp"]),
     ("speech_digits.toml", [f"{k}_{w}" for k, w in enumerate("zero one two three four five six seven eight nine".split())])],
)
def test_audio_example_trains_and_writes_clean_wavs(example, classes, tmp_path):
    write_folder(tmp_path / "wavs", classes)
    run = tmp_path / "run"
    overrides = [f"run.dir={run}", f"data.options.root={tmp_path / 'wavs'}", "train.steps=2", "train.log_every=1",
                 "data.batch_size=4", "sample.num=3", "sample.steps=2", tiny_widths(example)]
    config = load_config(EXAMPLES / example, overrides)
    assert config.diffusion.objective == "v"
    assert (config.model.backbone, config.model.options.get("preset")) == {
        "audio_wav.toml": ("unet1d", "audio-p2"), "speech_digits.toml": ("unet-mdct", None)}[example]
    assert (config.train.lr_decay, config.train.ema_warmup) == ("cosine", True)
    Trainer(config, progress=False).run()

    wavs = sorted((run / "samples").glob("*.wav"))
    assert len(wavs) == 3
    for path in wavs:
        data, rate = sf.read(path)
        assert rate == 8000 and data.shape == (4096,)
        assert np.abs(data).max() <= 1.0
    losses = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(losses) == 2

    # The README's continuation command on the example's run (its [sample] guidance, no --labels given).
    from diffkit.cli import main

    given = sorted((tmp_path / "wavs" / classes[0]).glob("*.wav"))[0]
    assert main(["sample", str(run), "--input", str(given), "--extend", "0.1", "--steps", "2", "--resample", "1",
                 "--out", str(tmp_path / "extended"), "--no-progress"]) == 0
    (made,) = sorted((tmp_path / "extended").glob("*.wav"))
    data, rate = sf.read(made)
    assert rate == 8000 and data.shape == (4096 + 800,) and np.abs(data).max() <= 1.0


def test_audio_sampling_under_torchrun_writes_the_same_dc_free_wavs_as_one_process(tmp_path):
    # `diffkit sample RUN` on an audio run, once in one process and once as the README's
    # `torchrun --nproc_per_node 2 -m diffkit.cli sample …`: the same WAV bytes, each clip's mean removed,
    # with the example's [sample] (dpm-solver++-sde with churn 2: fresh noise from each clip's own generator).
    classes = ["falling_chirp", "high_tone", "low_tone", "rising_chirp"]
    write_folder(tmp_path / "wavs", classes)
    run = tmp_path / "run"
    config = load_config(EXAMPLES / "audio_wav.toml",
                         [f"run.dir={run}", f"data.options.root={tmp_path / 'wavs'}", "train.steps=2",
                          "data.batch_size=4", "sample.num=1", "sample.steps=2", "model.options.channels=[8, 8, 8, 16, 16]"])
    assert (config.sample.sampler, config.sample.churn) == ("dpm-solver++-sde", 2.0)
    Trainer(config, progress=False).run()
    args = ["sample", str(run), "-n", "5", "--steps", "3", "--batch-size", "2", "--no-progress", "--labels", "0,1,2,3,1"]
    names = sample_in_one_and_two_processes(args, tmp_path / "one", tmp_path / "two")
    wavs = [n for n in names if n.endswith(".wav")]
    assert wavs == [f"{i:06d}.wav" for i in range(5)]
    for name in wavs:
        data, rate = sf.read(tmp_path / "two" / name)
        assert rate == 8000 and data.shape == (4096,)
        assert abs(data.mean()) < 1e-3, f"{name} keeps a DC offset of {data.mean():.4f}"


def test_the_speech_example_samples_the_same_gated_wavs_under_torchrun_as_in_one_process(tmp_path):
    # The speech example's run (its [sample]: guidance 3, dc_offset "remove", noise_gate 40), sampled by
    # `diffkit sample` in one process and under `torchrun --nproc_per_node 2`: the same WAV bytes. A barely
    # trained model is evenly loud (white-noise-like), so a 0.5 dB gate is asked for on the command line to silence something.
    classes = [f"{k}_{w}" for k, w in enumerate("zero one two three four five six seven eight nine".split())]
    write_folder(tmp_path / "wavs", classes, per_class=1)
    run = tmp_path / "run"
    config = load_config(EXAMPLES / "speech_digits.toml",
                         [f"run.dir={run}", f"data.options.root={tmp_path / 'wavs'}", "train.steps=2",
                          "data.batch_size=4", "sample.num=1", "sample.steps=2", tiny_widths("speech_digits.toml")])
    assert config.sample.noise_gate == 40
    Trainer(config, progress=False).run()
    args = ["sample", str(run), "-n", "3", "--steps", "2", "--batch-size", "2", "--no-progress", "--labels", "7,3,0",
            "--noise-gate", "0.5"]
    names = sample_in_one_and_two_processes(args, tmp_path / "one", tmp_path / "two")
    wavs = [n for n in names if n.endswith(".wav")]
    assert wavs == [f"{i:06d}.wav" for i in range(3)]
    silenced = 0
    for name in wavs:
        data, rate = sf.read(tmp_path / "two" / name)
        assert rate == 8000 and data.shape == (4096,) and np.abs(data).max() <= 1.0
        silenced += int((data == 0).sum())
    assert silenced > 128  # the gate silenced whole frames somewhere


def test_a_string_for_a_switch_in_the_speech_example_is_refused_naming_it(tmp_path, capsys):
    # TOML's "false" is a string, and a truthy one: it must not switch the coordinates on.
    from diffkit.cli import main

    classes = [f"{k}_{w}" for k, w in enumerate("zero one two three four five six seven eight nine".split())]
    write_folder(tmp_path / "wavs", classes, per_class=1)
    config = tmp_path / "speech.toml"
    config.write_text((EXAMPLES / "speech_digits.toml").read_text().replace("coordinates = true", 'coordinates = "false"'))
    run = tmp_path / "run"
    code = main(["train", str(config), "--set", f"run.dir={run}", "--set", f"data.options.root={tmp_path / 'wavs'}",
                 "--set", "train.steps=1", "--set", tiny_widths("speech_digits.toml"), "--no-progress"])
    assert code != 0 and not run.exists()
    assert "model.options: unet-mdct: 'coordinates' must be true or false, got 'false'" in capsys.readouterr().err
