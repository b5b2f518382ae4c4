"""``unet-mdct``: the circular MDCT is orthogonal, the backbone maps waveforms to waveforms, and bad shapes
fail with one line naming the option."""

import math
from pathlib import Path

import pytest
import torch

from diffkit import GaussianDiffusion
from diffkit.config import load_config
from diffkit.registry import create_backbone
from diffkit.schedules import make_beta_schedule
from diffkit_plugins.spectral import MDCT, MDCTUNet


@pytest.mark.parametrize("bins, length", [(2, 8), (4, 4), (16, 64), (64, 4096)])
def test_the_circular_mdct_is_an_orthogonal_matrix(bins, length):
    mdct = MDCT(bins).double()
    mdct.basis = mdct.basis.double()
    # The matrix, column by column: the transform of each unit impulse.
    eye = torch.eye(length, dtype=torch.float64)[:, None, :]
    w = mdct(eye).reshape(length, length)  # row i: the coefficients of impulse i
    assert torch.allclose(w @ w.T, torch.eye(length, dtype=torch.float64), atol=1e-6)
    x = torch.randn(3, 2, length, dtype=torch.float64)
    z = mdct(x)
    assert z.shape == (3, 2, bins, length // bins)
    assert torch.allclose(mdct.inverse(z), x, atol=1e-6)
    assert torch.allclose(z.square().sum(), x.square().sum(), rtol=1e-6)


@pytest.mark.parametrize("k", [3, 10, 40])
def test_a_cosine_at_a_bins_centre_frequency_lands_in_that_bin(k):
    bins, length = 64, 4096
    n = torch.arange(length, dtype=torch.float64)
    # (k + 0.5) / (2 bins) cycles per sample: the centre of bin k; a whole number of cycles over the clip.
    x = torch.cos(2 * math.pi * (k + 0.5) / (2 * bins) * n)
    assert ((k + 0.5) * length / (2 * bins)) % 1 == 0
    energy = MDCT(bins).double()(x[None, None]).square().sum(-1)[0, 0]  # per bin, summed over frames
    share = energy / energy.sum()
    # The sine window's leakage: 8 / pi^2 of the energy in the bin itself, about 0.09 in each neighbour.
    assert share[k].item() == pytest.approx(8 / math.pi ** 2, abs=1e-3)
    assert share[k - 1].item() == pytest.approx(share[k + 1].item(), abs=1e-3)
    assert share[k - 1:k + 2].sum() > 0.99


class _Identity(torch.nn.Module):
    def forward(self, z, t, cond=None):
        return z


def test_the_default_backbone_is_the_speech_examples_network():
    example = load_config(Path(__file__).resolve().parents[1] / "examples" / "speech_digits.toml").model
    options = {k: v for k, v in example.options.items() if k != "cond_dim"}
    default, configured = create_backbone("unet-mdct"), create_backbone(example.backbone, **options)
    assert str(default) == str(configured)
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in configured.parameters())


def test_with_an_identity_network_the_backbone_returns_its_input():
    model = MDCTUNet(bins=16, channels=[8, 8], attention_levels=[])
    model.unet = _Identity()
    x = torch.randn(2, 1, 256)
    assert torch.allclose(model(x, torch.zeros(2, dtype=torch.long)), x, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2])
def test_the_registered_backbone_maps_waveforms_to_waveforms_and_trains(channels):
    model = create_backbone("unet-mdct", bins=16, in_channels=channels, channels=[8, 16], attention_levels=[1],
                            cond_dim=4)
    assert model.size_multiple == 64  # 16 bins × the default patch 2 × one factor 2
    x = torch.randn(3, channels, 512)
    out = model(x, torch.tensor([0, 5, 9]), torch.randn(3, 4))
    assert out.shape == x.shape
    diffusion = GaussianDiffusion(create_backbone("unet-mdct", bins=16, in_channels=channels, channels=[8, 16],
                                                  attention_levels=[]),
                                  [channels, 512], make_beta_schedule("cosine", 10), objective="v")
    loss = diffusion(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in diffusion.parameters() if p.requires_grad)


def test_bad_shapes_and_options_fail_with_one_line_naming_them():
    model = create_backbone("unet-mdct", bins=16, channels=[8, 16], attention_levels=[])
    with pytest.raises(ValueError, match=r"multiples of 64; got 500 \(nearest accepted: 448 or 512\)"):
        model(torch.randn(1, 1, 500), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expects waveforms \(B, 1, L\), got shape \(1, 8, 8\)"):
        model(torch.randn(1, 8, 8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"unet-mdct: 'attention_levels' \[3\] out of range"):
        create_backbone("unet-mdct", channels=[8, 16], attention_levels=[3])
    for bad in (15, 64.5, "64", True):
        with pytest.raises(ValueError, match="'bins' must be an even number"):
            create_backbone("unet-mdct", bins=bad)
    with pytest.raises(ValueError, match=r"'bins' \(8\) must be a multiple of the UNet's total downsampling \(32"):
        create_backbone("unet-mdct", bins=8, channels=[8, 8, 8], attention_levels=[], downsample_factors=4)


def test_a_non_integer_bins_from_the_command_line_is_refused_in_one_line_before_the_run_exists(tmp_path, capsys):
    from diffkit.cli import main
    from diffkit.data import TonesDataset, save_wav

    tones = TonesDataset(num_examples=2, sample_rate=8000, length=4096, num_classes=1)
    for i in range(2):
        save_wav(tones[i][0], tmp_path / "wavs" / f"{i}_digit" / "a.wav", 8000)
    run = tmp_path / "run"
    example = Path(__file__).resolve().parents[1] / "examples" / "speech_digits.toml"
    code = main(["train", str(example), "--set", f"run.dir={run}", "--set", f"data.options.root={tmp_path / 'wavs'}",
                 "--set", "model.options.bins=64.5", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and not run.exists()
    assert err.strip().splitlines() == ["diffkit: error: model.options: unet-mdct: 'bins' must be an even number >= 2, "
                                        "got 64.5"]
