"""unet1d / unet2d / unet3d: the protocol, long audio, volumes, checkpointing, the CIFAR-10 preset."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import diffkit
from diffkit.layers import Downsample, Upsample, group_norm, timestep_embedding
from diffkit.testing import check_backbone

TINY = dict(channels=[8, 16], num_res_blocks=1, attention_levels=[1])


@pytest.mark.parametrize("name, shape", [("unet1d", (2, 32)), ("unet2d", (1, 8, 8)), ("unet3d", (1, 8, 8, 8))])
def test_conforms_to_the_backbone_protocol(name, shape):
    checked = check_backbone(name, input_shape=shape, cond_dim=6, in_channels=shape[0], **TINY)
    assert {"uses t", "uses cond", "gradients", "bf16 autocast"} <= set(checked)


def test_conforms_with_checkpointing_dropout_and_factor_4():
    check_backbone("unet1d", input_shape=(1, 64), cond_dim=4, channels=[8, 16, 16], num_res_blocks=1,
                   attention_levels=[2], downsample_factors=[4, 2], dropout=0.1, gradient_checkpointing=True)


def test_narrow_levels_still_see_the_timestep():
    # Regression: with one channel per GroupNorm group, the norm after the embedding is added
    # subtracted it again, and a UNet of width ≤ 32 ignored t and cond entirely.
    assert [group_norm(c).num_groups for c in (8, 32, 64, 128, 256)] == [2, 8, 16, 32, 32]
    model = diffkit.create_backbone("unet2d", channels=[8, 16], attention_levels=[]).eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert (model(x, torch.tensor([0])) - model(x, torch.tensor([999]))).abs().max() > 1e-4


def test_ddpm_cifar10_preset_has_the_papers_35_7m_parameters():
    model = diffkit.create_backbone("unet2d", preset="ddpm-cifar10")
    assert sum(p.numel() for p in model.parameters()) == 35_746_307
    assert {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}


def test_long_audio_with_factor_4_downsampling():
    model = diffkit.create_backbone("unet1d", channels=[4, 8, 8, 8], num_res_blocks=1, attention_levels=[3],
                                    downsample_factors=4).eval()
    assert model.size_multiple == 64
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16384), torch.tensor([3])).shape == (1, 1, 16384)
        assert model(torch.randn(1, 1, 16384 + 64), torch.tensor([3])).shape == (1, 1, 16448)
    with pytest.raises(ValueError, match=r"multiples of 64.*16001 → 16000 or 16064"):
        model(torch.randn(1, 1, 16000 + 1), torch.tensor([3]))


@pytest.mark.parametrize("size", [32, 64])
def test_single_channel_volumes(size):
    model = diffkit.create_backbone("unet3d", channels=[4, 8, 8, 8], num_res_blocks=1, attention_levels=[3]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size, size), torch.tensor([500])).shape == (1, 1, size, size, size)


def test_the_seeds_unet1d_says_which_lengths_it_accepts():
    model = diffkit.create_backbone("unet1d", in_channels=1, out_channels=1, channels=[32, 64, 128, 256],
                                    attention_levels=[2])
    assert type(model).__name__ == "UNet1D" and model.size_multiple == 8
    with pytest.raises(ValueError, match=r"unet1d .* multiples of 8; got \(1001,\) \(nearest accepted: 1001 → 1000 or 1008\)"):
        model(torch.randn(1, 1, 1001), torch.tensor([0]))


@pytest.mark.parametrize("options, message", [
    (dict(downsample_factors=[2]), r"'downsample_factors' needs one factor per transition"),
    (dict(downsample_factors=1), r"'downsample_factors' must all be >= 2"),
    (dict(attention_levels=[4]), r"'attention_levels' \[4\] out of range"),
    (dict(channels=[]), r"'channels' must be a non-empty list"),
    (dict(upsample_mode="cubic"), r"unknown 'upsample_mode' 'cubic'; choose one of \['nearest', 'linear'\]"),
    (dict(mean_skip="false"), r"'mean_skip' must be true or false, got 'false'"),
    (dict(scale_shift_norm=1), r"'scale_shift_norm' must be true or false, got 1"),
    (dict(coordinates="yes"), r"'coordinates' must be true or false, got 'yes'"),
])
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        diffkit.create_backbone("unet1d", **{"channels": [8, 16, 16], **options})


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="presets: ddpm-cifar10"):
        diffkit.create_backbone("unet2d", preset="imagenet")
    with pytest.raises(ValueError, match="presets: none"):
        diffkit.create_backbone("unet3d", preset="ddpm-cifar10")


@pytest.mark.parametrize("factor, size", [(2, 8), (4, 16), (3, 9)])
def test_resampling_by_any_factor_round_trips_the_size(factor, size):
    x = torch.randn(1, 4, size, size)
    down = Downsample(2, 4, factor)(x)
    assert down.shape == (1, 4, size // factor, size // factor)
    assert Upsample(2, 4, factor)(down).shape == x.shape


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        torch.manual_seed(0)
        model = diffkit.create_backbone("unet3d", cond_dim=3, gradient_checkpointing=checkpointing, **TINY)
        gen = torch.Generator().manual_seed(1)
        x, cond = torch.randn(2, 1, 8, 8, 8, generator=gen), torch.randn(2, 3, generator=gen)
        model(x, torch.tensor([5, 700]), cond).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_saves_at_least_40_percent_of_activation_memory(monkeypatch):
    # The measurement of benchmarks/memory.py, on a small volume.
    spec = importlib.util.spec_from_file_location(
        "memory_benchmark", Path(__file__).parents[2] / "benchmarks" / "memory.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    case = bench.Case("unet3d", "unet3d", (1, 1, 16, 16, 16), dict(channels=[8, 16], attention_levels=[1]))
    plain = bench.measure(case, False, torch.device("cpu")).saved
    ckpt = bench.measure(case, True, torch.device("cpu")).saved
    assert ckpt <= 0.6 * plain


def test_audio_trains_and_samples_with_guidance(tones, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("unet1d", tones(256, labels), labels, channels=[8, 16, 16], num_res_blocks=1,
                       attention_levels=[2], downsample_factors=4)


def test_images_train_and_sample_with_guidance(balls, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("unet2d", balls((16, 16), labels), labels, channels=[8, 16], num_res_blocks=1,
                       attention_levels=[1])


def test_volumes_train_and_sample_with_guidance(balls, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("unet3d", balls((8, 8, 8), labels), labels, channels=[8, 16], num_res_blocks=1,
                       attention_levels=[1], gradient_checkpointing=True)


# --- the options that hold models made elsewhere (diffusers' conventions, diffkit.pretrained) -------------


def test_conforms_with_diffusers_conventions():
    model = diffkit.create_backbone("unet2d", channels=[8, 16], num_res_blocks=1, attention_levels=[1],
                                    attention_head_dim=4, mid_attention=False, norm_groups=2, norm_eps=1e-6,
                                    flip_sin_to_cos=False, freq_shift=1, downsample_padding="same")
    assert [m.heads for m in model.modules() if hasattr(m, "qkv")] == [4, 4, 4]  # 16 // 4; none in the middle
    assert {(m.num_groups, m.eps) for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {(2, 1e-6)}
    checked = check_backbone("unet2d", input_shape=(1, 8, 8), cond_dim=3, channels=[8, 16], num_res_blocks=1,
                             attention_levels=[1], attention_head_dim=4, mid_attention=False, norm_groups=2,
                             flip_sin_to_cos=False, freq_shift=1, downsample_padding="same")
    assert {"uses t", "uses cond", "gradients"} <= set(checked)


def test_timestep_embedding_conventions():
    t = torch.tensor([0, 7, 999])
    freqs = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 3)  # dim 8, freq_shift 1: i / (4 - 1)
    args = t.double()[:, None] * freqs
    emb = timestep_embedding(t, 8, flip_sin_to_cos=False, freq_shift=1)
    torch.testing.assert_close(emb.double(), torch.cat([args.sin(), args.cos()], 1), rtol=0, atol=1e-4)
    args = t.double()[:, None] * 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)  # diffkit's default
    torch.testing.assert_close(timestep_embedding(t, 8).double(), torch.cat([args.cos(), args.sin()], 1),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("factor, size, pad", [(2, 8, (0, 1)), (3, 9, (1, 1)), (4, 16, (1, 2))])
def test_same_padding_pads_like_tensorflow(factor, size, pad):
    x = torch.randn(1, 2, size)
    down = Downsample(1, 2, factor, padding="same")
    assert down.pad == pad and down(x).shape == (1, 2, size // factor)
    expected = torch.nn.functional.conv1d(torch.nn.functional.pad(x, pad), down.conv.weight, down.conv.bias,
                                          stride=factor)
    assert torch.equal(down(x), expected)


@pytest.mark.parametrize("options, message", [
    (dict(attention_head_dim=12), r"'attention_head_dim' 12 does not divide the attention width\(s\) \[16, 16\]"),
    (dict(norm_groups=3), r"'norm_groups' 3 must divide every width"),
    (dict(downsample_padding="valid"), r"unknown 'downsample_padding' 'valid'; choose one of \['symmetric', 'same'\]"),
])
def test_bad_convention_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        diffkit.create_backbone("unet2d", channels=[8, 16], attention_levels=[1], **options)


# --- patch_size and the audio-fast preset --------------------------------------------------------


def test_patches_fold_neighbouring_samples_into_channels_and_back():
    net = diffkit.create_backbone("unet1d", in_channels=2, channels=[8, 16], attention_levels=[], patch_size=4)
    x = torch.arange(2 * 2 * 16.0).reshape(2, 2, 16)
    folded = net._fold(x, net._patchify)
    assert folded.shape == (2, 8, 4)
    # channel c·4 + j at position i holds sample 4·i + j of channel c
    assert folded[1, 1 * 4 + 3, 2] == x[1, 1, 4 * 2 + 3]
    assert torch.equal(net._fold(folded, net._unpatchify), x)


def test_patched_unet_conforms_and_needs_lengths_divisible_by_patch_times_factors():
    check_backbone("unet1d", input_shape=(1, 64), cond_dim=6, channels=[8, 16], num_res_blocks=1,
                   attention_levels=[1], downsample_factors=4, patch_size=4)
    check_backbone("unet2d", input_shape=(3, 8, 8), in_channels=3, channels=[8, 16], num_res_blocks=1, attention_levels=[],
                   patch_size=2)
    net = diffkit.create_backbone("unet1d", channels=[8, 16], attention_levels=[], downsample_factors=4, patch_size=8)
    assert net.size_multiple == 32
    with pytest.raises(ValueError, match="patch size 8 accepts spatial sizes that are multiples of 32"):
        net(torch.randn(1, 1, 48), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="'patch_size' must be >= 1"):
        diffkit.create_backbone("unet1d", channels=[8, 16], attention_levels=[], patch_size=0)


def test_audio_fast_preset_runs_no_convolution_at_the_full_rate():
    net = diffkit.create_backbone("unet1d", preset="audio-fast", cond_dim=8)
    assert (net.patch_size, net.downsample_factors, net.size_multiple) == (8, [4, 4], 128)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
             for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    out = net(torch.randn(2, 1, 4096), torch.tensor([3, 700]), torch.randn(2, 8))
    assert out.shape == (2, 1, 4096)
    assert max(seen) == 4096 // 8 and min(seen) == 4096 // 128
    for h in hooks:
        h.remove()
    # an explicit option overrides the preset's; the seed's unet1d is unchanged
    assert diffkit.create_backbone("unet1d", preset="audio-fast", channels=[32, 64, 64]).conv_in.out_channels == 32
    assert diffkit.create_backbone("unet1d").patch_size == 1
    with pytest.raises(ValueError, match="presets: audio-fast"):
        diffkit.create_backbone("unet1d", preset="ddpm-cifar10")


def test_audio_p2_preset_folds_2_samples_and_attends_at_128_and_8_positions():
    from diffkit.layers import AttentionBlock

    net = diffkit.create_backbone("unet1d", preset="audio-p2", cond_dim=8)
    assert (net.patch_size, net.downsample_factors, net.size_multiple) == (2, [4, 4, 4, 4], 512)
    convs, attention = [], []
    hooks = [m.register_forward_hook(lambda m, i, o: convs.append(i[0].shape[-1]))
             for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    hooks += [m.register_forward_hook(lambda m, i, o: attention.append(i[0].shape[-1]))
              for m in net.modules() if isinstance(m, AttentionBlock)]
    out = net(torch.randn(2, 1, 4096), torch.tensor([3, 700]), torch.randn(2, 8))
    assert out.shape == (2, 1, 4096)
    assert max(convs) == 4096 // 2 and min(convs) == 4096 // 512
    # level 4 (1 down + 2 up blocks) and the middle one at 8 positions; level 2 (1 + 2) at 128
    assert sorted(attention) == [8] * 4 + [128] * 3
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("name, shape", [("unet1d", (2, 32)), ("unet2d", (1, 8, 8)), ("unet3d", (1, 8, 8, 8))])
def test_scale_shift_norm_conforms_for_every_rank(name, shape):
    checked = check_backbone(name, input_shape=shape, cond_dim=6, in_channels=shape[0], scale_shift_norm=True, **TINY)
    assert {"uses t", "uses cond", "gradients"} <= set(checked)


def test_scale_shift_norm_scales_and_shifts_the_second_norm():
    from diffkit.layers import ResBlock

    torch.manual_seed(0)
    block = ResBlock(1, 8, 8, emb_dim=12, scale_shift=True).eval()
    assert block.emb_proj.out_features == 16
    x, emb = torch.randn(3, 8, 20), torch.randn(3, 12)
    h = block.conv1(torch.nn.functional.silu(block.norm1(x)))
    scale, shift = block.emb_proj(torch.nn.functional.silu(emb)).split(8, dim=1)
    h = block.norm2(h) * (1 + scale[..., None]) + shift[..., None]
    expected = x + block.conv2(torch.nn.functional.silu(h))
    torch.testing.assert_close(block(x, emb), expected)
    # The default block adds the embedding before the norm (DDPM), as before this option existed.
    plain = ResBlock(1, 8, 8, emb_dim=12).eval()
    h = plain.conv1(torch.nn.functional.silu(plain.norm1(x))) + plain.emb_proj(torch.nn.functional.silu(emb))[..., None]
    torch.testing.assert_close(plain(x, emb), x + plain.conv2(torch.nn.functional.silu(plain.norm2(h))))
    net = diffkit.create_backbone("unet1d", scale_shift_norm=True, **TINY)
    assert net.options["scale_shift_norm"] is True


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_linear_upsampling_interpolates_where_nearest_repeats(dims):
    # Before the convolution: a ramp along the last axis upsampled by 4. Nearest repeats each value (steps);
    # linear follows the ramp between the old positions, for every rank.
    ramp = torch.arange(4.0).reshape(1, 1, *([1] * (dims - 1)), 4).expand(1, 1, *([4] * dims))
    linear, nearest = Upsample(dims, 1, 4, "linear"), Upsample(dims, 1, 4)
    for up in (linear, nearest):
        up.conv = torch.nn.Identity()
    a, b = linear(ramp), nearest(ramp)
    assert a.shape == b.shape == (1, 1, *([16] * dims))
    line_a, line_b = a.reshape(-1, 16)[0], b.reshape(-1, 16)[0]
    assert torch.equal(line_b, torch.arange(4.0).repeat_interleave(4))
    # inside the ramp (away from the clamped ends) each step is 1/4
    torch.testing.assert_close(line_a[2:14].diff(), torch.full((11,), 0.25))
    net = diffkit.create_backbone("unet1d", channels=[8, 16], attention_levels=[], upsample_mode="linear")
    assert [m.mode for m in net.modules() if isinstance(m, Upsample)] == ["linear"]
    assert net(torch.randn(2, 1, 16), torch.tensor([1, 2])).shape == (2, 1, 16)


@pytest.mark.parametrize("name, shape, patch", [("unet1d", (1, 32), 2), ("unet2d", (2, 8, 8), 2), ("unet3d", (1, 8, 8, 8), 1)])
def test_mean_skip_conforms_for_every_rank(name, shape, patch):
    checked = check_backbone(name, input_shape=shape, cond_dim=6, in_channels=shape[0], mean_skip=True,
                             patch_size=patch, scale_shift_norm=True, **TINY)
    assert {"uses t", "uses cond", "gradients"} <= set(checked)


@pytest.mark.parametrize("dims, patch", [(1, 2), (2, 2), (3, 1)])
def test_mean_skip_adds_a_mix_of_the_folded_inputs_means_and_starts_at_zero(dims, patch):
    size = (8,) * dims
    torch.manual_seed(0)
    plain = diffkit.create_backbone(f"unet{dims}d", in_channels=2, patch_size=patch, **TINY).eval()
    torch.manual_seed(0)
    net = diffkit.create_backbone(f"unet{dims}d", in_channels=2, patch_size=patch, mean_skip=True, **TINY).eval()
    x, t = torch.randn(3, 2, *size) + torch.tensor([0.5, -2.0]).view(1, 2, *(1,) * dims), torch.tensor([0, 10, 500])
    with torch.no_grad():
        assert torch.equal(net(x, t), plain(x, t))  # zero at the start: the same network as without it
        feats = 2 * patch**dims
        mix = torch.randn(feats, feats)
        net.mean_out.bias.copy_(mix.flatten())
        # Each folded input channel's mean over all positions, mixed by `mix`, added to each folded output channel.
        folded = lambda v: net._fold(v, net._patchify)  # noqa: E731
        means = folded(x).flatten(2).mean(-1)
        added = folded(net(x, t) - plain(x, t))
        torch.testing.assert_close(added, (means @ mix.T).view(3, feats, *(1,) * dims).expand_as(added))
    # With patch 2 on a waveform the two folded means are the DC and the Nyquist-rate component.
    if dims == 1:
        wave = torch.tensor([[[1.0, -1.0] * 4]]) * 0.3 + 0.1  # DC 0.1, Nyquist amplitude 0.3
        assert torch.allclose(folded(wave).flatten(2).mean(-1), torch.tensor([[0.4, -0.2]]))
    assert net.options["mean_skip"] is True


@pytest.mark.parametrize("name, shape, patch", [("unet1d", (1, 32), 2), ("unet2d", (2, 8, 8), 2), ("unet3d", (1, 8, 8, 8), 1)])
def test_coordinates_conform_for_every_rank(name, shape, patch):
    checked = check_backbone(name, input_shape=shape, cond_dim=6, in_channels=shape[0], coordinates=True,
                             patch_size=patch, scale_shift_norm=True, **TINY)
    assert {"uses t", "uses cond", "gradients"} <= set(checked)


def test_coordinates_give_the_first_convolution_each_position_from_minus_1_to_1():
    net = diffkit.create_backbone("unet2d", in_channels=3, patch_size=2, coordinates=True, **TINY).eval()
    # 3 channels × 2×2 folded samples, then one channel per axis.
    assert net.conv_in.in_channels == 3 * 4 + 2
    grid = net._coordinates(torch.zeros(2, 12, 4, 3))
    assert grid.shape == (2, 2, 4, 3)
    rows, cols = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]), torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(grid[1, 0], rows[:, None].expand(4, 3))
    torch.testing.assert_close(grid[1, 1], cols[None, :].expand(4, 3))
    # With the data's weights at zero the first convolution's output still varies with the position alone
    # (without the coordinates it would be its bias everywhere).
    with torch.no_grad():
        net.conv_in.weight[:, :12].zero_()
        h = net.conv_in(torch.cat([torch.zeros(1, 12, 4, 3), net._coordinates(torch.zeros(1, 12, 4, 3))], 1))
    assert not torch.allclose(h[0, :, 1, 1], h[0, :, 2, 1]) and not torch.allclose(h[0, :, 1, 1], h[0, :, 1, 2])
