import math

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from diffkit.data import (
    AudioFolder,
    ImageFolder,
    VolumeFolder,
    save_image_grid,
    save_images,
    save_samples,
    save_spectrogram_png,
    save_volume,
    save_volume_slices_png,
    save_wav,
)


def test_images_round_trip_through_png_within_one_level(tmp_path):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 5.0, -5.0  # out of range: clipped
    paths = save_images(x, tmp_path / "out", stem="img")
    assert [p.name for p in paths] == ["img_0000.png", "img_0001.png", "img_0002.png"]
    ds = ImageFolder(tmp_path / "out", size=8, channels=3)
    back = torch.stack([ds[i][0] for i in range(3)])
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # exactly the 8-bit quantisation
    assert torch.allclose(back, expected, atol=1e-6)
    assert (back - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6
    assert back[0, 0, 0, 0] == 1 and back[0, 0, 0, 1] == -1


def test_image_grid_places_each_image(tmp_path):
    x = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    path = save_image_grid(x, tmp_path / "grid.png", nrow=2, pad=1)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert grid[1, 1] == 0 and grid[1, 6] == 128 and grid[6, 1] == 255 and grid[6, 6] == 0  # last cell empty


def test_wav_round_trip_within_sixteen_bit_quantisation(tmp_path):
    x = torch.stack([torch.linspace(-1, 1, 1000), torch.sin(torch.arange(1000.0) / 7)])
    x[1, 0] = 3.0  # clipped to full scale
    path = save_wav(x, tmp_path / "out" / "two.wav", sample_rate=8000)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (8000, 2, 1000, "PCM_16")
    back = AudioFolder(tmp_path / "out", sample_rate=8000, length=1000, channels=2)[0][0]
    assert back.shape == (2, 1000)
    assert (back - x.clamp(-1, 1)).abs().max() <= 2 / 32768
    assert back[1, 0] == pytest.approx(1.0, abs=1 / 32768) and back[0, 0] == pytest.approx(-1.0, abs=1 / 32768)


def test_volume_round_trip_is_exact_and_clipped(tmp_path):
    x = torch.rand(2, 3, 4, 5) * 2 - 1
    x[0, 0, 0, 0] = 9.0
    path = save_volume(x, tmp_path / "v" / "a.npy")
    array = np.load(path)
    assert array.dtype == np.float32 and array.shape == (2, 3, 4, 5)
    assert np.array_equal(array, x.clamp(-1, 1).numpy())
    back = VolumeFolder(tmp_path / "v", shape=(3, 4, 5), channels=2, normalize="none")[0][0]
    assert torch.equal(back, x.clamp(-1, 1))


def test_spectrogram_puts_higher_tones_higher(tmp_path):
    t = torch.arange(4096) / 16000
    x = torch.stack([torch.sin(2 * torch.pi * f * t)[None] * 0.5 for f in (300.0, 3000.0)])
    path = save_spectrogram_png(x, tmp_path / "spec.png", sample_rate=16000)
    image = np.asarray(Image.open(path).convert("RGB")).astype(float)
    n_mels, frames, pad = 64, 4096 // 16 + 1, 2  # hop 4096 // 256 = 16: 257 frames
    assert image.shape == (2 * (n_mels + pad) + pad, frames + 2 * pad, 3)
    brightness = image.sum(-1)
    rows = [brightness[pad + i * (n_mels + pad) : pad + i * (n_mels + pad) + n_mels, pad:-pad].mean(1) for i in range(2)]
    low_row, high_row = (int(np.argmax(r)) for r in rows)
    assert high_row < low_row - 10  # row 0 is the top: the 3 kHz tone sits well above the 300 Hz one
    assert low_row > n_mels // 2


def test_volume_slices_show_the_middle_planes(tmp_path):
    x = -torch.ones(2, 1, 4, 6, 8)
    x[0, 0, 2, 3, 4] = 1.0  # on all three middle planes of the first volume
    path = save_volume_slices_png(x, tmp_path / "slices.png")
    image = np.asarray(Image.open(path))
    cell_h, cell_w, pad = 6, 8, 2  # the largest plane is H x W = 6 x 8
    assert image.shape == (2 * (cell_h + pad) + pad, 3 * (cell_w + pad) + pad)
    first = image[pad : pad + cell_h]
    bright = [tuple(np.argwhere(first[:, pad + k * (cell_w + pad) : pad + k * (cell_w + pad) + cell_w] == 255)[0]) for k in range(3)]
    assert bright == [(3, 4), (2, 4), (2, 3)]  # (H, W), (D, W), (D, H) coordinates of the voxel
    assert (image[pad + cell_h + pad :] < 255).all()  # the second volume is all dark


@pytest.mark.parametrize(
    "modality, shape, names",
    [
        ("image", (3, 1, 8, 8), ["s.png"]),
        ("audio", (2, 1, 512), ["s_0000.wav", "s_0001.wav", "s_spectrogram.png"]),
        ("volume", (2, 1, 4, 4, 4), ["s_0000.npy", "s_0001.npy", "s_slices.png"]),
    ],
)
def test_save_samples_writes_each_modality_in_its_own_form(tmp_path, modality, shape, names):
    x = torch.rand(shape) * 2 - 1
    paths = save_samples(x, modality, tmp_path, stem="s", sample_rate=8000)
    assert [p.name for p in paths] == names and all(p.is_file() for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_save_samples_writes_generated_clips_without_their_dc_offset_unless_kept(tmp_path):
    n = torch.arange(800.0)
    tone = 0.5 * torch.sin(2 * math.pi * 20 * n / 800)  # 20 whole periods: mean 0
    signs = 1.0 - 2.0 * (n % 2)  # +1, -1, …: a Nyquist-rate component, orthogonal to the tone and to a constant
    x = torch.stack([tone + 0.2 + 0.01 * signs, tone - 0.1 - 0.03 * signs])[:, None]  # (B, 1, L), known offsets
    removed = save_samples(x, "audio", tmp_path / "default", stem="s", sample_rate=8000)
    kept = save_samples(x, "audio", tmp_path / "keep", stem="s", sample_rate=8000, dc_offset="keep", nyquist="keep")
    mean_only = save_samples(x, "audio", tmp_path / "mean", stem="s", sample_rate=8000, nyquist="keep")
    for i, (offset, nyquist) in enumerate([(0.2, 0.01), (-0.1, -0.03)]):
        a, b, c = (sf.read(str(paths[i]), dtype="float64")[0] for paths in (removed, kept, mean_only))
        assert abs(a.mean()) < 1 / 32768 and b.mean() == pytest.approx(offset, abs=1 / 32768)
        assert np.abs(a - tone.numpy()).max() <= 2 / 32768  # the tone itself, to 16-bit rounding
        assert np.abs(b - x[i, 0].numpy()).max() <= 2 / 32768  # as sampled
        assert np.abs(c - (tone + nyquist * signs).numpy()).max() <= 2 / 32768  # only the mean gone


def test_save_samples_rejects_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        save_samples(torch.zeros(1, 1, 64), "audio", tmp_path)
    with pytest.raises(ValueError, match="rank 5"):
        save_samples(torch.zeros(1, 4, 4, 4), "volume", tmp_path)
    with pytest.raises(ValueError, match="modality"):
        save_samples(torch.zeros(1, 1, 4, 4), "video", tmp_path)
    with pytest.raises(ValueError, match=r"\(C, L\)"):
        save_wav(torch.zeros(64), tmp_path / "a.wav", 8000)


def test_small_image_samples_are_enlarged_by_pixel_repetition(tmp_path):
    x = torch.full((1, 1, 8, 8), -1.0)
    x[0, 0, 0, 0] = 1.0
    (path,) = save_samples(x, "image", tmp_path, stem="s")
    grid = np.asarray(Image.open(path))
    assert grid.shape == (8 * 8 + 4, 8 * 8 + 4)  # 8×8 → 64×64, plus the 2-pixel border
    assert (grid[2:10, 2:10] == 255).all() and grid[10, 10] == 0
