"""labels: class embeddings with a learned null label, and guidance through the engine with real backbones."""

import pytest
import torch

import diffkit
from diffkit.schedules import linear_beta_schedule


def test_embeds_labels_and_has_a_null_label():
    labels = diffkit.create_conditioner("labels", num_classes=3, dim=4)
    assert labels.dim == 4
    out = labels(torch.tensor([0, 2, 2]))
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[1], out[2])
    torch.testing.assert_close(labels.null(2), labels.embedding.weight[3].expand(2, 4))


def test_dropout_uses_the_null_label_in_training_only():
    labels = diffkit.create_conditioner("labels", num_classes=3, dim=4, dropout=1.0)
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(labels(y), labels.null(3))
    labels.eval()
    torch.testing.assert_close(labels(y), labels.embedding.weight[:3])


def test_dropout_rate_is_about_the_requested_probability():
    labels = diffkit.create_conditioner("labels", num_classes=2, dim=2, dropout=0.25)
    torch.manual_seed(0)
    out = labels(torch.zeros(4000, dtype=torch.long))
    dropped = (out == labels.null(1)).all(dim=1).float().mean()
    assert abs(float(dropped) - 0.25) < 0.03


@pytest.mark.parametrize("y, message", [
    (torch.tensor([0, 3]), r"class indices must lie in 0…2"),
    (torch.tensor([[0, 1]]), r"expected a 1-D batch"),
])
def test_bad_labels_are_a_clear_error(y, message):
    labels = diffkit.create_conditioner("labels", num_classes=3, dim=4)
    with pytest.raises(ValueError, match=message):
        labels(y)


@pytest.mark.parametrize("name, shape, options", [
    ("unet1d", (1, 16), dict(channels=[8, 16], attention_levels=[])),
    ("transformer", (1, 4, 4, 4), dict(dims=3, patch_size=2, width=16, depth=1, heads=2)),
])
def test_guided_sampling_is_one_batched_network_call_per_step(name, shape, options):
    model = diffkit.create_backbone(name, cond_dim=8, **options)
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(args[0].shape[0]), with_kwargs=True)
    labels = diffkit.create_conditioner("labels", num_classes=2, dim=8)
    diffusion = diffkit.GaussianDiffusion(model, shape, linear_beta_schedule(100), conditioner=labels).eval()
    out = diffusion.sample(3, y=torch.tensor([0, 1, 1]), guidance_scale=3.0, sampler="ddim", steps=5)
    assert out.shape == (3, *shape)
    assert calls == [6] * 5  # conditional and unconditional halves together
    calls.clear()
    diffusion.sample(3, y=torch.tensor([0, 1, 1]), guidance_scale=1.0, sampler="ddim", steps=5)
    assert calls == [3] * 5  # no guidance: no unconditional half


def test_labels_must_be_integers_in_range():
    labels = diffkit.create_conditioner("labels", num_classes=3, dim=4)
    with pytest.raises(ValueError, match="must be integers, got a torch.float32"):
        labels(torch.tensor([0.0, 1.7]))
    with pytest.raises(ValueError, match=r"must lie in 0…2, got 0…3"):
        labels(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="'dim' must be >= 1"):
        diffkit.create_conditioner("labels", num_classes=3, dim=0)
