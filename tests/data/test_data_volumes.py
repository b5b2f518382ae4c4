import sys

import numpy as np
import pytest
import torch

from diffkit.data import VolumeFolder, create_dataset


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def test_minmax_maps_each_volume_linearly_onto_minus_one_to_one(tmp_path):
    array = np.arange(3, 3 + 64, dtype=np.int16).reshape(4, 4, 4)  # 3 … 66
    write(tmp_path / "ramp.npy", array)
    ds = VolumeFolder(tmp_path, shape=(4, 4, 4))
    assert ds.modality == "volume" and ds.example_shape == (1, 4, 4, 4) and ds.classes is None
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 4, 4, 4) and y == 0
    assert x.min() == -1 and x.max() == 1
    expected = torch.from_numpy((array - 3) / 63 * 2 - 1).float()[None]
    assert torch.allclose(x, expected, atol=1e-6)


def test_channels_are_normalised_separately_and_constant_ones_become_minus_one(tmp_path):
    array = np.stack([np.linspace(0, 10, 8).reshape(2, 2, 2), np.full((2, 2, 2), 7.0)])
    write(tmp_path / "two.npy", array)
    x, _ = VolumeFolder(tmp_path, shape=(2, 2, 2), channels=2)[0]
    assert x[0].min() == -1 and x[0].max() == 1
    assert torch.equal(x[1], -torch.ones(2, 2, 2))


def test_percentile_normalisation_ignores_one_outlier(tmp_path):
    array = np.linspace(0, 1, 1000).reshape(10, 10, 10)
    array[0, 0, 0] = 1e6
    write(tmp_path / "spike.npy", array)
    x, _ = VolumeFolder(tmp_path, shape=(10, 10, 10), normalize="percentile")[0]
    assert x[0, 0, 0, 0] == 1  # clipped, not stretching the rest
    assert x[0, 5, 0, 0] == pytest.approx(0.0, abs=0.02)  # the middle of the ramp stays in the middle
    assert x.min() == -1


def test_normalize_none_keeps_values_and_rejects_out_of_range(tmp_path, data_error):
    write(tmp_path / "ok" / "ok.npy", np.full((2, 2, 2), 0.25, np.float32))
    assert torch.equal(VolumeFolder(tmp_path / "ok", shape=(2, 2, 2), normalize="none")[0][0], torch.full((1, 2, 2, 2), 0.25))
    write(tmp_path / "hot" / "hot.npy", np.full((2, 2, 2), 3.0))
    data_error(lambda: VolumeFolder(tmp_path / "hot", shape=(2, 2, 2), normalize="none"), "hot.npy", "[3, 3]", "[-1, 1]")


def test_centre_crop_and_pad_with_minus_one(tmp_path):
    array = np.zeros((6, 5, 4), np.float32)
    array[1:5] = np.arange(1, 5, dtype=np.float32)[:, None, None]  # depth slices 1..4 hold 1..4, the ends 0
    write(tmp_path / "v.npy", array)
    x, _ = VolumeFolder(tmp_path, shape=(4, 5, 8))[0]
    assert x.shape == (1, 4, 5, 8)
    # D: 6 → 4 keeps the slices 1..4 (min-max over the whole 0..4 volume); W: 4 → 8 adds 2 on each side.
    assert torch.equal(x[0, :, 0, 2:6], torch.tensor([0.25, 0.5, 0.75, 1.0])[:, None].expand(4, 4) * 2 - 1)
    assert torch.equal(x[0, :, :, :2], -torch.ones(4, 5, 2)) and torch.equal(x[0, :, :, 6:], -torch.ones(4, 5, 2))
    odd = VolumeFolder(tmp_path, shape=(6, 8, 4))[0][0]  # H: 5 → 8 puts 1 before and 2 after
    assert (odd[0, 1, :1] == -1).all() and (odd[0, 1, 1:6] == -0.5).all() and (odd[0, 1, 6:] == -1).all()


def test_random_crop_and_flips_use_torch_rng(tmp_path):
    array = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    write(tmp_path / "v.npy", array)
    ds = VolumeFolder(tmp_path, shape=(4, 4, 4), crop="random", flip_axes=(2,))
    normalised = torch.from_numpy((array.astype(np.float64) / array.max() * 2 - 1).astype(np.float32))

    def draws():
        out = []
        for _ in range(12):
            x = ds[0][0][0]
            flipped = bool(x[0, 0, 0] > x[0, 0, -1])
            unflipped = x.flip(-1) if flipped else x
            d, h, w = np.unravel_index(int(torch.argmin(unflipped)), (4, 4, 4))
            assert (d, h, w) == (0, 0, 0)
            corner = (normalised == unflipped[0, 0, 0]).nonzero()[0].tolist()
            assert torch.equal(unflipped, normalised[corner[0] : corner[0] + 4, corner[1] : corner[1] + 4, corner[2] : corner[2] + 4])
            out.append((tuple(corner), flipped))
        return out

    torch.manual_seed(1)
    first = draws()
    torch.manual_seed(1)
    assert draws() == first
    assert len({c for c, _ in first}) > 3 and 0 < sum(f for _, f in first) < 12


def test_labels_and_nifti_without_nibabel(tmp_path, data_error, monkeypatch):
    write(tmp_path / "a" / "x.npy", np.zeros((2, 2, 2)))
    write(tmp_path / "b" / "y.npy", np.ones((2, 2, 2)))
    ds = create_dataset("volume_folder", root=tmp_path, shape=(2, 2, 2), labels=True)
    assert ds.classes == ["a", "b"] and [ds[i][1] for i in range(2)] == [0, 1]
    (tmp_path / "a" / "scan.nii.gz").write_bytes(b"\x1f\x8b")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if not installed
    data_error(lambda: VolumeFolder(tmp_path, shape=(2, 2, 2)), "scan.nii.gz", "nibabel", "pip install")


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path, data_error):
    def only(name, content):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            np.save(folder / name, content)
        return folder

    (tmp_path / "empty").mkdir()
    data_error(lambda: VolumeFolder(tmp_path / "empty"), "empty", ".npy")
    data_error(lambda: VolumeFolder(only("junk.npy", b"definitely not numpy")), "junk.npy", "no NumPy header")
    whole = np.zeros((8, 8, 8), np.float32)
    folder = only("cut.npy", whole)
    (folder / "cut.npy").write_bytes((folder / "cut.npy").read_bytes()[:500])
    data_error(lambda: VolumeFolder(folder), "cut.npy", "corrupt")
    data_error(lambda: VolumeFolder(only("flat.npy", np.zeros((4, 4)))), "flat.npy", "rank 2", "(D, H, W)")
    data_error(lambda: VolumeFolder(only("five.npy", np.zeros((1, 1, 2, 2, 2)))), "five.npy", "rank 5")
    data_error(lambda: VolumeFolder(only("rgb.npy", np.zeros((3, 2, 2, 2)))), "rgb.npy", "3 channel", "expected 1")
    nan = np.zeros((2, 2, 2))
    nan[1, 1, 1] = np.nan
    data_error(lambda: VolumeFolder(only("nan.npy", nan)), "nan.npy", "1 NaN or infinite")
    data_error(lambda: VolumeFolder(only("inf.npy", np.full((2, 2, 2), np.inf))), "inf.npy", "8 NaN or infinite")
    data_error(lambda: VolumeFolder(only("text.npy", np.full((2, 2, 2), "a"))), "text.npy", "dtype")
    pickled = np.empty((2, 2, 2), dtype=object)
    data_error(lambda: VolumeFolder(only("pickle.npy", pickled)), "pickle.npy", "never loads")


def test_skip_counts_bad_volumes_in_one_warning(tmp_path, skip_warning):
    write(tmp_path / "good.npy", np.zeros((2, 2, 2)))
    write(tmp_path / "flat.npy", np.zeros((2, 2)))
    bad = np.zeros((2, 2, 2))
    bad[0, 0, 0] = np.nan
    write(tmp_path / "nan.npy", bad)
    ds, message = skip_warning(lambda: VolumeFolder(tmp_path, shape=(2, 2, 2), on_error="skip"))
    assert [p.name for p in ds.files] == ["good.npy"]
    assert message.startswith("skipped 2 of 3 files") and "flat.npy (has rank 2" in message and "nan.npy (holds 1 NaN" in message


def test_options_are_checked():
    with pytest.raises(ValueError, match="flip_axes"):
        VolumeFolder(".", flip_axes=(3,))
    with pytest.raises(ValueError, match="shape"):
        VolumeFolder(".", shape=(4, 4))
    with pytest.raises(ValueError, match="normalize"):
        VolumeFolder(".", normalize="zscore")


@pytest.mark.parametrize("normalize", ["minmax", "percentile"])
def test_values_near_the_float32_limit_scale_to_finite_numbers(tmp_path, normalize):
    """±3e38 is finite, but its span overflows float32: scaling must not turn it into NaN."""
    volume = np.zeros((4, 4, 4), np.float32)
    volume[0] = -3e38
    volume[-1] = 3e38
    np.save(tmp_path / "huge.npy", volume)
    x, _ = VolumeFolder(tmp_path, shape=(4, 4, 4), normalize=normalize)[0]
    assert torch.isfinite(x).all()
    assert float(x[0, 0].mean()) == -1.0 and float(x[0, -1].mean()) == 1.0 and float(x[0, 1].mean()) == 0.0


def test_finite_float64_beyond_float32s_range_is_normalised_not_called_infinite(tmp_path):
    array = np.linspace(-1, 1, 64).reshape(4, 4, 4) * 1e300
    write(tmp_path / "huge.npy", array)
    x, _ = VolumeFolder(tmp_path, shape=(4, 4, 4))[0]
    assert torch.allclose(x, torch.from_numpy(np.linspace(-1, 1, 64).reshape(1, 4, 4, 4)).float(), atol=1e-6)


def test_a_reader_gives_the_stored_array_and_the_inverse_of_its_normalisation(tmp_path):
    array = np.arange(64, dtype=np.uint16).reshape(4, 4, 4) * 900 + 17
    path = write(tmp_path / "r.npy", array)
    reader = VolumeFolder.reader(shape=(4, 4, 4), normalize="minmax")
    raw = reader.array(path)
    x, bounds = reader.normalized(path, raw)
    assert raw.dtype == np.uint16 and x.min() == -1 and x.max() == 1
    assert torch.allclose(VolumeFolder.denormalize(x, bounds), torch.from_numpy(raw[None].astype(np.float64)), atol=1e-2)
    assert torch.equal(reader.read(path), VolumeFolder(tmp_path, shape=(4, 4, 4))[0][0])
