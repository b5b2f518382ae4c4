"""Quality through the public Python API with the engine's DEFAULT arguments (issue 11, item 1).

Run: python benchmarks/default_api_quality.py [--steps 2000] [--threads 1]
(about 25 minutes on one quiet core). Writes benchmarks/results/default_api_quality.md.

No config, no trainer: the seed's way. ``diffkit.ConditionalDDPM("unet2d", …)`` on scikit-learn's 8×8
digits with nothing but the betas chosen (linear and cosine, 1000 steps), a plain AdamW loop for a few
hundred steps with ``diffkit.EMA``, then ``sample(…, y=labels)`` with every other argument left at
its default except the sampler and ``steps=20``. The judge is the independent CNN of
``digits_quality.py`` (trained on real digits only). Also reported: the share of pixels outside
[-1, 1] and the largest |value|, which is where a wrong default shows first.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import add_threads_option, elapsed, machine, set_threads, table, write_results
from digits_quality import CLASSES, balanced_labels, load_or_train_judges, predict, real_digits

import diffkit
from diffkit.schedules import make_beta_schedule

SAMPLERS = tuple(diffkit.samplers.SAMPLERS)  # every sampler the engine has
CALLS = 20
GUIDANCE = (1.0, 2.0)  # the default, and classifier-free guidance as a user of a conditional model would add
PER_CLASS = 50  # 500 samples per sampler


def train(schedule: str, steps: int, seed: int = 0) -> diffkit.ConditionalDDPM:
    torch.manual_seed(seed)
    x, y = real_digits("train")
    model = diffkit.ConditionalDDPM(
        "unet2d", (1, 8, 8), make_beta_schedule(schedule, 1000), num_classes=CLASSES, dim=64,
        backbone_options=dict(channels=[32, 64, 64], num_res_blocks=1, attention_levels=[1]),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = diffkit.EMA(model, decay=0.999, start_step=100)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=generator)
        loss = model(x[idx], y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        if (step + 1) % 100 == 0:
            print(f"  {schedule} step {step + 1}: loss {loss.item():.4f}", flush=True)
    return ema.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per schedule (default 2000)")
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    judge, _ = load_or_train_judges()
    x_test, y_test = real_digits("test")
    real_accuracy = float((predict(judge, x_test) == y_test).float().mean())
    labels = balanced_labels(PER_CLASS)
    rows = []
    for schedule in ("linear", "cosine"):
        t0 = time.perf_counter()
        model = train(schedule, args.steps)
        train_time = time.perf_counter() - t0
        for guidance in GUIDANCE:
            for sampler in SAMPLERS:
                t1 = time.perf_counter()
                extra = {} if guidance == 1.0 else {"guidance_scale": guidance}
                samples = model.sample(len(labels), sampler=sampler, steps=CALLS, y=labels,
                                       generator=torch.Generator().manual_seed(1), **extra)
                accuracy = float((predict(judge, samples) == labels).float().mean())
                outside = float((samples.abs() > 1).float().mean())
                rows.append([schedule, sampler, CALLS, "default (1)" if guidance == 1.0 else guidance,
                             f"{accuracy:.1%}", f"{outside:.2%}", f"{float(samples.abs().max()):.2f}",
                             f"{train_time:.0f} s", f"{time.perf_counter() - t1:.0f} s"])
                print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    lines = [
        "# Digits through the public Python API, default arguments",
        "",
        f"`python benchmarks/default_api_quality.py --steps {args.steps}` on {machine()}; total {elapsed(start)}.",
        "",
        f"`diffkit.ConditionalDDPM(\"unet2d\", (1, 8, 8), betas, num_classes=10, dim=64)` (widths 32/64/64), "
        f"AdamW 1e-3, batch 64, {args.steps} steps, `diffkit.EMA(decay=0.999, start_step=100)`; "
        f"`sample({len(labels)}, sampler=S, steps={CALLS}, y=labels)` with every other argument at its "
        "default (threshold, spacing; guidance 1, and 2 as a second setting). Judge: the CNN of `digits_quality.py`, "
        f"{real_accuracy:.1%} on real test digits. Target: ≥ 95% recognised on both schedules and every sampler.",
        "",
        *table(["schedule", "sampler", "calls", "guidance", "recognised", "pixels outside [-1, 1]", "max |x|", "training",
                "sampling"], rows),
    ]
    write_results("default_api_quality.md", lines)


if __name__ == "__main__":
    main()
