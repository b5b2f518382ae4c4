"""Parity with diffusers at the published DDPM models' full size: import, compare outputs, export back.

Run: python benchmarks/diffusers_parity.py [--threads N]
Writes benchmarks/results/diffusers_parity.md. No network: the published configs (google/ddpm-cifar10-32
and the 256-px CelebA-HQ / church / bedroom layout) get random weights, are saved with diffusers,
read by diffkit.pretrained, and both networks see the same random inputs in float32. The 256-px layout
runs at 64×64 (the weights do not depend on the image size) to keep the CPU time small.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import add_threads_option, machine, set_threads, table, write_results
from diffusers import UNet2DModel

from diffkit import pretrained

PUBLISHED = dict(act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
                 flip_sin_to_cos=False, freq_shift=1, in_channels=3, layers_per_block=2, mid_block_scale_factor=1,
                 norm_eps=1e-06, norm_num_groups=32, out_channels=3, time_embedding_type="positional")
LAYOUTS = {
    "ddpm-cifar10-32": (dict(PUBLISHED, sample_size=32, block_out_channels=[128, 256, 256, 256],
                             down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                             up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]), 32),
    "ddpm-{celebahq,church,bedroom}-256": (
        dict(PUBLISHED, sample_size=256, block_out_channels=[128, 128, 256, 256, 512, 512],
             down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4), 64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    rows = []
    for name, (config, size) in LAYOUTS.items():
        torch.manual_seed(0)
        unet = UNet2DModel(**config).eval()
        with torch.no_grad():  # every parameter away from its initial value (zeros, ones)
            for p in unet.parameters():
                p.add_(0.02 * torch.randn_like(p))
        with tempfile.TemporaryDirectory() as tmp:
            folder, exported = Path(tmp) / "model", Path(tmp) / "exported"
            unet.save_pretrained(folder)
            start = time.perf_counter()
            diffusion = pretrained.load_diffusers(folder)
            seconds = time.perf_counter() - start
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(2, 3, size, size, generator=gen)
            t = torch.tensor([0, 999])
            with torch.no_grad():
                theirs = unet(x, t).sample
                ours = diffusion.model(x, t)
                pretrained.export_diffusers(diffusion, exported)
                back = UNet2DModel.from_pretrained(exported).eval()(x, t).sample
            params = sum(p.numel() for p in diffusion.model.parameters())
            rows.append([name, f"{params / 1e6:.2f}M", f"{size}×{size}", f"{theirs.abs().max().item():.3g}",
                         f"{(theirs - ours).abs().max().item():.2e}", f"{(back - ours).abs().max().item():.2e}",
                         f"{seconds:.1f}"])
            print(rows[-1], flush=True)
    lines = [
        "# Parity with diffusers' UNet2DModel (published DDPM layouts, random weights)",
        "",
        f"Machine: {machine()}; diffusers {__import__('diffusers').__version__}; float32, batch 2, t = 0 and 999.",
        "",
        *table(["layout", "parameters", "input", "max abs output (diffusers)", "max abs difference (diffkit import)",
                "max abs difference (diffkit export, read by diffusers)", "import (s)"], rows),
        "",
        "The differences are float32 rounding: diffusers applies attention's projections as linear layers",
        "over positions, diffkit as 1×1 convolutions; the weights themselves round-trip bit for bit",
        "(tests/test_pretrained.py).",
    ]
    write_results("diffusers_parity.md", lines)


if __name__ == "__main__":
    main()
