"""Engine overhead: S sampling steps versus S bare forwards of the same network, every sampler.

Run: python benchmarks/engine_overhead.py [--quick]
Writes benchmarks/results/engine_overhead.md. Both sides run interleaved in one process and the
table reports ratios of medians, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import diffkit
from diffkit.samplers import SAMPLERS
from diffkit.schedules import linear_beta_schedule

OUT = Path(__file__).parent / "results" / "engine_overhead.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    device = torch.device(args.device)
    torch.manual_seed(0)

    S = 25  # network calls per sample; the DDPM run uses a T=25 schedule so it too makes S calls
    batch, size = 8, 32
    model = diffkit.create_backbone("unet2d", in_channels=3, channels=[64, 128, 128], num_res_blocks=2,
                                    attention_levels=[1]).to(device).eval()
    diffusion = diffkit.GaussianDiffusion(model, (3, size, size), linear_beta_schedule(1000)).to(device)
    diffusion_TS = diffkit.GaussianDiffusion(model, (3, size, size), linear_beta_schedule(S)).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare():
        with torch.no_grad():
            for _ in range(S):
                model(x, t)

    runners = {"bare forwards": bare}
    for name in SAMPLERS:
        engine = diffusion_TS if name == "ddpm" else diffusion
        steps = None if name == "ddpm" else S
        runners[name] = lambda engine=engine, name=name, steps=steps: engine.sample(
            batch, sampler=name, steps=steps, generator=torch.Generator(device).manual_seed(0))

    for run in runners.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["bare forwards"])
    lines = [
        "# Engine overhead: sampling S steps / S bare network forwards",
        "",
        f"`python benchmarks/engine_overhead.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` — unet2d (channels 64/128/128, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters), batch {batch}, 3×{size}×{size}, S = {S}, median of {repeats} interleaved repeats, "
        f"device {device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}.",
        "",
        "| run | median time (s) | ratio to bare forwards | target |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, ts in times.items():
        ratio = statistics.median(ts) / base
        target = "" if name == "bare forwards" else ("< 1.05 ✓" if ratio < 1.05 else "< 1.05 ✗")
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {ratio:.3f} | {target} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
