"""The command line, run in-process through diffkit.cli.main, and every example config end to end."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from diffkit.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_RUN = ["train.steps=2", "train.log_every=1", "sample.num=2", "sample.steps=2", "data.batch_size=4"]


def test_plugins_lists_names_with_their_distribution(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.split()[:1] == ["unet2d"])
    assert "diffkit" in line
    assert "labels" in out


def test_a_typo_in_a_config_key_is_one_line_naming_it(tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text((EXAMPLES / "shapes.toml").read_text().replace("batch_size", "batch_sise"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown key 'data.batch_sise' (did you mean 'data.batch_size'?)" in err


def test_an_unknown_backbone_lists_the_available_ones(tmp_path, capsys):
    code = main(["train", str(EXAMPLES / "shapes.toml"), "--set", "model.backbone=unet9d",
                 "--set", f"run.dir={tmp_path / 'r'}"])
    assert code == 2
    assert "model.backbone: unknown backbone 'unet9d'; available backbones: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "example, extra, outputs",
    [
        ("shapes.toml", ["data.options.num_examples=16"], ["step_00000002.png"]),
        ("shapes_transformer.toml", ["data.options.num_examples=16"], ["step_00000002.png"]),
        ("volumes.toml", ["data.options.num_examples=8"], ["step_00000002_0000.npy", "step_00000002_slices.png"]),
        ("digits_conditional.toml", [], ["step_00000002.png"]),
        ("audio_wav.toml", None, ["step_00000002_0000.wav", "step_00000002_spectrogram.png"]),
    ],
)
def test_every_example_config_runs_end_to_end(example, extra, outputs, tmp_path, capsys):
    if extra is None:  # the audio story starts from a folder of WAV files
        assert main(["export-demo", "tones", str(tmp_path / "wavs"), "--num", "12"]) == 0
        extra = [f"data.options.root={tmp_path / 'wavs'}"]
    run = tmp_path / "run"
    overrides = [f"run.dir={run}", *TINY_RUN, *extra]
    assert main(["train", str(EXAMPLES / example), "--no-progress", *[a for o in overrides for a in ("--set", o)]]) == 0
    for name in outputs:
        assert (run / "samples" / name).is_file(), name

    # `diffkit sample` writes more from the checkpoint.
    out = tmp_path / "more"
    assert main(["sample", str(run), "--num", "3", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written, "diffkit sample wrote nothing"
    first = out / written[0]
    if first.suffix == ".png":
        assert Image.open(first).size[0] > 0
    elif first.suffix == ".wav":
        data, rate = sf.read(first)
        assert rate == 8000 and len(data) == 4096 and np.abs(data).max() <= 1
    else:
        assert np.load(first).shape == (1, 16, 16, 16)


def test_sample_with_labels_and_guidance(tmp_path):
    run = tmp_path / "run"
    overrides = [f"run.dir={run}", *TINY_RUN]
    assert main(["train", str(EXAMPLES / "digits_conditional.toml"), "--no-progress",
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    out = tmp_path / "out"
    assert main(["sample", str(run), "--labels", "3,3,7", "--guidance", "2", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "grid.png",
                                                     "settings.json"]
    assert Image.open(out / "000000.png").mode == "L"


def test_sample_from_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["sample", str(tmp_path)]) == 2
    assert "config.toml" in capsys.readouterr().err


def test_eval_reports_bits_per_dim_and_sample_statistics(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [f"run.dir={run}", *TINY_RUN, "data.options.num_examples=16", "diffusion.timesteps=100"]
    assert main(["train", str(EXAMPLES / "shapes.toml"), "--no-progress",
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    assert main(["eval", str(run), "--examples", "4", "--timesteps", "5", "--samples", "4", "--no-progress"]) == 0
    import json

    result = json.loads((run / "eval.json").read_text())
    # An untrained network is a poor model of 8-bit images but a bound is still finite and above 0.
    assert 0.5 < result["bits_per_dim"] < 100 and result["examples"] == 4 and result["bound_terms"] == 5
    assert -1 <= result["data_mean"] <= 1 and result["sample_std"] > 0
    assert "bits/dim" in capsys.readouterr().out
