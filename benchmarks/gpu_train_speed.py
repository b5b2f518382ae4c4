"""Training throughput on one GPU: diffkit's DDPM CIFAR-10 UNet against diffusers' UNet2DModel.

Run on a CUDA machine:  python benchmarks/gpu_train_speed.py [--batch 128] [--rounds 3] [--steps-per-round 20]
(by our estimate 3-4 minutes on an H100, most of it torch.compile, which --no-compile skips; writes
benchmarks/results/gpu_train_speed.md. Not yet run: no GPU was available when it was written.)
Check the logic on a CPU: python benchmarks/gpu_train_speed.py --dry-run
(batch 2, one step per runner, torch.compile with the "eager" backend; prints the table, writes nothing.)

Four settings, each on both libraries, batch 128 of 3×32×32, one training step = forward, ε-MSE,
backward, AdamW: fp32 with TF32 matmuls and convolutions; bf16 autocast; bf16 autocast with the
model and batch in channels_last; and the last under torch.compile. For each setting both models
are built (each one's peak memory is measured while it warms up: ``torch.cuda.max_memory_allocated``
above what was allocated before it was built, so weights, gradients, AdamW state and activations),
then timed in alternating blocks of steps; images/s is the median over blocks.

The issue's peer reference (H100, diffusers 0.42.1): 1,429 img/s with TF32, 2,364 with bf16 (its
best), 1,829 with bf16 + channels_last, 2,303 with compile on top; the target is diffkit's best
setting at 2× diffusers' best setting measured in the same run.
Without diffusers (pip install -r benchmarks/requirements.txt) diffkit is measured alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import diffkit
from common import machine, table, write_results
from train_speed import DiffusersAdapter, diffusers_ddpm_cifar10, num_params

TARGET = 2.0  # diffkit's best img/s over diffusers' best, same run
PEER_REFERENCE = {  # the H100 numbers for diffusers 0.42.1, img/s
    "fp32 (TF32)": 1429, "bf16 autocast": 2364, "bf16 + channels_last": 1829, "bf16 + channels_last + compile": 2303,
}


@dataclass
class Setting:
    name: str
    bf16: bool
    channels_last: bool
    compile: bool


SETTINGS = [
    Setting("fp32 (TF32)", bf16=False, channels_last=False, compile=False),
    Setting("bf16 autocast", bf16=True, channels_last=False, compile=False),
    Setting("bf16 + channels_last", bf16=True, channels_last=True, compile=False),
    Setting("bf16 + channels_last + compile", bf16=True, channels_last=True, compile=True),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(template: nn.Module, setting: Setting, device: torch.device, batch: int,
               compile_backend: str) -> Callable[[], None]:
    """A fresh copy of ``template`` on ``device`` with its own AdamW, and its training step on a fixed batch."""
    model = copy.deepcopy(template).to(device).train()
    fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    generator = torch.Generator(device).manual_seed(0)
    x_t = torch.randn(batch, 3, 32, 32, device=device, generator=generator).contiguous(memory_format=fmt)
    noise = torch.randn(batch, 3, 32, 32, device=device, generator=generator)
    t = torch.randint(0, 1000, (batch,), device=device, generator=generator)
    forward = torch.compile(model, backend=compile_backend) if setting.compile else model
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if setting.bf16 else contextlib.nullcontext

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = forward(x_t, t)
        F.mse_loss(out.float(), noise).backward()
        optimizer.step()

    return step


def fmt_mem(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.2f}"


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"  # the dry run's CPU rates are tiny


def report(args, card: str, device: torch.device, templates: dict[str, nn.Module], done: list[Setting],
           images_per_s: dict, peak_gib: dict, failures: dict, started: float) -> list[str]:
    """The results file's lines for the settings measured so far."""
    sides = list(templates)
    rows = []
    for setting in done:
        row = [setting.name]
        for name in sides:
            key = (setting.name, name)
            row += ["fails", "–"] if key in failures else [fmt_rate(images_per_s[key]), fmt_mem(peak_gib[key])]
        if len(sides) == 2:
            a, b = ((setting.name, name) for name in sides)
            row.append(f"{images_per_s[a] / images_per_s[b]:.2f}×" if a in images_per_s and b in images_per_s else "–")
        row.append(f"{PEER_REFERENCE[setting.name]:,}")
        rows.append(row)
    header = ["setting"]
    for name in sides:
        header += [f"{name} img/s", f"{name} peak GiB"]
    if len(sides) == 2:
        header.append("diffkit / diffusers")
    header.append("diffusers, issue's H100 reference")
    lines = [
        "# Training throughput on a GPU: diffkit vs diffusers, DDPM CIFAR-10 UNet",
        "",
        f"`python benchmarks/gpu_train_speed.py` on **{card}** — {machine(device)}"
        + (f", diffusers {__import__('diffusers').__version__}" if "diffusers" in templates else "") + ".",
        "",
        f"Batch {args.batch} × 3×32×32, one step = forward, ε-MSE, backward, AdamW; both models are the DDPM "
        f"paper's CIFAR-10 UNet ({num_params(templates['diffkit']):,} parameters each). img/s: median of "
        f"{args.rounds} alternating blocks of {args.steps_per_round} steps. Peak: `torch.cuda.max_memory_allocated` "
        "above what was allocated before the model was built (weights, gradients, AdamW state, activations).",
        "",
        *table(header, rows),
        "",
    ]
    best = {name: max(((s.name, images_per_s[(s.name, name)]) for s in done if (s.name, name) in images_per_s),
                      key=lambda item: item[1], default=None) for name in sides}
    if len(sides) == 2 and best["diffkit"] and best["diffusers"]:
        ratio = best["diffkit"][1] / best["diffusers"][1]
        lines.append(f"diffkit's best ({best['diffkit'][0]}, {fmt_rate(best['diffkit'][1])} img/s) / diffusers' best "
                     f"({best['diffusers'][0]}, {fmt_rate(best['diffusers'][1])} img/s): **{ratio:.2f}×** "
                     f"(target ≥ {TARGET:.0f}× {'✓' if ratio >= TARGET else '✗'}).")
    for (setting, name), message in failures.items():
        lines.append(f"- {setting}, {name} failed: `{message}`")
    missing = [s.name for s in SETTINGS if s not in done]
    if missing:
        lines += ["", f"Not measured (skipped or not reached): {', '.join(missing)}."]
    lines += ["", f"Script runtime: {time.perf_counter() - started:.0f} s."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed blocks per model and setting")
    parser.add_argument("--steps-per-round", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model and setting (compile: +3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile setting (saves 1-3 minutes)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the script on the CPU: batch 2, one step, compile with the eager backend; writes nothing")
    args = parser.parse_args()

    if args.dry_run:
        device = torch.device("cpu")
        args.batch, args.rounds, args.steps_per_round, args.warmup = 2, 1, 1, 0
        compile_backend = "eager"  # exercises torch.compile's code path without building kernels
    elif not torch.cuda.is_available():
        print("gpu_train_speed: no CUDA device is visible, so there is nothing to measure. Run it on a machine "
              "with a GPU, or check the script with --dry-run on the CPU. (benchmarks/train_speed.py is the "
              "CPU comparison.)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
        compile_backend = "inductor"
        torch.backends.cuda.matmul.allow_tf32 = True  # the "fp32" setting is TF32, as the peer's reference
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()

    torch.manual_seed(0)
    templates: dict[str, nn.Module] = {"diffkit": diffkit.create_backbone("unet2d", preset="ddpm-cifar10")}
    peer = diffusers_ddpm_cifar10()
    if peer is None:
        print("gpu_train_speed: diffusers is not installed (pip install -r benchmarks/requirements.txt); "
              "measuring diffkit alone", file=sys.stderr)
    else:
        templates["diffusers"] = DiffusersAdapter(peer)
    for name, model in templates.items():
        print(f"{name}: {num_params(model):,} parameters")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"device: {card}; batch {args.batch}; {args.rounds} × {args.steps_per_round} timed steps per model and setting")

    images_per_s: dict[tuple[str, str], float] = {}
    peak_gib: dict[tuple[str, str], Optional[float]] = {}
    failures: dict[tuple[str, str], str] = {}
    settings = [s for s in SETTINGS if not (args.no_compile and s.compile)]
    done: list[Setting] = []
    for setting in settings:
        steps: dict[str, Callable[[], None]] = {}
        for name, template in templates.items():
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            try:
                step = build_step(template, setting, device, args.batch, compile_backend)
                for _ in range(args.warmup + (3 if setting.compile and not args.dry_run else 0)):
                    step()
                sync(device)
            except Exception as exc:  # one failing setting (a compile error, OOM) must not lose the others
                failures[(setting.name, name)] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                print(f"  {setting.name}, {name}: FAILED {failures[(setting.name, name)]}", flush=True)
                continue
            steps[name] = step
            peak_gib[(setting.name, name)] = (
                (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None)
            print(f"  {setting.name}, {name}: built and warmed up in {time.perf_counter() - t0:.0f} s", flush=True)
        blocks: dict[str, list[float]] = {name: [] for name in steps}
        order = list(steps)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps_per_round):
                    steps[name]()
                sync(device)
                blocks[name].append(args.batch * args.steps_per_round / (time.perf_counter() - t0))
        for name, rates in blocks.items():
            images_per_s[(setting.name, name)] = statistics.median(rates)
            print(f"  {setting.name}, {name}: {images_per_s[(setting.name, name)]:,.2f} img/s", flush=True)
        del steps, blocks
        gc.collect()
        done.append(setting)
        lines = report(args, card, device, templates, done, images_per_s, peak_gib, failures, started)
        if not args.dry_run:  # after every setting, so a run cut short still leaves what it measured
            write_results("gpu_train_speed.md", lines, echo=False)

    print("\n".join(lines))
    print("dry run: nothing written" if args.dry_run else "written to benchmarks/results/gpu_train_speed.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
