"""diffusers model folders through the command line and the run machinery: sample one, fine-tune from
one (train.init_from), export a run to one and read it back."""

import json

import numpy as np
import torch
import tomli_w
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from diffkit import open_run, pretrained
from diffkit.cli import main
from diffkit.run import PretrainedRun

UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4, attention_head_dim=8)


def _diffusers_folder(folder):
    torch.manual_seed(0)
    UNet2DModel(**UNET).save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=50, beta_schedule="linear", beta_start=0.002, beta_end=0.2).save_pretrained(folder)
    return folder


def test_diffkit_sample_runs_on_a_diffusers_folder(tmp_path, monkeypatch):
    model = _diffusers_folder(tmp_path / "ddpm-tiny")
    assert isinstance(open_run(model), PretrainedRun)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["sample", str(model), "--num", "3", "--sampler", "dpm-solver++", "--steps", "4", "--out", str(out),
                 "--no-progress"]) == 0
    images = [np.asarray(Image.open(out / f"{i:06d}.png")) for i in range(3)]
    assert all(img.shape == (8, 8) for img in images)
    assert main(["sample", str(model), "--num", "1", "--steps", "2", "--no-progress"]) == 0  # default: ./samples/
    assert list((tmp_path / "samples" / "ddpm-tiny").glob("*/000000.png"))


def test_init_from_a_diffusers_folder_fine_tunes_its_weights(tmp_path, tiny):
    model = _diffusers_folder(tmp_path / "ddpm-tiny")
    options = pretrained.diffusers_backbone_options(model)
    raw = tiny(model={"backbone": "unet2d", "options": options},
               train={"steps": 1, "init_from": str(model), "lr": 1e-12})
    config = tmp_path / "fine.toml"
    config.write_text(tomli_w.dumps(raw))
    assert main(["train", str(config), "--no-progress"]) == 0
    run = open_run(raw["run"]["dir"])
    start = pretrained.read_diffusers(model).state_dict
    tuned = run.diffusion(ema=False).model.state_dict()
    # One step at a vanishing learning rate: the weights are the diffusers model's.
    assert max(float((tuned[k] - start[k]).abs().max()) for k in start) < 1e-6


def test_a_run_exports_to_a_folder_diffusers_reads(tmp_path, tiny):
    raw = tiny(train={"steps": 1})
    raw["model"]["options"]["norm_groups"] = 4  # diffusers has one GroupNorm group count throughout
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(raw))
    assert main(["train", str(config), "--no-progress"]) == 0
    out = tmp_path / "exported"
    assert main(["export-diffusers", raw["run"]["dir"], str(out)]) == 0
    unet = UNet2DModel.from_pretrained(out).eval()
    ours = open_run(raw["run"]["dir"]).diffusion(device="cpu").model
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert float((unet(x, t).sample - ours(x, t)).abs().max()) <= 1e-5
    assert json.loads((out / "scheduler_config.json").read_text())["num_train_timesteps"] == 50
    assert main(["export-diffusers", raw["run"]["dir"], str(out)]) == 2  # never over an existing export
