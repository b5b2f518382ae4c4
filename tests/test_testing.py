"""diffkit.testing.check_backbone: correct backbones pass, each kind of broken one fails, naming the property."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffkit.testing import check_backbone

SHAPE = (2, 8)  # one example: 2 channels, 8 samples


class Good(nn.Module):
    """A minimal correct backbone: a 1-D convolution, with t (and cond) added as a per-channel bias."""

    def __init__(self, in_channels=2, cond_dim=None, zero_out=False):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 8, 3, padding=1)
        self.t_proj = nn.Linear(2, 8)
        self.cond_proj = nn.Linear(cond_dim, 8) if cond_dim else None
        self.out = nn.Conv1d(8, in_channels, 3, padding=1)
        if zero_out:  # as adaLN-Zero / zero-initialised output layers do
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def embed(self, t, cond):
        angle = t.float()[:, None] / 1000 * math.pi
        emb = self.t_proj(torch.cat([angle.sin(), angle.cos()], dim=1))
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(cond)
        return emb[..., None]

    def forward(self, x, t, cond=None):
        return self.out(F.silu(self.conv(x) + self.embed(t, cond)))


class IgnoresCond(Good):
    def forward(self, x, t, cond=None):
        return self.out(F.silu(self.conv(x) + self.embed(t, None if cond is None else torch.zeros_like(cond))))


class IgnoresT(Good):
    def forward(self, x, t, cond=None):
        return super().forward(x, torch.zeros_like(t), cond)


class DeadParameter(Good):
    def __init__(self, **options):
        super().__init__(**options)
        self.unused = nn.Linear(8, 8)


class WrongShape(Good):
    def forward(self, x, t, cond=None):
        return super().forward(x, t, cond)[..., :-1]


class WrongDtype(Good):
    def forward(self, x, t, cond=None):
        return super().forward(x, t, cond).double()


class DropoutInEval(Good):
    def forward(self, x, t, cond=None):
        return F.dropout(super().forward(x, t, cond), 0.5, training=True)


class MixesTheBatch(Good):
    def forward(self, x, t, cond=None):
        out = super().forward(x, t, cond)
        return out - out.mean(dim=0, keepdim=True)


class BreaksUnderAutocast(Good):
    def forward(self, x, t, cond=None):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("no bfloat16 kernel for this")
        return super().forward(x, t, cond)


class NeedsCondAlways(Good):
    def forward(self, x, t, cond=None):
        if cond is None:
            raise ValueError("cond is required")
        return super().forward(x, t, cond)


def test_a_correct_backbone_passes_every_check():
    checked = check_backbone(Good, input_shape=SHAPE, cond_dim=4)
    assert checked == ["module", "shape", "deterministic", "batch independence", "uses t", "uses cond",
                       "gradients", "bf16 autocast", "unconditional"]
    assert "uses cond" not in check_backbone(Good, input_shape=SHAPE)


def test_zero_initialised_output_layers_pass():
    # Untouched, the zero output layer would hide cond and t and stop every upstream gradient.
    check_backbone(Good, input_shape=SHAPE, cond_dim=4, zero_out=True)


@pytest.mark.parametrize("backbone, prop, detail", [
    (IgnoresCond, "uses cond", "does not change when cond changes"),
    (IgnoresT, "uses t", "does not change when t changes"),
    (DeadParameter, "gradients", r"no gradient reaches parameter\(s\) \['unused.weight', 'unused.bias'\]"),
    (WrongShape, "shape", r"output \(3, 2, 7\) for input \(3, 2, 8\)"),
    (WrongDtype, "shape", "output dtype torch.float64 for input dtype torch.float32"),
    (DropoutInEval, "deterministic", "two eval-mode calls differ"),
    (MixesTheBatch, "batch independence", "changing example 0 changed the outputs of the others"),
    (BreaksUnderAutocast, "bf16 autocast", "no bfloat16 kernel"),
    (NeedsCondAlways, "unconditional", "built without cond_dim, model.* raised ValueError: cond is required"),
])
def test_a_broken_backbone_fails_naming_the_property(backbone, prop, detail):
    with pytest.raises(AssertionError, match=rf"check_backbone\({backbone.__name__}\): property '{prop}' failed: .*{detail}"):
        check_backbone(backbone, input_shape=SHAPE, cond_dim=4)


def test_a_factory_must_return_a_module():
    with pytest.raises(AssertionError, match=r"property 'module' failed: the factory returned function"):
        check_backbone(lambda **options: (lambda x, t, cond=None: x), input_shape=SHAPE)


def test_a_registered_name_is_accepted_and_options_reach_the_factory():
    checked = check_backbone("unet1d", input_shape=(1, 16), channels=[8, 16], num_res_blocks=1, attention_levels=[])
    assert "gradients" in checked


def test_the_global_random_state_is_left_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_backbone(Good, input_shape=SHAPE, cond_dim=4)
    assert torch.equal(torch.rand(3), expected)
