"""diffusers' folder layout in and out: random diffusers models imported and compared output for output,
diffkit models exported and read back by diffusers, and one-line refusals of what unet2d cannot hold."""

import json

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

import diffkit
from diffkit import pretrained
from diffkit.pretrained import PretrainedError

TOLERANCE = 1e-5  # float32, max |difference|

# Tiny members of the DDPM family; the first carries the published models' conventions (sines first,
# freq_shift 1, TF "SAME" downsampling, eps 1e-6, one attention head).
CONFIGS = {
    "ddpm-conventions": (
        dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
             down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
             attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6, downsample_padding=0,
             flip_sin_to_cos=False, freq_shift=1),
        dict(beta_schedule="linear", prediction_type="epsilon", variance_type="fixed_small", clip_sample=True),
    ),
    "cifar-like-3-levels": (
        dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="sample",
             variance_type="fixed_large", clip_sample=False),
    ),
    "no-attention": (
        dict(sample_size=12, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=2,
             down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
             add_attention=False, norm_num_groups=8),
        dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", thresholding=True,
             sample_max_value=float("inf"), dynamic_thresholding_ratio=0.9),
    ),
}


def _save(folder, unet_options, scheduler_options=None, pipeline=False, seed=0):
    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_options).eval()
    with torch.no_grad():  # diffusers zero-initialises nothing here, but make every bias count
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(folder / "unet" if pipeline else folder)
    scheduler = None
    if scheduler_options is not None:
        scheduler = DDPMScheduler(num_train_timesteps=1000, **scheduler_options)
        scheduler.save_pretrained(folder / "scheduler" if pipeline else folder)
    return unet, scheduler


def _compare(unet, model, shape, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, *shape, generator=generator)
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        return (unet(x, t).sample - model(x, t)).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_imported_models_give_diffusers_outputs(tmp_path, name):
    unet_options, scheduler_options = CONFIGS[name]
    unet, scheduler = _save(tmp_path, unet_options, scheduler_options, pipeline=(name == "no-attention"))
    assert pretrained.is_diffusers_folder(tmp_path)
    diffusion = pretrained.load_diffusers(tmp_path)
    shape = (unet_options["in_channels"], unet_options["sample_size"], unet_options["sample_size"])
    assert diffusion.input_shape == shape
    assert _compare(unet, diffusion.model, shape) <= TOLERANCE
    # The schedule: the scheduler's β exactly (as float32), its ᾱ to float32 rounding.
    assert torch.equal(diffusion.betas.float(), scheduler.betas)
    assert torch.allclose(diffusion.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)
    expected = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[scheduler_options["prediction_type"]]
    assert diffusion.objective == expected


@pytest.mark.parametrize("scheduler_options, threshold", [
    (dict(prediction_type="epsilon", clip_sample=True), "clip"),
    (dict(prediction_type="sample", clip_sample=True), "clip"),
    (dict(prediction_type="v_prediction", clip_sample=True), "clip"),
    (dict(prediction_type="epsilon", clip_sample=False), "none"),
    # diffusers bounds Imagen's s by sample_max_value: at its default 1 thresholding is clipping
    (dict(prediction_type="epsilon", clip_sample=False, thresholding=True), "clip"),
    (dict(prediction_type="v_prediction", clip_sample=False, thresholding=True, sample_max_value=float("inf"),
          dynamic_thresholding_ratio=0.9), "dynamic"),
])
def test_x0_prediction_and_thresholds_match_the_scheduler(tmp_path, scheduler_options, threshold):
    # diffusers' step() reports its x̂0 (after clip_sample / thresholding); diffkit's predict() must agree.
    unet, scheduler = _save(tmp_path, CONFIGS["ddpm-conventions"][0], scheduler_options)
    diffusion = pretrained.load_diffusers(tmp_path)
    assert diffusion.threshold == threshold and diffusion.variance == "posterior"
    x = 3 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = 600
    with torch.no_grad():
        theirs = scheduler.step(unet(x, t).sample, t, x).pred_original_sample
        _, ours = diffusion.predict(x, torch.full((2,), t))
    # Unclipped, x̂0 reaches ~40 here (x_t / sqrt(ᾱ_t)): float32 rounding scales with it.
    assert (theirs - ours).abs().max().item() <= TOLERANCE * max(1.0, theirs.abs().max().item())
    at_one = (ours.abs() > 1 - 1e-6).float().mean()
    assert (0 < at_one < 1) if threshold != "none" else ours.abs().max() > 1  # the threshold took part


def test_non_square_pipeline_folder_and_default_scheduler(tmp_path):
    options = dict(sample_size=(8, 16), in_channels=3, out_channels=3, block_out_channels=(32, 32),
                   layers_per_block=1, down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"), norm_num_groups=8, attention_head_dim=16)
    unet, _ = _save(tmp_path, options, pipeline=True)  # no scheduler: DDPMScheduler's defaults apply
    read = pretrained.read_diffusers(tmp_path)
    assert read.input_shape == (3, 8, 16)
    assert read.diffusion_config == {"timesteps": 1000, "schedule": "linear", "objective": "eps",
                                     "variance": "posterior", "threshold": "clip"}
    diffusion = read.build()
    assert _compare(unet, diffusion.model, (3, 8, 16)) <= TOLERANCE
    samples = diffusion.sample(2, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 8, 16) and samples.abs().max() <= 1 + 1e-6  # clipped x̂0 keeps them in range


def test_weights_load_into_a_unet2d_built_from_the_options(tmp_path):
    unet, _ = _save(tmp_path, CONFIGS["ddpm-conventions"][0])
    options = pretrained.diffusers_backbone_options(tmp_path)
    assert json.loads(json.dumps(options)) == options  # a config can carry them
    model = diffkit.create_backbone("unet2d", **{**options, "dropout": 0.1}).eval()
    pretrained.load_diffusers_weights(model, tmp_path)
    assert _compare(unet, model, (3, 16, 16)) <= TOLERANCE

    conditioned = diffkit.create_backbone("unet2d", **{**options, "cond_dim": 4})
    projection = conditioned.cond_embed.weight.clone()
    pretrained.load_diffusers_weights(conditioned, tmp_path)
    assert torch.equal(conditioned.conv_out.weight, model.conv_out.weight)
    assert torch.equal(conditioned.cond_embed.weight, projection)  # new, so left as built

    wrong_shift = diffkit.create_backbone("unet2d", **{**options, "freq_shift": 0})
    with pytest.raises(PretrainedError, match=r"^[^\n]*freq_shift is 1 there and 0 here[^\n]*$"):
        pretrained.load_diffusers_weights(wrong_shift, tmp_path)
    wrong_padding = diffkit.create_backbone("unet2d", **{**options, "downsample_padding": "symmetric"})
    with pytest.raises(PretrainedError, match=r"down\.1 \(downsample_padding\)"):
        pretrained.load_diffusers_weights(wrong_padding, tmp_path)
    wrong_width = diffkit.create_backbone("unet2d", **{**options, "channels": [32, 32]})
    with pytest.raises(PretrainedError, match=r"^[^\n]*does not fit the model: tensor '[^']+' is \(64,"):
        pretrained.load_diffusers_weights(wrong_width, tmp_path)


def _diffkit_engine(**options):
    torch.manual_seed(3)
    model = diffkit.create_backbone("unet2d", **options).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    betas = diffkit.schedules.linear_beta_schedule(200)
    return diffkit.GaussianDiffusion(model, (options["in_channels"], 16, 16), betas, objective="v",
                                     variance="posterior", threshold="clip").eval()


@pytest.mark.parametrize("options", [
    # diffkit's own conventions; two heads of width 16 at every attention
    dict(in_channels=3, channels=[32, 32], num_res_blocks=1, attention_levels=[0, 1], attention_heads=2,
         norm_groups=8),
    # the published models' conventions, no middle attention
    dict(in_channels=1, channels=[32, 32, 64], num_res_blocks=2, attention_levels=[1], mid_attention=False,
         norm_groups=8, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding="same"),
])
def test_export_round_trips(tmp_path, options):
    diffusion = _diffkit_engine(**options)
    pretrained.export_diffusers(diffusion, tmp_path)
    unet = UNet2DModel.from_pretrained(tmp_path).eval()
    assert _compare(unet, diffusion.model, diffusion.input_shape) <= TOLERANCE
    scheduler = DDPMScheduler.from_pretrained(tmp_path)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.clip_sample
    assert torch.allclose(diffusion.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)

    back = pretrained.read_diffusers(tmp_path)
    ours = diffusion.model.state_dict()
    assert back.state_dict.keys() == ours.keys()
    assert all(torch.equal(back.state_dict[k], ours[k]) for k in ours)  # bit for bit
    rebuilt = back.build()
    assert rebuilt.objective == "v" and rebuilt.variance == "posterior" and rebuilt.threshold == "clip"
    x, t = torch.randn(2, *diffusion.input_shape), torch.tensor([5, 150])
    with torch.no_grad():
        assert torch.equal(rebuilt.model(x, t), diffusion.model(x, t))


@pytest.mark.parametrize("options, message", [
    (dict(channels=[8, 16]), r"option norm_groups=None .* \[2, 4, 6, 8\]"),
    (dict(channels=[32, 64], norm_groups=8, cond_dim=4), r"option cond_dim=4"),
    (dict(channels=[32, 64], norm_groups=8, downsample_factors=[4]), r"option downsample_factors=\[4\]"),
    (dict(channels=[32, 64], norm_groups=8, attention_levels=[0, 1], attention_heads=2),
     r"option attention_heads=2 .* \[16, 32\]"),
])
def test_export_refuses_what_diffusers_cannot_express(tmp_path, options, message):
    model = diffkit.create_backbone("unet2d", in_channels=1, **{"attention_levels": [1], **options})
    with pytest.raises(PretrainedError, match=rf"^export_diffusers: unet2d {message}[^\n]*$"):
        pretrained.export_diffusers(model, tmp_path)
    transformer = diffkit.create_backbone("transformer", dims=2, in_channels=1, patch_size=2, width=16, depth=1, heads=2)
    with pytest.raises(PretrainedError, match=r"^export_diffusers: the backbone is a \w+, not a diffkit unet2d$"):
        pretrained.export_diffusers(transformer, tmp_path)


# The published DDPM models' config.json (google/ddpm-cifar10-32 and the 256-px CelebA-HQ, church and
# bedroom models, which share one layout); weights are not needed to check their translation.
PUBLISHED = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu", "attention_head_dim": None,
    "center_input_sample": False, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
    "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
    "out_channels": 3, "time_embedding_type": "positional",
}
CIFAR10 = {**PUBLISHED, "sample_size": 32, "block_out_channels": [128, 256, 256, 256],
           "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
           "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
PX256 = {**PUBLISHED, "sample_size": 256, "block_out_channels": [128, 128, 256, 256, 512, 512],
         "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
         "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4}


@pytest.mark.parametrize("config, levels, count", [(CIFAR10, [1], 35_746_307), (PX256, [4], None)])
def test_published_layouts_translate(tmp_path, config, levels, count):
    (tmp_path / "config.json").write_text(json.dumps(config))
    options = pretrained.diffusers_backbone_options(tmp_path)
    assert options["channels"] == config["block_out_channels"] and options["attention_levels"] == levels
    assert (options["downsample_padding"], options["flip_sin_to_cos"], options["freq_shift"]) == ("same", False, 1)
    with torch.device("meta"):
        ours = diffkit.create_backbone("unet2d", **options)
        theirs = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters())
    if count is not None:  # the DDPM paper's CIFAR-10 network: diffkit's preset has the same size
        assert n == count == sum(p.numel() for p in diffkit.create_backbone("unet2d", preset="ddpm-cifar10").parameters())


BASE = {**PUBLISHED, "sample_size": 16, "block_out_channels": [32, 64], "norm_num_groups": 8,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


@pytest.mark.parametrize("change, named", [
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "'CrossAttnDownBlock2D'"),
    ({"down_block_types": ["SkipDownBlock2D", "AttnDownBlock2D"]}, "'SkipDownBlock2D'"),
    ({"down_block_types": ["DownBlock2D", "AttnSkipDownBlock2D"]}, "'AttnSkipDownBlock2D'"),
    ({"down_block_types": ["ResnetDownsampleBlock2D", "AttnDownBlock2D"]}, "'ResnetDownsampleBlock2D'"),
    ({"down_block_types": ["DownBlock2D", "KDownBlock2D"]}, "'KDownBlock2D'"),
    ({"up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]}, "'CrossAttnUpBlock2D'"),
    ({"up_block_types": ["AttnUpBlock2D", "SkipUpBlock2D"]}, "'SkipUpBlock2D'"),
    ({"up_block_types": ["UpBlock2D", "UpBlock2D"]}, "pairs 'AttnDownBlock2D' with 'UpBlock2D'"),
    ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, "mid_block_type='UNetMidBlock2DCrossAttn'"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'"),
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep'"),
    ({"num_class_embeds": 10}, "num_class_embeds=10"),
    ({"act_fn": "gelu"}, "act_fn='gelu'"),
    ({"time_embedding_type": "fourier"}, "time_embedding_type='fourier'"),
    ({"center_input_sample": True}, "center_input_sample=True"),
    ({"mid_block_scale_factor": 1.414}, "mid_block_scale_factor=1.414"),
    ({"downsample_type": "resnet"}, "downsample_type='resnet'"),
    ({"downsample_padding": 2}, "downsample_padding=2"),
    ({"attention_head_dim": 24}, "attention_head_dim=24"),
    ({"time_embedding_dim": 64}, "time_embedding_dim=64"),
    ({"encoder_hid_dim": 8}, "unknown UNet2DModel key 'encoder_hid_dim'"),
    ({"_class_name": "UNet2DConditionModel"}, "_class_name 'UNet2DConditionModel'"),
])
def test_what_unet2d_cannot_hold_is_refused_in_one_line(tmp_path, change, named):
    (tmp_path / "config.json").write_text(json.dumps({**BASE, **change}))
    assert pretrained.is_diffusers_folder(tmp_path)
    for read in (pretrained.read_diffusers, pretrained.diffusers_backbone_options):
        with pytest.raises(PretrainedError) as info:
            read(tmp_path)
        message = str(info.value)
        assert "\n" not in message and named in message and "config.json" in message


@pytest.mark.parametrize("change, named", [
    ({"variance_type": "learned_range"}, "variance_type 'learned_range'"),
    ({"clip_sample_range": 2.0}, "clip_sample_range=2.0"),
    ({"beta_schedule": "laplace"}, "beta_schedule 'laplace'"),
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
])
def test_scheduler_settings_diffkit_cannot_follow_are_refused(tmp_path, change, named):
    _save(tmp_path, {**{k: v for k, v in BASE.items() if not k.startswith("_")}, "norm_num_groups": 8})
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", **change}))
    with pytest.raises(PretrainedError, match=rf"^[^\n]*scheduler_config\.json: [^\n]*{named}[^\n]*$"):
        pretrained.read_diffusers(tmp_path)


def test_a_saved_scale_shift_model_and_pickle_weights_are_refused(tmp_path):
    options = {k: v for k, v in BASE.items() if not k.startswith("_")}
    _save(tmp_path / "a", {**options, "resnet_time_scale_shift": "scale_shift"})
    with pytest.raises(PretrainedError, match=r"resnet_time_scale_shift='scale_shift'"):
        pretrained.load_diffusers(tmp_path / "a")
    UNet2DModel(**options).save_pretrained(tmp_path / "b", safe_serialization=False)
    with pytest.raises(PretrainedError, match=r"^[^\n]*holds only diffusion_pytorch_model\.bin[^\n]*$"):
        pretrained.load_diffusers(tmp_path / "b")


def test_what_is_a_diffusers_folder(tmp_path):
    assert not pretrained.is_diffusers_folder(tmp_path)
    assert not pretrained.is_diffusers_folder(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"run": "not diffusers"}))
    assert not pretrained.is_diffusers_folder(tmp_path)
    with pytest.raises(PretrainedError, match=r"is not in diffusers' layout"):
        pretrained.read_diffusers(tmp_path)


def test_checkpoints_with_the_old_attention_names_are_read(tmp_path):
    # Checkpoints converted before diffusers renamed its attention (query/key/value/proj_attn) still load there.
    from safetensors.torch import load_file, save_file

    unet, _ = _save(tmp_path, CONFIGS["ddpm-conventions"][0])
    new = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for key, tensor in new.items():
        for a, b in old_names.items():
            key = key.replace(f".{a}.", f".{b}.")
        old[key] = tensor
    assert sum(".query." in k for k in old) == 2 * 4  # weight and bias of 4 attention blocks: 1 down, 1 mid, 2 up
    save_file(old, tmp_path / "diffusion_pytorch_model.safetensors")
    assert _compare(unet, pretrained.load_diffusers(tmp_path).model, (3, 16, 16)) <= TOLERANCE


def test_sharded_weights_are_read(tmp_path):
    unet, _ = _save(tmp_path, CONFIGS["cifar-like-3-levels"][0])
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(tmp_path, max_shard_size="40KB")
    assert len(list(tmp_path.glob("diffusion_pytorch_model-*.safetensors"))) > 2
    assert _compare(unet, pretrained.load_diffusers(tmp_path).model, (1, 8, 8)) <= TOLERANCE


SMALL = {k: v for k, v in BASE.items() if not k.startswith("_")}


@pytest.mark.parametrize("scheduler_options, config_schedule", [
    (dict(beta_schedule="linear"), "linear"),  # diffkit's linear at T = 1000 is DDPM's 1e-4 … 0.02
    (dict(beta_schedule="linear", num_train_timesteps=50), None),  # diffkit's linear rescales by 1000/T
    (dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), None),
    (dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=50), "cosine"),
    (dict(beta_schedule="sigmoid", beta_start=1e-4, beta_end=0.03), None),
    (dict(trained_betas=diffkit.schedules.linear_beta_schedule(50).tolist(), num_train_timesteps=50), "linear"),
])
def test_schedules_are_read_as_the_scheduler_computes_them(tmp_path, scheduler_options, config_schedule):
    _save(tmp_path, SMALL)
    scheduler = DDPMScheduler(**{"num_train_timesteps": 1000, **scheduler_options})
    scheduler.save_pretrained(tmp_path)
    read = pretrained.read_diffusers(tmp_path)
    assert torch.equal(torch.tensor(read.diffusion["betas"]).float(), scheduler.betas)
    assert (read.diffusion_config or {}).get("schedule") == config_schedule
    if config_schedule is not None:
        T = read.diffusion_config["timesteps"]
        named = diffkit.schedules.make_beta_schedule(config_schedule, T)
        assert torch.allclose(named, torch.tensor(read.diffusion["betas"], dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("betas, written", [
    (diffkit.schedules.linear_beta_schedule(50), "linear"),
    (diffkit.schedules.cosine_beta_schedule(50), "squaredcos_cap_v2"),
    (torch.linspace(0.01**0.5, 0.2**0.5, 50, dtype=torch.float64) ** 2, "scaled_linear"),
    (torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1 + 0.001, "trained_betas"),
    (diffkit.schedules.make_beta_schedule("cosine", 50, 2.0), "trained_betas"),  # diffusion.schedule_shift = 2
])
def test_exported_schedules_and_dynamic_thresholds_reach_diffusers(tmp_path, betas, written):
    model = diffkit.create_backbone("unet2d", **pretrained.diffusers_backbone_options(_write_base(tmp_path)))
    diffusion = diffkit.GaussianDiffusion(model, (3, 16, 16), betas, threshold="dynamic", threshold_percentile=0.9,
                                          variance="beta")
    pretrained.export_diffusers(diffusion, tmp_path / "out")
    scheduler = DDPMScheduler.from_pretrained(tmp_path / "out")
    assert (scheduler.config.trained_betas is not None if written == "trained_betas"
            else scheduler.config.beta_schedule == written)
    assert scheduler.config.variance_type == "fixed_large" and scheduler.config.thresholding
    assert scheduler.config.sample_max_value == float("inf") and scheduler.config.dynamic_thresholding_ratio == 0.9
    assert torch.allclose(diffusion.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)
    back = pretrained.load_diffusers(tmp_path / "out")
    assert (back.threshold, back.threshold_percentile, back.variance) == ("dynamic", 0.9, "beta")


def _write_base(folder):
    (folder / "config.json").write_text(json.dumps(BASE))
    return folder
