"""AudioDDPM and ConditionalDDPM: the seed's names, as GaussianDiffusion with plugin backbones."""

import pytest
import torch

import diffkit
from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule

SMALL_1D = dict(channels=[8, 16], num_res_blocks=1, attention_levels=[1])


def test_audio_ddpm_defaults_to_the_seeds_unet1d():
    ddpm = diffkit.AudioDDPM()
    assert isinstance(ddpm, diffkit.GaussianDiffusion)
    assert ddpm.input_shape == (1, 16384) and ddpm.num_timesteps == 1000
    torch.testing.assert_close(ddpm.betas, linear_beta_schedule(1000))
    unet = ddpm.model
    assert type(unet).__name__ == "UNet1D"
    assert (unet.in_channels, unet.out_channels, unet.num_levels) == (1, 1, 4)
    widths = [m.conv1.out_channels for m in unet.down.modules() if type(m).__name__ == "ResBlock"]
    assert widths == [32, 32, 64, 64, 128, 128, 256, 256]  # channels=[32, 64, 128, 256], two blocks each
    # attention_levels=[2]: after each 128-wide block down (2) and up (3); the middle one at 256.
    attention = [m.qkv.in_channels for m in unet.modules() if type(m).__name__ == "AttentionBlock"]
    assert attention == [128, 128, 256, 128, 128, 128]


def test_audio_ddpm_trains_and_samples_with_options():
    ddpm = diffkit.AudioDDPM(input_shape=64, betas=cosine_beta_schedule(50), backbone_options=SMALL_1D, objective="v")
    assert ddpm.input_shape == (1, 64) and ddpm.objective == "v"
    loss = ddpm(torch.randn(2, 1, 64))
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in ddpm.model.parameters())
    assert ddpm.sample(2, sampler="ddim", steps=3).shape == (2, 1, 64)


def test_audio_ddpm_with_the_audio_fast_preset_replaces_the_seeds_network():
    ddpm = diffkit.AudioDDPM(input_shape=4096, backbone_options={"preset": "audio-fast"}, objective="v",
                             betas=cosine_beta_schedule(1000))
    assert (ddpm.model.patch_size, ddpm.model.conv_in.out_channels, ddpm.model.num_levels) == (8, 64, 3)
    assert diffkit.AudioDDPM(input_shape=4096).model.patch_size == 1  # the seed's default is unchanged
    assert ddpm(torch.rand(2, 1, 4096) * 2 - 1).ndim == 0


def test_audio_ddpm_takes_a_backbone_name_or_module():
    by_name = diffkit.AudioDDPM("transformer", (2, 32), backbone_options=dict(dims=1, patch_size=4, width=16, depth=1, heads=2))
    assert by_name.model.in_channels == 2
    module = diffkit.create_backbone("unet1d", **SMALL_1D)
    assert diffkit.AudioDDPM(module, (1, 32)).model is module
    with pytest.raises(ValueError, match="'backbone_options' apply to a backbone built by name"):
        diffkit.AudioDDPM(module, (1, 32), backbone_options=SMALL_1D)
    with pytest.raises(ValueError, match=r"'input_shape' is \(channels, length\)"):
        diffkit.AudioDDPM(input_shape=(1, 8, 8))


def test_audio_ddpm_with_a_conditioner_builds_the_backbone_with_its_width():
    labels = diffkit.create_conditioner("labels", num_classes=2, dim=12)
    ddpm = diffkit.AudioDDPM(input_shape=32, conditioner=labels, backbone_options=SMALL_1D)
    assert ddpm.model.cond_dim == 12
    assert ddpm(torch.randn(2, 1, 32), torch.tensor([0, 1])).ndim == 0


def test_conditional_ddpm_by_name_trains_and_guides():
    ddpm = diffkit.ConditionalDDPM("unet2d", (1, 8, 8), num_classes=3, dim=16, backbone_options=dict(channels=[8, 16], attention_levels=[]))
    assert isinstance(ddpm, diffkit.GaussianDiffusion)
    assert ddpm.model.cond_dim == 16 and ddpm.conditioner.num_classes == 3 and ddpm.conditioner.dropout == 0.1
    assert ddpm(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])).ndim == 0
    samples = ddpm.eval().sample(2, y=torch.tensor([0, 2]), guidance_scale=3.0, sampler="ddim", steps=3)
    assert samples.shape == (2, 1, 8, 8)


def test_conditional_ddpm_takes_the_width_from_a_given_module():
    module = diffkit.create_backbone("transformer", dims=2, cond_dim=24, width=16, depth=1, heads=2)
    ddpm = diffkit.ConditionalDDPM(module, (1, 8, 8), num_classes=5, label_dropout=0.2)
    assert ddpm.model is module and ddpm.conditioner.dim == 24 and ddpm.conditioner.dropout == 0.2
    with pytest.raises(ValueError, match=r"'dim'=8 but the backbone was built with cond_dim=24"):
        diffkit.ConditionalDDPM(module, (1, 8, 8), num_classes=5, dim=8)
    with pytest.raises(ValueError, match=r"built without cond_dim; build it with cond_dim=128"):
        diffkit.ConditionalDDPM(diffkit.create_backbone("unet2d", channels=[8], attention_levels=[]), (1, 8, 8), num_classes=5)
    with pytest.raises(TypeError, match="builds its own 'labels' conditioner"):
        diffkit.ConditionalDDPM(module, (1, 8, 8), num_classes=5, conditioner=None)
