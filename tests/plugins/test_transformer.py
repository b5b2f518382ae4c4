"""transformer: a DiT over 1, 2 and 3 dimensions, with no fixed input size."""

import pytest
import torch
from einops import rearrange

import diffkit
from diffkit.testing import check_backbone
from diffkit_plugins.transformer import sincos_position_encoding

TINY = dict(width=16, depth=2, heads=2)


@pytest.mark.parametrize("dims, shape, patch", [(1, (2, 32), 4), (2, (3, 8, 8), 2), (3, (1, 4, 8, 4), (2, 4, 2))])
def test_conforms_to_the_backbone_protocol(dims, shape, patch):
    checked = check_backbone("transformer", input_shape=shape, cond_dim=5, dims=dims, in_channels=shape[0],
                             patch_size=patch, **TINY)
    assert {"uses t", "uses cond", "gradients", "bf16 autocast", "unconditional"} <= set(checked)


def test_conforms_with_checkpointing_dropout_and_other_output_channels():
    check_backbone("transformer", input_shape=(2, 8, 8), cond_dim=4, dims=2, in_channels=2, out_channels=2,
                   patch_size=2, dropout=0.1, gradient_checkpointing=True, **TINY)


def test_adaln_zero_makes_a_fresh_model_output_zero():
    model = diffkit.create_backbone("transformer", dims=2, cond_dim=3, **TINY)
    out = model(torch.randn(2, 1, 8, 8), torch.tensor([0, 999]), torch.randn(2, 3))
    assert torch.equal(out, torch.zeros_like(out))


def test_one_model_takes_any_length_the_patch_divides():
    model = diffkit.create_backbone("transformer", dims=1, patch_size=8, **TINY).eval()
    with torch.no_grad():
        for length in (64, 200, 16384):
            assert model(torch.randn(1, 1, length), torch.tensor([10])).shape == (1, 1, length)


def test_patchify_and_unpatchify_are_inverse_for_every_rank():
    # With the identity in place of the network between them, the model would return its input.
    for dims, shape in [(1, (2, 3, 12)), (2, (2, 3, 4, 6)), (3, (2, 3, 4, 2, 6))]:
        model = diffkit.create_backbone("transformer", dims=dims, in_channels=3, patch_size=2, **TINY)
        x = torch.randn(shape)
        tokens = rearrange(x, model._patchify, **{f"p{i}": 2 for i in range(dims)})
        assert tokens.shape == (2, x[0, 0].numel() // 2**dims, 3 * 2**dims)
        grid = {f"g{i}": n // 2 for i, n in enumerate(shape[2:])}
        back = rearrange(tokens, model._unpatchify, **grid, **{f"p{i}": 2 for i in range(dims)})
        assert torch.equal(back, x)


def test_sizes_the_patch_does_not_divide_are_a_clear_error():
    model = diffkit.create_backbone("transformer", dims=2, patch_size=4, **TINY)
    with pytest.raises(ValueError, match=r"spatial size \(10, 8\) is not divisible by patch_size \(4, 4\): "
                                         r"axis 0: 10 \(nearest multiples of 4: 8, 12\)"):
        model(torch.randn(1, 1, 10, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"expects input \(B, 1, …, …\)"):
        model(torch.randn(1, 1, 8), torch.tensor([0]))


def test_sincos_position_encoding_per_axis():
    enc = sincos_position_encoding((2, 3), 10)  # per axis 2 sin + 2 cos at frequencies 1, 1/100; 2 zeros
    assert enc.shape == (6, 10)
    s, c = torch.tensor([1.0, 0.01]).sin().tolist(), torch.tensor([1.0, 0.01]).cos().tolist()
    expected = {
        0: [0, 0, 1, 1] + [0, 0, 1, 1] + [0, 0],  # cell (0, 0)
        1: [0, 0, 1, 1] + s + c + [0, 0],  # cell (0, 1): row-major, like the tokens
        4: s + c + s + c + [0, 0],  # cell (1, 1)
    }
    for row, values in expected.items():
        torch.testing.assert_close(enc[row], torch.tensor(values, dtype=torch.float32))
    assert len({tuple(row.tolist()) for row in enc}) == 6


@pytest.mark.parametrize("options, message", [
    (dict(dims=4), r"'dims' must be 1, 2 or 3"),
    (dict(dims=2, width=10, heads=3), r"'width' 10 does not split into 'heads' 3"),
    (dict(dims=2, patch_size=(2, 2, 2)), r"'patch_size' must be a positive int or 2 positive ints"),
    (dict(dims=3, width=4, heads=1), r"'width' must be at least 6"),
])
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        diffkit.create_backbone("transformer", **{"depth": 1, **options})


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        torch.manual_seed(0)
        model = diffkit.create_backbone("transformer", dims=3, cond_dim=3, gradient_checkpointing=checkpointing, **TINY)
        for p in model.parameters():  # move off adaLN-Zero's zeros, so every gradient is non-trivial
            p.data.add_(0.02 * torch.randn_like(p))
        gen = torch.Generator().manual_seed(1)
        x, cond = torch.randn(2, 1, 4, 4, 4, generator=gen), torch.randn(2, 3, generator=gen)
        model(x, torch.tensor([5, 700]), cond).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-7, msg=name)


def test_audio_trains_and_samples_with_guidance(tones, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("transformer", tones(64, labels), labels, dims=1, patch_size=4, width=32, depth=2, heads=2)


def test_images_train_and_sample_with_guidance(balls, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("transformer", balls((16, 16), labels), labels, dims=2, patch_size=4, width=32, depth=2, heads=2)


def test_volumes_train_and_sample_with_guidance(balls, trains_and_samples):
    labels = torch.tensor([0, 1, 0, 1])
    trains_and_samples("transformer", balls((8, 8, 8), labels), labels, dims=3, patch_size=2, width=32, depth=2,
                       heads=2, gradient_checkpointing=True)
