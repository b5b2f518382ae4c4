"""Training speed on the CPU: diffkit's DDPM CIFAR-10 UNet against diffusers' UNet2DModel, same network.

Run: python benchmarks/train_speed.py [--batch 8] [--repeats 10] [--threads 1] [--no-profile]
(3-4 minutes: 4 runners × (1 warm-up + 10 timed) steps of ≈ 3.5 s on one core, and a profile.)
Writes benchmarks/results/train_speed.md.

Both networks are the DDPM paper's CIFAR-10 model (Ho et al. 2020, appendix B): widths
128/256/256/256, two residual blocks per level, self-attention at 16×16 and in the middle,
GroupNorm(32), dropout 0.1, sinusoidal time embedding — 35,746,307 parameters each (checked).
One training step = forward, ε-MSE loss, backward, AdamW step, on the same batch and timesteps for
both. The runners take turns in one process; the ratio is the median over rounds of
diffkit's time / diffusers' time in the same round. Rows: default (NCHW) memory format, and both
models and the batch in channels_last. A torch.profiler table then says where each step's time goes.
diffusers is a benchmark-only dependency (pip install -r benchmarks/requirements.txt); without it
only diffkit's rows are measured.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import diffkit
from common import (add_threads_option, elapsed, interleaved, machine, median, paired_ratio, set_threads, table,
                    write_results)

TARGET = 1.0  # diffkit's step time / diffusers' (issue 8: "no slower")


def diffusers_ddpm_cifar10() -> Optional[nn.Module]:
    """diffusers' UNet2DModel in the configuration of google/ddpm-cifar10-32, or None without diffusers."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3,
        block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,  # one head spanning all channels, as DDPM
        norm_num_groups=32, dropout=0.1,
        flip_sin_to_cos=False, freq_shift=1,  # DDPM's [sin, cos] embedding
        downsample_padding=0,
    )


class DiffusersAdapter(nn.Module):
    """diffusers' UNet called with diffkit's backbone signature, so both sides run the same step code."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_step(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> Callable[[], None]:
    """One training step of ``model`` on the given batch (its own AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x_t, t), noise)
        loss.backward()
        optimizer.step()

    return step


# Profiler op names grouped into what a reader can act on.
CATEGORIES = [
    ("convolution", ("conv", "mkldnn")),
    ("group norm", ("group_norm",)),
    ("attention (sdpa, bmm, softmax)", ("attention", "bmm", "softmax", "baddbmm")),
    ("linear / matmul", ("addmm", "linear", "matmul", "aten::mm")),
    ("optimizer (AdamW)", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "optimizer")),
    ("activation (silu)", ("silu",)),
    ("upsample", ("upsample", "interpolate")),
    ("cat / copy / layout", ("cat", "copy", "contiguous", "clone", "to_copy", "empty_like")),
    ("elementwise add / mul / dropout", ("add", "mul", "dropout", "bernoulli", "div", "sub")),
]


def category(op: str) -> str:
    name = op.lower()
    for label, keys in CATEGORIES:
        if any(k in name for k in keys):
            return label
    return "other"


def profile(step: Callable[[], None]) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """Self CPU time of one step: (total ms, ms per category, top ops)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = [(e.key, e.self_cpu_time_total / 1000) for e in prof.key_averages()]
    per_cat: dict[str, float] = defaultdict(float)
    for key, ms in rows:
        per_cat[category(key)] += ms
    rows.sort(key=lambda r: -r[1])
    return sum(ms for _, ms in rows), dict(per_cat), rows[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (each runner once per round)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()

    torch.manual_seed(0)
    ours = diffkit.create_backbone("unet2d", preset="ddpm-cifar10")
    peer = diffusers_ddpm_cifar10()
    print(f"diffkit unet2d preset ddpm-cifar10: {num_params(ours):,} parameters")
    if peer is None:
        print("diffusers is not installed (pip install -r benchmarks/requirements.txt): measuring diffkit alone")
    else:
        print(f"diffusers UNet2DModel (DDPM CIFAR-10 config): {num_params(peer):,} parameters")
        peer = DiffusersAdapter(peer)

    B = args.batch
    x_t = torch.randn(B, 3, 32, 32)
    t = torch.randint(0, 1000, (B,))
    noise = torch.randn_like(x_t)
    x_cl = x_t.contiguous(memory_format=torch.channels_last)

    runners: dict[str, Callable[[], None]] = {}
    models = {"diffkit": ours, "diffusers": peer}
    for name, model in models.items():
        if model is None:
            continue
        runners[f"{name} NCHW"] = make_step(model, x_t, t, noise)
    for name, model in models.items():
        if model is None:
            continue
        # A separate copy, so the NCHW row's model keeps its own layout.
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        runners[f"{name} channels_last"] = make_step(cl, x_cl, t, noise)

    print(f"{len(runners)} runners, batch {B}, {args.repeats} interleaved rounds after one warm-up round")
    times = interleaved(runners, args.repeats, warmup=1)

    lines = [
        "# Training speed: diffkit vs diffusers, DDPM CIFAR-10 UNet, CPU",
        "",
        f"`python benchmarks/train_speed.py` — {machine()}"
        + (f", diffusers {__import__('diffusers').__version__}" if peer is not None else "") + ".",
        "",
        f"One training step (forward, ε-MSE, backward, AdamW) of the DDPM paper's CIFAR-10 UNet on a batch of "
        f"{B} × 3×32×32, the same batch and timesteps for both libraries, dropout 0.1 active. "
        f"diffkit: `create_backbone(\"unet2d\", preset=\"ddpm-cifar10\")`, {num_params(ours):,} parameters; "
        + (f"diffusers: `UNet2DModel` (widths 128/256/256/256, 2 blocks per level, attention at 16×16 and in the "
           f"middle, GroupNorm 32, dropout 0.1, DDPM's sinusoidal embedding), {num_params(peer):,} parameters. "
           if peer is not None else "diffusers not installed. ")
        + f"Median of {args.repeats} rounds in which the runners take turns; "
        "*ratio* is the median over rounds of diffkit's time / diffusers' time in the same round "
        "(the machine is shared, so absolute times drift; the paired ratio much less); *ratio of best* "
        "compares each side's fastest step. One thread by default: on this shared 2-core machine a "
        "two-thread run slows down up to 10× whenever another process computes (`--threads 2` to try).",
        "",
    ]
    rows = []
    for layout in ("NCHW", "channels_last"):
        for name in ("diffkit", "diffusers"):
            key = f"{name} {layout}"
            if key not in times:
                continue
            s = median(times[key])
            ratio, best, verdict = "", "", ""
            if name == "diffkit" and f"diffusers {layout}" in times:
                r = paired_ratio(times, key, f"diffusers {layout}")
                ratio = f"**{r:.3f}**"
                best = f"{min(times[key]) / min(times[f'diffusers {layout}']):.3f}"
                verdict = f"≤ {TARGET:.1f} {'✓' if r <= TARGET else '✗'}"
            rows.append([key, f"{s:.2f}", f"{min(times[key]):.2f}", f"{B / s:.2f}", ratio, best, verdict])
    lines += table(["runner", "median s / step", "best s / step", "images / s (median)",
                    "ratio diffkit / diffusers", "ratio of best", "target"], rows)
    lines.append("")
    for name in ("diffkit", "diffusers"):
        if f"{name} NCHW" in times:
            r = paired_ratio(times, f"{name} channels_last", f"{name} NCHW")
            lines.append(f"- channels_last / NCHW, {name}: {r:.3f} (below 1: channels_last is the faster)")

    if not args.no_profile:
        print("profiling one step of each (NCHW) …")
        profiles = {name: profile(runners[f"{name} NCHW"]) for name in models if f"{name} NCHW" in runners}
        cats = [label for label, _ in CATEGORIES] + ["other"]
        lines += ["", "## Where a step's time goes (torch.profiler, self CPU time of one NCHW step)", "",
                  "One profiled step per side, so read it as indicative. diffkit computes attention's q, k, v "
                  "and output projections as 1×1 convolutions (counted under convolution), diffusers as "
                  "`nn.Linear` (under linear / matmul).", ""]
        header = ["category"] + [f"{name} ms" for name in profiles] + [f"{name} share" for name in profiles]
        prof_rows = []
        for cat in cats:
            ms = [profiles[name][1].get(cat, 0.0) for name in profiles]
            if max(ms) < 1:
                continue
            shares = [f"{m / profiles[name][0]:.1%}" for m, name in zip(ms, profiles)]
            prof_rows.append([cat] + [f"{m:.0f}" for m in ms] + shares)
        prof_rows.append(["**total**"] + [f"{profiles[n][0]:.0f}" for n in profiles] + ["100%" for _ in profiles])
        lines += table(header, prof_rows)
        for name, (total, _, top) in profiles.items():
            lines += ["", f"Top ops, {name}:", ""]
            lines += table(["op", "self ms", "share"], [[f"`{k}`", f"{ms:.0f}", f"{ms / total:.1%}"] for k, ms in top])

    lines += ["", f"Script runtime: {elapsed(started)}."]
    write_results("train_speed.md", lines)


if __name__ == "__main__":
    main()
