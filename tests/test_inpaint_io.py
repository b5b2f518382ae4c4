"""``diffkit sample RUN --input FILE …`` on tiny trained runs of each modality, including bad masks."""

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from diffkit.cli import main
from diffkit.config import validate
from diffkit.trainer import Trainer

RATE, LENGTH = 4000, 256
FAST = ["--steps", "2", "--resample", "2", "--jump-length", "1", "--no-progress"]


def train(tmp, data, model):
    config = {
        "run": {"dir": str(tmp / "run"), "seed": 0, "device": "cpu"},
        "data": {**data, "batch_size": 2},
        "model": model,
        "diffusion": {"timesteps": 30},
        "train": {"steps": 1, "lr": 1e-3, "ema_decay": 0.9, "ema_start": 0, "log_every": 1},
        "sample": {"num": 1, "sampler": "ddim", "steps": 2},
    }
    return Trainer(validate(config), progress=False).run()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("image"),
                 {"dataset": "shapes", "options": {"num_examples": 4, "size": 8, "channels": 1}},
                 {"backbone": "unet2d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": []}})


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("audio"),
                 {"dataset": "tones", "options": {"num_examples": 4, "sample_rate": RATE, "length": LENGTH}},
                 {"backbone": "unet1d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": []}})


@pytest.fixture(scope="module")
def guided_audio_run(tmp_path_factory):
    """Class-conditional, with guidance 2 in its [sample] section, as examples/audio_wav.toml has."""
    tmp = tmp_path_factory.mktemp("guided-audio")
    config = {
        "run": {"dir": str(tmp / "run"), "seed": 0, "device": "cpu"},
        "data": {"dataset": "tones", "options": {"num_examples": 4, "sample_rate": RATE, "length": LENGTH,
                                                 "num_classes": 2}, "batch_size": 2},
        "model": {"backbone": "unet1d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": [], "cond_dim": 8},
                  "conditioner": {"name": "labels", "options": {"num_classes": 2, "dim": 8}}},
        "diffusion": {"timesteps": 30},
        "train": {"steps": 1, "lr": 1e-3, "ema_decay": 0.9, "ema_start": 0, "log_every": 1},
        "sample": {"num": 1, "sampler": "ddim", "steps": 2, "guidance_scale": 2.0},
    }
    return Trainer(validate(config), progress=False).run()


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("volume"),
                 {"dataset": "solids", "options": {"num_examples": 4, "size": 8}},
                 {"backbone": "unet3d", "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1,
                                                    "attention_levels": []}})


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_image_box_keeps_the_rest_of_the_image(image_run, tmp_path, capsys):
    pixels = np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))
    Image.fromarray(pixels).save(tmp_path / "in.png")
    out = tmp_path / "out"
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), "--box", "4,0,4,8", "--num", "2",
                 "--out", str(out), *FAST]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 1 and written[0].endswith(".png")
    grid = np.asarray(Image.open(written[0]))
    # Each 8×8 tile is enlarged 8×; tiles: the input with its hole (mid-grey), then 2 completions.
    tile = grid[2:2 + 64, 2:2 + 64]
    assert (tile[32:] == 128).all() or (tile[32:] == 127).all()
    completion = grid[2:2 + 64, 2 + 66: 2 + 66 + 64]
    assert np.array_equal(completion[:32, ::8], np.repeat(pixels[:4, :], 8, axis=0))


def test_image_mask_png_and_extension(image_run, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--out", str(out), *FAST]) == 0
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), "--extend", "6",
                 "--out", str(out / "wide"), *FAST]) == 0
    wide = capsys.readouterr().out.split()[-1]
    # 8 + 6 = 14 pixels wide, enlarged 4× (64 // 14), two tiles (input padded, continuation) and 2-pixel gaps.
    assert Image.open(wide).size == (2 + 2 * (14 * 4 + 2), 2 + 8 * 4 + 2)


@pytest.mark.parametrize("args, message", [
    (["--box", "20,20,4,4"], "nothing to fill"),
    (["--box", "0,0,8,8"], "nothing is known"),
    (["--box", "1,2,3"], "TOP,LEFT,HEIGHT,WIDTH"),
    (["--mask", "MASK9"], "has shape (9, 9), the input has (8, 8)"),
    (["--gap", "0.1:0.2"], "--gap does not apply to image runs"),
    ([], "--input needs a region to fill"),
    (["--box", "0,0,2,2", "--extend", "3"], "give one region"),
    (["--box", "0,0,2,2", "--resample-below", "-1"], "resample_below must be >= 0"),
    (["--box", "0,0,2,2", "--resample-below", "nan"], "resample_below must be >= 0"),
    (["--box", "0,0,2,2", "--reconstruction", "-1"], "reconstruction weight must be a finite number >= 0"),
])
def test_bad_image_regions_are_one_line_errors(image_run, tmp_path, capsys, args, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.full((9, 9), 255, np.uint8)).save(tmp_path / "m9.png")
    args = [str(tmp_path / "m9.png") if a == "MASK9" else a for a in args]
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), *args, *FAST]) == 2
    assert message in error_line(capsys)


def test_an_input_of_another_size_is_resized_and_of_the_wrong_kind_refused(image_run, tmp_path, capsys):
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "big.png")
    assert main(["sample", str(image_run), "--input", str(tmp_path / "big.png"), "--box", "0,0,4,4",
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    grid = np.asarray(Image.open(capsys.readouterr().out.split()[0]))
    assert grid.shape == (2 + 64 + 2, 2 + 2 * 66) and (grid[2 + 40, 2 + 66 + 40] == 255)  # white, 8×8 enlarged 8×
    np.save(tmp_path / "x.npy", np.zeros((8, 8)))
    assert main(["sample", str(image_run), "--input", str(tmp_path / "x.npy"), "--box", "0,0,4,4", *FAST]) == 2
    assert "is not a PNG image" in error_line(capsys)


def test_audio_gap_in_a_longer_file_and_extension(audio_run, tmp_path, capsys):
    t = np.arange(600) / RATE
    wave = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", wave, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    # 0.100-0.120 s = samples 400-480, in a file longer than the model's 256-sample window.
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), "--gap", "0.100:0.120",
                 "--out", str(out), *FAST]) == 0
    wav, png = capsys.readouterr().out.split()
    data, rate = sf.read(wav, dtype="float32")
    assert rate == RATE and len(data) == 600
    keep = np.ones(600, bool)
    keep[400:480] = False
    assert np.abs(data[keep] - wave[keep]).max() < 1e-4  # 16-bit PCM
    assert np.abs(data[~keep] - wave[~keep]).max() > 1e-2  # a 1-step model does not know the tone
    # With reconstruction guidance: another completion, the known part as exactly kept.
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), "--gap", "0.100:0.120",
                 "--reconstruction", "5", "--out", str(out / "guided"), *FAST]) == 0
    guided, _ = sf.read(capsys.readouterr().out.split()[0], dtype="float32")
    assert np.abs(guided[keep] - wave[keep]).max() < 1e-4 and not np.allclose(guided[~keep], data[~keep])
    picture = np.asarray(Image.open(png))
    assert (picture == [0, 255, 255]).all(-1).any()  # the filled region is marked in cyan
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), "--extend", "0.1",
                 "--out", str(out / "ext"), *FAST]) == 0
    data, _ = sf.read(capsys.readouterr().out.split()[0], dtype="float32")
    assert len(data) == 1000 and np.abs(data[:600] - wave).max() < 1e-4


def test_a_run_with_guidance_in_its_sample_section_fills_without_labels(guided_audio_run, tmp_path, capsys):
    """The README's `diffkit sample runs/audio --input … --extend 3` on the example's run (guidance 2, no
    --labels): filled in with the null label, unguided; with --labels the run's guidance applies."""
    t = np.arange(400) / RATE
    wave = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", wave, RATE, subtype="FLOAT")
    for n, region in enumerate((["--extend", "0.05"], ["--gap", "0.040:0.060"])):
        assert main(["sample", str(guided_audio_run), "--input", str(tmp_path / "tone.wav"), *region,
                     "--out", str(tmp_path / f"out{n}"), *FAST]) == 0
        data, _ = sf.read(capsys.readouterr().out.split()[0], dtype="float32")
        assert len(data) == (600 if n == 0 else 400) and np.isfinite(data).all()
    assert main(["sample", str(guided_audio_run), "--input", str(tmp_path / "tone.wav"), "--gap", "0.040:0.060",
                 "--labels", "1", "--out", str(tmp_path / "labelled"), *FAST]) == 0
    capsys.readouterr()
    assert main(["sample", str(guided_audio_run), "--input", str(tmp_path / "tone.wav"), "--gap", "0.040:0.060",
                 "--guidance", "3", *FAST]) == 2
    assert "--guidance 3 needs --labels" in error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["--gap", "0.2:0.1"], "END must be after START"),
    (["--gap", "1.0:2.0"], "nothing to fill"),
    (["--gap", "0.0:0.07"], "is not shorter than the model's window"),
    (["--gap", "0:1"], "nothing is known"),
    (["--box", "0,0,1,1"], "--box does not apply to audio runs"),
    (["--extend", "0.1", "--overlap", "0.5"], "--overlap 0.5: must leave between 1 and 255 samples"),
])
def test_bad_audio_regions_are_one_line_errors(audio_run, tmp_path, capsys, args, message):
    sf.write(tmp_path / "tone.wav", np.zeros(300, np.float32), RATE)
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), *args, *FAST]) == 2
    assert message in error_line(capsys)


def test_audio_shorter_than_the_window_is_refused(audio_run, tmp_path, capsys):
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), RATE)
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "short.wav"), "--gap", "0.01:0.02", *FAST]) == 2
    assert "fewer than the model's window of 256" in error_line(capsys)


def test_volume_slab_and_npy_mask(volume_run, tmp_path, capsys):
    volume = np.linspace(-1, 1, 512, dtype=np.float32).reshape(8, 8, 8)
    np.save(tmp_path / "v.npy", volume)
    out = tmp_path / "out"
    assert main(["sample", str(volume_run), "--input", str(tmp_path / "v.npy"), "--slab", "d:2:5",
                 "--out", str(out), *FAST]) == 0
    npy, png = capsys.readouterr().out.split()
    result = np.load(npy)
    assert result.shape == (1, 8, 8, 8) and png.endswith("_slices.png")
    assert np.array_equal(result[0, :2], volume[:2]) and np.array_equal(result[0, 5:], volume[5:])
    assert not np.allclose(result[0, 2:5], volume[2:5])
    mask = np.zeros((8, 8, 8), bool)
    mask[:, :, 6:] = True
    np.save(tmp_path / "m.npy", mask)
    assert main(["sample", str(volume_run), "--input", str(tmp_path / "v.npy"), "--mask", str(tmp_path / "m.npy"),
                 "--out", str(out / "m"), *FAST]) == 0
    result = np.load(capsys.readouterr().out.split()[0])
    assert np.array_equal(result[0, :, :, :6], volume[:, :, :6])


@pytest.mark.parametrize("args, message", [
    (["--slab", "x:1:2"], "AXIS one of d, h, w"),
    (["--slab", "d:9:12"], "nothing to fill"),
    (["--mask", "WRONG"], "has shape (4, 4, 4), the input has (8, 8, 8)"),
    (["--mask", "FULL"], "nothing is known"),
])
def test_bad_volume_regions_are_one_line_errors(volume_run, tmp_path, capsys, args, message):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    np.save(tmp_path / "wrong.npy", np.ones((4, 4, 4)))
    np.save(tmp_path / "full.npy", np.ones((8, 8, 8)))
    args = [str(tmp_path / "wrong.npy") if a == "WRONG" else str(tmp_path / "full.npy") if a == "FULL" else a
            for a in args]
    assert main(["sample", str(volume_run), "--input", str(tmp_path / "v.npy"), *args, *FAST]) == 2
    assert message in error_line(capsys)


def test_two_inpainting_calls_never_overwrite_each_other(image_run, tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))).save(source)
    assert main(["sample", str(image_run), "--input", str(source), "--box", "0,0,4,8", *FAST]) == 0
    assert main(["sample", str(image_run), "--input", str(source), "--box", "4,0,4,8", *FAST]) == 0
    folders = sorted(p for p in (image_run / "samples").iterdir() if p.name.startswith("inpaint-"))
    assert len(folders) == 2 and all(any(f.iterdir()) for f in folders)
