"""Inpainting against the exact conditional: each sampler's defaults, and what they replace.

Run: python benchmarks/inpainting_oracle.py [--seeds 3]. Writes benchmarks/results/inpainting_oracle.md.

The problems are tests/test_inpaint.py's: Gaussian data with an AR(1) covariance along each axis
(diffkit.testing.CorrelatedGaussianOracle, the exact denoiser, T = 100, cosine β), one example per rank
2 to 5 with a region to fill, whose conditional mean and std given the rest are known in closed form.
500 samples per problem and seed. Each cell: the worst over ranks 2-5 and seeds of the largest error of
the conditional mean (in standard errors, over the unknown elements) and of the pooled std. The issue's
bar: 3 standard errors and 5 %. The test asserts the first seed; the defaults were chosen over three.
Reconstruction guidance (``reconstruction=w``, off by default) costs a backward pass per call besides the
calls counted here.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table, write_results  # noqa: E402
from test_inpaint import MAX_STD, MAX_Z, N, STEPS, errors, problem  # noqa: E402

from diffkit import inpaint  # noqa: E402
from diffkit.samplers import DEFAULT_SPACING, SAMPLERS, timestep_schedule  # noqa: E402

ORIGINAL = inpaint.sample_known


def settings(sampler: str) -> list[tuple[str, dict, bool]]:
    """(row name, sample() options, loops with ancestral steps) compared for ``sampler``."""
    default = inpaint.default_resample(sampler)
    return [
        (f"default: resample {default.resample}, jump {default.jump_length}, σ/α ≤ {default.resample_below}",
         {}, True),
        ("same, loops with the sampler's own steps", {}, False),
        ("previous default: resample 30, jump 5, σ/α ≤ 0.5, own steps",
         dict(resample=30, jump_length=5, resample_below=0.5), False),
        ("replacement only (resample 1)", dict(resample=1), True),
        ("default + reconstruction guidance w=1", dict(reconstruction=1.0), True),
        ("default + reconstruction guidance w=2", dict(reconstruction=2.0), True),
        ("replacement + reconstruction guidance w=5 (resample 1)", dict(resample=1, reconstruction=5.0), True),
    ]


def measure(sampler: str, options: dict, ancestral: bool, seeds: int) -> tuple[float, float, int]:
    """(worst z, worst |std error|, network calls per sample) over ranks 2-5 and ``seeds`` seeds."""
    inpaint.sample_known = ORIGINAL if ancestral else partial(ORIGINAL, loop_sampler=None)
    worst_z = worst_std = 0.0
    try:
        for rank in (2, 3, 4, 5):
            diffusion, known, mask, mean, std = problem(rank)
            for seed in range(seeds):
                x = diffusion.sample(N, sampler=sampler, steps=STEPS[sampler], known=known[None], mask=mask,
                                     generator=torch.Generator().manual_seed(seed), **options)
                z, std_error = errors(x, mask, mean, std)
                worst_z, worst_std = max(worst_z, z), max(worst_std, abs(std_error))
    finally:
        inpaint.sample_known = ORIGINAL
    default = inpaint.default_resample(sampler)
    visited = timestep_schedule(len(diffusion.alphas_cumprod), STEPS[sampler], DEFAULT_SPACING[sampler],
                                diffusion.alphas_cumprod)
    calls = inpaint.network_calls(visited, diffusion.alphas_cumprod, options.get("resample", default.resample),
                                  options.get("jump_length", default.jump_length),
                                  options.get("resample_below", default.resample_below))
    return worst_z, worst_std, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for sampler in sorted(SAMPLERS):
        for name, options, ancestral in settings(sampler):
            z, std_error, calls = measure(sampler, options, ancestral, args.seeds)
            ok = "✓" if z < MAX_Z and std_error < MAX_STD else "✗"
            steps = STEPS[sampler] or "all 100"
            rows.append([sampler, steps, name, calls, f"{z:.2f}", f"{std_error:.1%}", ok])
            print(rows[-1], flush=True)
    lines = [
        "# Inpainting against the exact conditional (correlated Gaussian oracle)",
        "",
        f"`python benchmarks/inpainting_oracle.py --seeds {args.seeds}` — {machine()}.",
        "",
        *__doc__.split("\n\n")[1].splitlines(),
        "",
        *table(["sampler", "steps", "inpainting settings", "calls", "worst mean error (SE)", "worst std error",
                f"bar ({MAX_Z:g} SE, {MAX_STD:.0%})"], rows, align="llllrrl"),
        "",
        f"Runtime: {(time.time() - start) / 60:.1f} min.",
    ]
    write_results("inpainting_oracle.md", lines)


if __name__ == "__main__":
    main()
