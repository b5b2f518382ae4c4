import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.data import DataError, ImageFolder, create_dataset


def write(path, pixels, **save_options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


def test_png_and_jpeg_scaled_to_exact_range_with_labels_from_sub_folders(tmp_path):
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)[..., None], (1, 1, 3))
    write(tmp_path / "dogs" / "ramp.png", ramp)
    write(tmp_path / "cats" / "white.jpg", np.full((8, 8, 3), 255, np.uint8), quality=100)
    write(tmp_path / "cats" / "black.jpeg", np.zeros((8, 8, 3), np.uint8), quality=100)
    ds = ImageFolder(tmp_path, size=8, channels=3, labels=True)
    assert ds.classes == ["cats", "dogs"]
    assert ds.modality == "image" and ds.example_shape == (3, 8, 8) and len(ds) == 3
    got = {p.name: ds[i] for i, p in enumerate(ds.files)}
    assert [got[n][1] for n in ("black.jpeg", "white.jpg", "ramp.png")] == [0, 0, 1]
    assert torch.equal(got["black.jpeg"][0], torch.full((3, 8, 8), -1.0))
    assert torch.equal(got["white.jpg"][0], torch.full((3, 8, 8), 1.0))
    x = got["ramp.png"][0]
    assert x.dtype == torch.float32 and x.shape == (3, 8, 8)
    expected = torch.from_numpy(ramp.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(x, expected, atol=1e-6)
    assert x[0, 0, 0] == -1.0


def test_unlabelled_folder_is_recursive_and_labels_zero(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write(tmp_path / "sub" / "b.png", np.zeros((4, 4), np.uint8))
    write(tmp_path / "notes.txt.bak", np.zeros((4, 4), np.uint8), format="PNG")  # not an image extension
    ds = create_dataset("image_folder", root=tmp_path, size=4, channels=1)
    assert ds.classes is None and len(ds) == 2 and [ds[i][1] for i in range(2)] == [0, 0]


def test_grey_and_sixteen_bit_png(tmp_path):
    values = np.array([[0, 32768], [65535, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # opens as mode I;16
    x, _ = ImageFolder(tmp_path, size=2, channels=1)[0]
    assert x.shape == (1, 2, 2)
    assert torch.allclose(x[0], torch.tensor([[-1.0, 32768 / 65535 * 2 - 1], [1.0, 1.0]]), atol=1e-6)


def test_crop_keeps_the_centre_and_stretch_squeezes(tmp_path):
    columns = np.tile((np.arange(16) * 16).astype(np.uint8), (8, 1))  # 8 x 16, column j has value 16 j
    write(tmp_path / "wide.png", columns)
    crop = ImageFolder(tmp_path, size=8, channels=1, resize="crop")[0][0][0]
    assert torch.allclose(crop[0], torch.from_numpy(np.arange(4, 12) * 16 / 127.5 - 1).float(), atol=1e-6)
    stretch = ImageFolder(tmp_path, size=8, channels=1, resize="stretch")[0][0][0]
    assert stretch.shape == (8, 8)
    row = stretch[0]
    assert (row[1:] > row[:-1]).all()  # still a ramp, over all 16 source columns
    assert row[0] < crop[0, 0] and row[-1] > crop[0, -1]
    rect = ImageFolder(tmp_path, size=(4, 8), channels=1, resize="stretch")
    assert rect.example_shape == (1, 4, 8) and rect[0][0].shape == (1, 4, 8)


def test_downscaling_stays_in_range(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "noise.png", rng.integers(0, 256, (37, 23, 3), dtype=np.uint8))
    x, _ = ImageFolder(tmp_path, size=8)[0]
    assert x.shape == (3, 8, 8) and x.min() >= -1 and x.max() <= 1


def test_resize_none_rejects_other_sizes(tmp_path, data_error):
    write(tmp_path / "odd.png", np.zeros((5, 7), np.uint8))
    data_error(lambda: ImageFolder(tmp_path, size=8, channels=1, resize="none"), "odd.png", "5x7", "8x8")


def test_flip_uses_torch_global_rng(tmp_path):
    write(tmp_path / "a.png", np.tile(np.arange(0, 160, 20, dtype=np.uint8), (8, 1)))
    ds = ImageFolder(tmp_path, size=8, channels=1, flip=True)
    plain = ImageFolder(tmp_path, size=8, channels=1)[0][0]

    def draws():
        return [ds[0][0] for _ in range(20)]

    torch.manual_seed(3)
    first = draws()
    torch.manual_seed(3)
    again = draws()
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    flipped = [torch.equal(x, plain.flip(-1)) for x in first]
    assert all(f or torch.equal(x, plain) for f, x in zip(flipped, first))
    assert 0 < sum(flipped) < 20


def test_uncached_files_give_the_same_examples(tmp_path):
    write(tmp_path / "a.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    cached = ImageFolder(tmp_path, size=8, channels=1)
    uncached = ImageFolder(tmp_path, size=8, channels=1, cache_bytes=0)
    assert uncached._cache == [None] and torch.equal(cached[0][0], uncached[0][0])


def test_convert_turns_rgba_and_grey_into_the_requested_channels(tmp_path):
    write(tmp_path / "rgba.png", np.full((4, 4, 4), 255, np.uint8))
    write(tmp_path / "grey.png", np.zeros((4, 4), np.uint8))
    ds = ImageFolder(tmp_path, size=4, channels=3, convert=True)
    xs = {p.name: ds[i][0] for i, p in enumerate(ds.files)}
    assert torch.equal(xs["rgba.png"], torch.ones(3, 4, 4)) and torch.equal(xs["grey.png"], -torch.ones(3, 4, 4))


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path, data_error):
    empty = tmp_path / "empty"
    empty.mkdir()
    data_error(lambda: ImageFolder(empty), "empty", ".png")

    truncated = tmp_path / "truncated"
    write(truncated / "t.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = (truncated / "t.png").read_bytes()
    (truncated / "t.png").write_bytes(data[: len(data) // 2])
    data_error(lambda: ImageFolder(truncated, size=64), "t.png", "corrupt")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    data_error(lambda: ImageFolder(corrupt), "junk.jpg", "corrupt", "expected a valid PNG or JPEG image")

    rgba = tmp_path / "rgba"
    write(rgba / "alpha.png", np.zeros((4, 4, 4), np.uint8))
    data_error(lambda: ImageFolder(rgba, size=4, channels=3), "alpha.png", "4 channel", "expected 3")

    grey = tmp_path / "grey"
    write(grey / "g.png", np.zeros((4, 4), np.uint8))
    data_error(lambda: ImageFolder(grey, size=4, channels=3), "g.png", "1 channel", "expected 3")

    loose = tmp_path / "loose"
    write(loose / "cls" / "ok.png", np.zeros((4, 4), np.uint8))
    write(loose / "stray.png", np.zeros((4, 4), np.uint8))
    data_error(lambda: ImageFolder(loose, size=4, channels=1, labels=True), "stray.png", "class sub-folder")

    data_error(lambda: ImageFolder(tmp_path / "missing"), "missing", "not a folder")


def test_skip_leaves_bad_files_out_with_one_counted_warning(tmp_path, skip_warning, data_error):
    for name in ("a.png", "b.png", "c.png"):
        write(tmp_path / name, np.zeros((4, 4), np.uint8))
    write(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    ds, message = skip_warning(lambda: ImageFolder(tmp_path, size=4, channels=1, on_error="skip"))
    assert len(ds) == 3 and [p.name for p in ds.files] == ["a.png", "b.png", "c.png"]
    assert message.startswith(f"skipped 2 of 5 files in {tmp_path}")
    assert "junk.png (" in message and "rgb.png (" in message

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"")
    data_error(lambda: ImageFolder(tmp_path, size=4, channels=1, on_error="skip"), "no usable files", "skipped 5 of 5")


def test_options_are_checked():
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(".", channels=2)
    with pytest.raises(ValueError, match="resize"):
        ImageFolder(".", resize="squash")
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(".", on_error="ignore")
    assert issubclass(DataError, ValueError)


def test_writing_into_an_example_leaves_the_dataset_unchanged(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    ds = ImageFolder(tmp_path, size=4, channels=1)
    ds[0][0].fill_(0.5)
    assert torch.equal(ds[0][0], -torch.ones(1, 4, 4))


# Every PNG mode, against a reference conversion computed here from the same ramp in floating point.
RAMP = np.linspace(0.0, 1.0, 16 * 16).reshape(16, 16)  # black to white


def _png(path, mode):
    """A black-to-white ramp saved in ``mode``; returns the file's (H, W, 3) colour and (H, W) grey, in [0, 1]."""
    rgb = np.stack([RAMP, RAMP[::-1], RAMP.T], axis=-1)  # distinct channels, so luma is tested too
    if mode == "1":
        bits = RAMP >= 0.5
        Image.fromarray(bits).save(path)
        grey = bits.astype(np.float64)
        return np.repeat(grey[..., None], 3, -1), grey
    if mode in ("L", "LA"):
        v = np.round(RAMP * 255).astype(np.uint8)
        pixels = v if mode == "L" else np.stack([v, np.full_like(v, 200)], -1)
        Image.fromarray(pixels).save(path)
        grey = v / 255.0
        return np.repeat(grey[..., None], 3, -1), grey
    if mode in ("I;16", "I"):  # a 16-bit PNG: Pillow reads it as I;16 (older versions: I)
        v = np.round(RAMP * 65535).astype(np.uint16)
        Image.fromarray(v).save(path)
        grey = v / 65535.0
        return np.repeat(grey[..., None], 3, -1), grey
    v = np.round(rgb * 255).astype(np.uint8)
    if mode == "P":
        Image.fromarray(v).quantize(colors=256, dither=Image.Dither.NONE).save(path)
        v = np.asarray(Image.open(path).convert("RGB"))  # the palette's colours are what the file holds
    elif mode == "RGBA":
        Image.fromarray(np.concatenate([v, np.full((16, 16, 1), 77, np.uint8)], -1)).save(path)
    else:
        Image.fromarray(v).save(path)
    colour = v / 255.0
    return colour, colour @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_png_mode_and_depth_converts_like_the_reference(tmp_path, monkeypatch, mode, channels):
    colour, grey = _png(tmp_path / "ramp.png", mode)
    expected = grey[None] if channels == 1 else colour.transpose(2, 0, 1)
    dataset = ImageFolder(tmp_path, size=16, channels=channels, convert=True)
    with Image.open(tmp_path / "ramp.png") as img:
        assert img.mode == {"I": "I;16"}.get(mode, mode)
        if mode == "I":  # the mode older Pillows read 16-bit PNGs in
            monkeypatch.setattr(Image.Image, "load", lambda self: None)
            img = img.convert("I")
            monkeypatch.setattr(Image, "open", lambda path, *a: img)
    x, _ = dataset[0] if mode != "I" else (dataset.load(tmp_path / "ramp.png"), 0)
    assert x.shape == (channels, 16, 16)
    np.testing.assert_allclose(x.numpy(), expected * 2 - 1, atol=2e-6)
    if mode in ("I;16", "I", "L", "1"):  # a black-to-white ramp has mean 0 at any depth and channel count
        assert abs(float(x.mean())) < 0.01


def test_a_jpeg_with_an_exif_orientation_is_read_upright(tmp_path):
    from PIL import Image

    pixels = np.zeros((8, 16, 3), np.uint8)  # stored 8 rows × 16 columns, left half white
    pixels[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    Image.fromarray(pixels).save(tmp_path / "camera.jpg", exif=exif, quality=95)
    x, _ = ImageFolder(tmp_path, size=(16, 8), channels=3, resize="none")[0]  # as viewers show it: 16 tall, 8 wide
    assert x.shape == (3, 16, 8)
    assert x[:, :7].mean() > 0.9 and x[:, 9:].mean() < -0.9  # the white half is on top after the rotation


def test_no_progress_also_silences_the_check_of_a_large_folder(tmp_path, capsys):
    """`diffkit train --no-progress` (progress=False) shows no 'checking …' bar, even for 500+ files."""
    from diffkit.build import build_dataset
    from diffkit.config import validate

    for i in range(500):
        Image.fromarray(np.full((4, 4), i % 256, np.uint8)).save(tmp_path / f"{i:03d}.png")
    config = validate({"run": {"dir": str(tmp_path / "run")},
                       "data": {"dataset": "image_folder", "options": {"root": str(tmp_path), "size": 4, "channels": 1}},
                       "model": {"backbone": "unet2d", "options": {"in_channels": 1, "channels": [8]}}})
    capsys.readouterr()
    assert len(build_dataset(config, progress=False)) == 500
    assert "checking" not in capsys.readouterr().err
    build_dataset(config)
    assert "checking" in capsys.readouterr().err  # the bar the quiet run leaves out


@pytest.mark.parametrize("planes, mode", [(3, "RGB"), (4, "RGBA"), (2, "LA")])
def test_16_bit_colour_pngs_keep_their_full_depth(tmp_path, planes, mode):
    """Pillow reads these at 8 bits; diffkit reads them at 16 (a step of 1/65535 survives)."""
    import png

    values = (np.arange(4 * 4 * planes).reshape(4, 4, planes) * 1000 + 3).astype(np.uint16)  # odd: not 8-bit steps
    with open(tmp_path / "deep.png", "wb") as f:
        png.Writer(4, 4, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16).write(f, values.reshape(4, -1).tolist())
    assert Image.open(tmp_path / "deep.png").mode != "I;16"  # what Pillow makes of it
    channels = 1 if planes == 2 else 3
    x, _ = ImageFolder(tmp_path, size=4, channels=channels, convert=True)[0]
    expected = torch.from_numpy(values[..., :channels].astype(np.float64) / 65535).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(x.double(), expected, atol=1e-6)


def test_running_out_of_memory_blames_the_size_option_not_the_file(tmp_path, monkeypatch, data_error):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")

    def no_memory(self, path, x):  # what size = 100000 does: a 40 GB tensor
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 40000000000 bytes")

    monkeypatch.setattr(ImageFolder, "_fit", no_memory)
    message = data_error(lambda: ImageFolder(tmp_path, size=100000, channels=1), "a.png", "ran out of memory",
                         "(1, 100000, 100000)", "check the dataset's size options")
    assert "corrupt" not in message
