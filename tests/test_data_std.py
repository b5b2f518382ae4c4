"""GaussianDiffusion(data_std=σ_d): the network's input and objective in units of the data's std."""
import math

import pytest
import torch
import torch.nn as nn

import diffkit
from diffkit import GaussianDiffusion
from diffkit.config import ConfigError, load_config
from diffkit.pretrained import PretrainedError, export_diffusers
from diffkit.schedules import cosine_beta_schedule, make_beta_schedule
from diffkit.testing import GaussianOracle, gaussian_min_loss

MEAN, STD = 0.02, 0.1  # quiet data, as speech clips are


class Recorder(nn.Module):
    """Returns zeros and keeps what the engine fed it."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x_t, t, cond=None):
        self.inputs.append(x_t.detach().clone())
        return torch.zeros_like(x_t)


def oracle_engine(objective, data_std, betas=None, **kwargs):
    betas = cosine_beta_schedule(1000) if betas is None else betas
    oracle = GaussianOracle(torch.cumprod(1 - betas, 0), MEAN, STD, objective, data_std=data_std)
    return GaussianDiffusion(oracle, (1, 8), betas, objective=objective, threshold="none", data_std=data_std, **kwargs)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_the_exact_predictor_reaches_the_minimum_loss_in_data_std_units(objective):
    # In units of σ_d the data have std STD/σ_d and the schedule's ᾱ becomes ᾱσ_d²/(ᾱσ_d² + 1 - ᾱ):
    # the lowest reachable loss follows from the same closed form as for unscaled data.
    torch.manual_seed(0)
    data_std = 0.25
    d = oracle_engine(objective, data_std)
    x = torch.randn(200_000, 1, 8, dtype=torch.float64) * STD + MEAN
    abar = d.alphas_cumprod
    scaled = abar * data_std**2 / (abar * data_std**2 + 1 - abar)
    expected = gaussian_min_loss(scaled, STD / data_std, objective)
    assert d(x).item() == pytest.approx(expected, rel=0.02)
    # A predictor that is off does measurably worse on the same draws.
    d.model.std = STD * 2
    torch.manual_seed(0)
    assert d(x).item() > expected * 1.05


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("dpm-solver++", 20), ("unipc", 20)])
def test_sampling_the_exact_predictor_reproduces_the_data(objective, sampler, steps):
    d = oracle_engine(objective, STD)
    x = d.sample(4000, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1))
    assert x.mean().item() == pytest.approx(MEAN, abs=0.002)
    assert x.std().item() == pytest.approx(STD, rel=0.025)
    # The same oracle read by an engine with another data_std is wrong, and the samples show it.
    wrong = GaussianDiffusion(d.model, (1, 8), d.betas, objective=objective, threshold="none", data_std=STD * 3)
    x = wrong.sample(4000, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1))
    assert abs(x.std().item() / STD - 1) > 0.1


@pytest.mark.parametrize("shift", [1.0, 0.03])
def test_with_data_std_the_networks_input_and_v_target_have_unit_variance_at_every_step(shift):
    betas = make_beta_schedule("cosine", 1000, shift)
    x = torch.randn(256, 1, 2048) * STD
    recorder = Recorder()
    d = GaussianDiffusion(recorder, (1, 2048), betas, objective="v", data_std=STD)
    torch.manual_seed(0)
    loss = d(x).item()  # the output is zero: the loss is the target's mean square
    assert loss == pytest.approx(1.0, abs=0.02)
    per_example = recorder.inputs[0].var(dim=(1, 2))
    assert per_example.min().item() > 0.85 and per_example.max().item() < 1.15
    # Without data_std the same data leave the input at the data's variance (0.01) at low noise and
    # the v target at about the noise's alone.
    recorder.inputs.clear()
    plain = GaussianDiffusion(recorder, (1, 2048), betas, objective="v")
    torch.manual_seed(0)
    plain(x)
    assert recorder.inputs[0].var(dim=(1, 2)).min().item() < 0.05


def test_data_std_one_is_the_seeds_engine_bit_for_bit():
    betas = cosine_beta_schedule(100)
    net = diffkit.create_backbone("unet1d", in_channels=1, channels=[8, 16], attention_levels=[])
    a = GaussianDiffusion(net, (1, 16), betas, objective="v")
    b = GaussianDiffusion(net, (1, 16), betas, objective="v", data_std=1.0)
    x = torch.randn(4, 1, 16)
    torch.manual_seed(3)
    la = a(x)
    torch.manual_seed(3)
    assert torch.equal(la, b(x))
    sa = a.sample(2, sampler="dpm-solver++", steps=5, generator=torch.Generator().manual_seed(0))
    sb = b.sample(2, sampler="dpm-solver++", steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sa, sb)


@pytest.mark.parametrize("value", [0.0, -0.1, math.inf, math.nan, True, "0.1"])
def test_a_bad_data_std_is_refused(value):
    with pytest.raises(ValueError, match="data_std must be a positive number"):
        GaussianDiffusion(nn.Identity(), (1, 8), cosine_beta_schedule(10), data_std=value)


@pytest.mark.parametrize("value, message", [("0", "diffusion.data_std"), ('"0.1"', "diffusion.data_std"),
                                            ("-1.0", "diffusion.data_std")])
def test_a_bad_data_std_in_a_config_names_the_key(tmp_path, value, message):
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\ndataset = "shapes"\n[model]\nbackbone = "unet2d"\n[diffusion]\ndata_std = {value}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_export_diffusers_refuses_data_std(tmp_path):
    net = diffkit.create_backbone("unet2d", in_channels=1, channels=[8, 16], attention_levels=[], norm_groups=4)
    d = GaussianDiffusion(net, (1, 8, 8), cosine_beta_schedule(10), data_std=0.5)
    with pytest.raises(PretrainedError, match="data_std=0.5 cannot be written"):
        export_diffusers(d, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ddim_with_few_calls_shrinks_quiet_data_and_the_other_samplers_do_not():
    # The README's advice for quiet audio, measured on the exact denoiser of N(0, 0.1²) data.
    betas = cosine_beta_schedule(1000)
    oracle = GaussianOracle(torch.cumprod(1 - betas, 0), 0.0, STD, "v")
    d = GaussianDiffusion(oracle, (1, 8), betas, objective="v", threshold="none")

    def ratio(sampler, steps):
        x = d.sample(4000, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1))
        return x.std().item() / STD

    assert ratio("ddim", 20) == pytest.approx(0.70, abs=0.03)
    assert ratio("ddim", 50) == pytest.approx(0.87, abs=0.03)
    for sampler in ("dpm-solver++", "dpm-solver++-sde", "unipc"):
        assert ratio(sampler, 20) == pytest.approx(1.0, abs=0.03)
