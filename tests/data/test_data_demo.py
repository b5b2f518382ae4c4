import re
import sys

import numpy as np
import pytest
import torch

from diffkit.data import DATASETS, DigitsDataset, ShapesDataset, SolidsDataset, TonesDataset, create_dataset


def same_examples(a, b, n=6):
    return all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(n))


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: ShapesDataset(num_examples=8, size=16, seed=seed),
        lambda seed: TonesDataset(num_examples=8, length=256, seed=seed),
        lambda seed: SolidsDataset(num_examples=8, size=8, seed=seed),
    ],
    ids=["shapes", "tones", "solids"],
)
def test_demo_sets_follow_the_contract_and_are_deterministic(make):
    ds = make(0)
    assert len(ds) == 8
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == ds.example_shape
        assert x.min() >= -1 and x.max() <= 1
        assert isinstance(y, int) and 0 <= y < len(ds.classes)
    assert same_examples(ds, make(0))
    assert not same_examples(ds, make(1))


def test_tones_classes_have_their_pitch():
    ds = TonesDataset(num_examples=60, sample_rate=8000, length=4096, num_classes=6)
    assert ds.sample_rate == 8000 and ds.example_shape == (1, 4096) and ds.modality == "audio"
    seen = set()
    for i in range(len(ds)):
        x, y = ds[i]
        seen.add(y)
        assert x.abs().max() <= 0.9
        spectrum = np.abs(np.fft.rfft(x[0].numpy()))
        peak = np.fft.rfftfreq(4096, 1 / 8000)[spectrum.argmax()]
        if y == 0:
            assert 105 <= peak <= 225
        elif y == 1:
            assert 435 <= peak <= 885
        elif y in (2, 3):  # a chirp spreads over an octave: no bin holds most of the energy
            assert spectrum.max() ** 2 < 0.5 * (spectrum**2).sum()
    assert seen == set(range(6))
    assert TonesDataset(num_examples=30, num_classes=2).classes == ["low tone", "high tone"]
    assert {TonesDataset(num_examples=30, num_classes=2)[i][1] for i in range(30)} == {0, 1}


def test_tones_rising_chirp_rises():
    ds = TonesDataset(num_examples=40, sample_rate=8000, length=8000, num_classes=4)
    for label, sign in ((2, 1), (3, -1)):
        x = next(ds[i][0][0].numpy() for i in range(len(ds)) if ds[i][1] == label)
        halves = [np.fft.rfftfreq(4000, 1 / 8000)[np.abs(np.fft.rfft(h)).argmax()] for h in (x[:4000], x[4000:])]
        assert sign * (halves[1] - halves[0]) > 100


def test_solids_spheres_and_cubes():
    ds = SolidsDataset(num_examples=20, size=16)
    assert ds.classes == ["sphere", "cube"] and ds.example_shape == (1, 16, 16, 16)
    labels = set()
    for i in range(len(ds)):
        x, y = ds[i]
        labels.add(y)
        inside = x[0] > -1
        values = x[0][inside].unique()
        assert len(values) == 1 and 0.2 <= values.item() <= 1.0  # one brightness on a -1 background
        idx = inside.nonzero()
        box = (idx.max(0).values - idx.min(0).values + 1).prod().item()
        fill = inside.sum().item() / box
        if y == 1:
            assert fill == 1.0  # a cube fills its bounding box
        else:
            assert 0.4 < fill < 0.7  # a sphere fills pi/6 of it
    assert labels == {0, 1}


def test_digits_splits_range_and_size():
    train, test, everything = DigitsDataset(split="train"), DigitsDataset(split="test"), DigitsDataset(split="all")
    assert (len(train), len(test), len(everything)) == (1438, 359, 1797)
    assert train.classes == [str(d) for d in range(10)] and train.modality == "image"
    assert set(train.labels) == set(range(10)) and set(test.labels) == set(range(10))
    assert everything.images.min() == -1 and everything.images.max() == 1
    # train and test are disjoint and together make up the whole set
    key = lambda ds: sorted(tuple(ds.images[i].flatten().tolist()) + (ds.labels[i],) for i in range(len(ds)))  # noqa: E731
    assert sorted(key(train) + key(test)) == key(everything)
    assert same_examples(train, DigitsDataset(split="train"))
    big = DigitsDataset(size=16, split="test")
    assert big.example_shape == (1, 16, 16) and big[0][0].shape == (1, 16, 16) and big[0][1] == test[0][1]
    # each 2x2 block of the upsampled digit follows the source pixel it came from (bilinear blurs a little)
    blocks = big.images[:20].reshape(20, 8, 2, 8, 2).mean((2, 4)).flatten()
    assert np.corrcoef(blocks.numpy(), test.images[:20].flatten().numpy())[0, 1] > 0.95


def test_digits_names_scikit_learn_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        DigitsDataset()


def test_create_dataset_by_name():
    assert set(DATASETS) == {"shapes", "tones", "solids", "digits", "image_folder", "audio_folder", "volume_folder"}
    tones = create_dataset("tones", num_examples=4, sample_rate=8000, length=64, num_classes=3, seed=5)
    assert isinstance(tones, TonesDataset) and tones.sample_rate == 8000 and len(tones) == 4
    shapes = create_dataset("shapes", num_examples=3, size=8, channels=1, seed=2)
    assert shapes.example_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*'tones'"):
        create_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\].*'channels'"):
        create_dataset("shapes", colour=True)


def test_demo_options_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        TonesDataset(num_classes=7)
    with pytest.raises(ValueError, match="sample_rate"):
        TonesDataset(sample_rate=2000)
    with pytest.raises(ValueError, match="size"):
        SolidsDataset(size=4)
    with pytest.raises(ValueError, match="split"):
        DigitsDataset(split="val")


@pytest.mark.parametrize("name, options, message", [
    ("audio_folder", {"labels": "false"}, "option 'labels' expects true or false, got 'false'"),
    ("audio_folder", {"sample_rate": 8000.5}, "option 'sample_rate' expects an integer, got 8000.5"),
    ("audio_folder", {"sample_rate": "8000"}, "option 'sample_rate' expects an integer, got '8000'"),
    ("image_folder", {"size": [8]}, "option 'size' expects an integer or a list of 2 integers, got [8]"),
    ("volume_folder", {"shape": [8, 8]}, "option 'shape' expects a list of 3 integers, got [8, 8]"),
    ("volume_folder", {"flip_axes": [0, "a"]}, "option 'flip_axes' expects a list of integers"),
])
def test_dataset_options_of_the_wrong_type_are_refused_by_name(tmp_path, name, options, message):
    """A config's "false" is a true string: refused before the folder is read, naming the option."""
    from diffkit.data import OptionTypeError

    with pytest.raises(OptionTypeError, match=re.escape(message)) as info:
        create_dataset(name, root=str(tmp_path), **options)
    assert info.value.key == next(iter(options))


def test_numpy_numbers_are_accepted_as_option_values():
    assert create_dataset("tones", num_examples=np.int64(4), sample_rate=np.int32(4000), length=64).example_shape == (1, 64)
