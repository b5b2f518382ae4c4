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
    (["--mask", "MASK9"], "is 9x9 pixels (HxW); expected 8x8"),
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


# --- the input read as the run's dataset reads it (audit of --input and --mask with real files) ---------------


def grid_pixel(grid, tile, row, col, scale=8):
    """The centre of pixel (row, col) of tile ``tile`` in an inpainting picture (2-pixel border and gaps)."""
    return grid[2 + row * scale + scale // 2, 2 + tile * (8 * scale + 2) + col * scale + scale // 2]


def test_a_16_bit_png_input_and_mask_keep_their_depth(image_run, tmp_path, capsys):
    ramp = np.tile(np.linspace(0, 65535, 8).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    mask = np.full((8, 8), 1000, np.uint16)  # 1.5 % grey: keep (Pillow's 8-bit conversion made it white)
    mask[:4, :4] = 65535
    Image.fromarray(mask).save(tmp_path / "mask16.png")
    assert Image.open(tmp_path / "ramp16.png").mode == "I;16" and Image.open(tmp_path / "mask16.png").mode == "I;16"
    assert main(["sample", str(image_run), "--input", str(tmp_path / "ramp16.png"), "--mask", str(tmp_path / "mask16.png"),
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    grid = np.asarray(Image.open(capsys.readouterr().out.split()[0]))
    expected = np.round(np.linspace(0, 255, 8)).astype(int)  # the ramp, not 0 then 255 everywhere
    assert [int(grid_pixel(grid, 1, 6, c)) for c in range(8)] == expected.tolist()
    assert [int(grid_pixel(grid, 0, 1, c)) for c in range(4)] == [128] * 4  # the hole shown mid-grey: filled
    assert [int(grid_pixel(grid, 0, 1, c)) for c in range(4, 8)] == expected[4:].tolist()  # kept


def test_a_mask_of_the_input_files_own_size_is_resized_with_it(image_run, tmp_path, capsys):
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "big.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:8, :8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["sample", str(image_run), "--input", str(tmp_path / "big.png"), "--mask", str(tmp_path / "mask.png"),
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    captured = capsys.readouterr()
    assert "big.png' is 16x16 pixels (HxW); read at the run's 8x8" in captured.err
    grid = np.asarray(Image.open(captured.out.split()[0]))
    assert grid_pixel(grid, 0, 1, 1) == 128 and grid_pixel(grid, 0, 6, 6) == 200  # top-left quarter filled


def test_bad_audio_files_are_refused_as_the_dataset_refuses_them(audio_run, tmp_path, capsys):
    t = np.arange(600) / RATE
    wave = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    nan = wave.copy()
    nan[500] = np.nan  # outside the model's window around the gap: it would have been written as a click
    sf.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
    sf.write(tmp_path / "whole.wav", wave, RATE, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[:700])
    sf.write(tmp_path / "odd.wav", np.zeros(2000, np.float32), 44101)
    for name, message in [("nan.wav", "NaN or infinite"), ("cut.wav", "truncated"), ("odd.wav", "cannot be resampled")]:
        assert main(["sample", str(audio_run), "--input", str(tmp_path / name), "--gap", "0.01:0.02", *FAST]) == 2
        line = error_line(capsys)
        assert f"--input: {tmp_path / name}: " in line and message in line, line


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_audio_keeps_the_files_sample_format_and_its_known_samples_exactly(audio_run, tmp_path, capsys, subtype):
    t = np.arange(600) / RATE
    wave = 0.5 * np.sin(2 * np.pi * 300 * t)
    sf.write(tmp_path / "tone.wav", wave, RATE, subtype=subtype)
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), "--gap", "0.100:0.120",
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    written = capsys.readouterr().out.split()[0]
    assert sf.info(written).subtype == subtype
    given, made = sf.read(tmp_path / "tone.wav", dtype="float64")[0], sf.read(written, dtype="float64")[0]
    keep = np.ones(600, bool)
    keep[400:480] = False
    assert np.array_equal(made[keep], given[keep])


def test_audio_at_another_rate_says_so(audio_run, tmp_path, capsys):
    sf.write(tmp_path / "fast.wav", np.zeros(1200, np.float32), 2 * RATE, subtype="PCM_24")
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "fast.wav"), "--gap", "0.05:0.06",
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    captured = capsys.readouterr()
    assert f"is {2 * RATE} Hz; read and written at the run's {RATE} Hz" in captured.err
    assert sf.info(captured.out.split()[0]).samplerate == RATE


@pytest.mark.parametrize("args, message", [
    (["--extend", "inf"], "argument --extend: expected a finite number, got 'inf'"),
    (["--extend", "nan"], "argument --extend: expected a finite number, got 'nan'"),
    (["--extend", "0.05", "--overlap", "nan"], "argument --overlap: expected a finite number"),
    (["--gap", "0.1:inf"], "--gap 0.1:inf: expected finite times"),
    (["--gap", "nan:0.1"], "--gap nan:0.1: expected finite times"),
    (["--gap", "1e400:2e400"], "expected finite times"),
    (["--extend", "1e9"], "windows of sampling, more than the 1000 one call makes"),
    (["--gap", "0.01:0.02", "--guidance", "2"], "this model has no conditioner"),
])
def test_non_finite_or_absurd_amounts_are_one_line_errors(audio_run, tmp_path, capsys, args, message):
    sf.write(tmp_path / "tone.wav", np.zeros(300, np.float32), RATE)
    assert main(["sample", str(audio_run), "--input", str(tmp_path / "tone.wav"), *args, *FAST]) == 2
    assert message in error_line(capsys)


def test_an_unwritable_output_folder_is_refused_before_sampling(image_run, tmp_path, capsys, monkeypatch):
    from diffkit.diffusion import GaussianDiffusion

    def never(*args, **kwargs):
        raise AssertionError("sampled before checking the output folder")

    monkeypatch.setattr(GaussianDiffusion, "sample", never)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), "--box", "0,0,4,4",
                 "--out", str(tmp_path / "file" / "out"), *FAST]) == 2
    assert "out: cannot write into" in error_line(capsys)


def test_a_failed_call_leaves_no_empty_output_folder(image_run, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    assert main(["sample", str(image_run), "--input", str(tmp_path / "in.png"), "--box", "0,0,4,4",
                 "--reconstruction", "-1", "--out", str(tmp_path / "new" / "out"), *FAST]) == 2
    assert "reconstruction" in error_line(capsys) and not (tmp_path / "new").exists()


def test_volumes_outside_the_runs_range_or_pickled_are_refused(volume_run, tmp_path, capsys):
    np.save(tmp_path / "u16.npy", np.full((8, 8, 8), 30000, np.uint16))
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    np.save(tmp_path / "objects.npy", np.empty((8, 8, 8), object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not numpy")
    cases = [(["--input", "u16.npy", "--slab", "d:0:2"], "values span [30000, 30000]; expected [-1, 1]"),
             (["--input", "objects.npy", "--slab", "d:0:2"], "never loads"),
             (["--input", "v.npy", "--mask", "objects.npy"], "never loads"),
             (["--input", "v.npy", "--mask", "text.npy"], "no NumPy header")]
    for args, message in cases:
        args = [str(tmp_path / a) if a.endswith(".npy") else a for a in args]
        assert main(["sample", str(volume_run), *args, *FAST]) == 2
        line = error_line(capsys)
        assert message in line and "allow_pickle" not in line, line


def test_a_volume_folder_run_reads_its_input_normalised_and_writes_it_in_the_files_units(tmp_path, capsys):
    ramp = np.linspace(0, 60000, 512).reshape(8, 8, 8)
    for k in range(2):
        (tmp_path / "data").mkdir(exist_ok=True)
        np.save(tmp_path / "data" / f"{k}.npy", (ramp * (k + 1) / 2).astype(np.uint16))
    run = train(tmp_path, {"dataset": "volume_folder", "options": {"root": str(tmp_path / "data"), "shape": [8, 8, 8]}},
                {"backbone": "unet3d", "options": {"in_channels": 1, "channels": [4, 8], "num_res_blocks": 1,
                                                   "attention_levels": []}})
    given = ramp.astype(np.uint16)
    np.save(tmp_path / "in.npy", given)
    assert main(["sample", str(run), "--input", str(tmp_path / "in.npy"), "--slab", "d:2:4",
                 "--out", str(tmp_path / "out"), *FAST]) == 0
    result = np.load(capsys.readouterr().out.split()[0])
    assert result.dtype == np.float32 and result.shape == (1, 8, 8, 8)
    assert np.array_equal(result[0, :2], given[:2]) and np.array_equal(result[0, 4:], given[4:])  # kept exactly
    filled = result[0, 2:4]
    assert filled.min() >= given.min() - 1e-3 and filled.max() <= given.max() + 1e-3  # the file's units
    assert filled.max() > 1.5  # not left in the model's [-1, 1]
