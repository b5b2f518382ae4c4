"""Reduced-precision sampling on the CPU: bf16, fp16 and int8-dynamic-quantised Linear layers, on the digits model.

Run: python benchmarks/reduced_precision.py [--threads N] [--repeats 5]
(needs the digits model: the first run of benchmarks/digits_quality.py trains it, or this script
does; about 6 minutes with the model cached, most of it fp16, which this CPU does not compute natively.) Writes benchmarks/results/reduced_precision.md.

The model is the class-conditional digits UNet of ``digits_quality.py``, sampled with dpm-solver++
at 20 network calls and that script's headline guidance scale. Each variant runs the same sampler
from the same noise:

- fp32: the reference.
- bf16 autocast: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around sampling; weights stay fp32.
- fp16 autocast: the same with float16 (CPU autocast supports it in this torch).
- bf16 weights: the whole engine cast with ``.to(torch.bfloat16)``, so the sampler's state is bf16 too
  (the schedule stays float64: GaussianDiffusion keeps it exact whatever the cast).
- int8 dynamic: ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``, the
  seed's suggestion. In a UNet the Linear layers are only the time / label embedding MLPs and each
  residual block's embedding projection; the convolutions, where the time goes, stay fp32.

Speed: sampling a batch, the variants taking turns, the ratio fp32 time / variant time (median over
rounds of the ratio within a round). Quality: the digits judge's recognition rate and the Fréchet
distance to the real test split (as in digits_quality.md), and how far each variant's samples land
from fp32's from the same noise: the mean absolute pixel difference (pixels in [-1, 1]) and the
share of samples the judge labels differently.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
import warnings
from typing import Callable

import torch
import torch.nn as nn

from common import (RESULTS, add_threads_option, elapsed, interleaved, machine, paired_ratio, set_threads, table,
                    write_results)
from digits_quality import (CLASSES, FD_N, balanced_labels, fd_to, features, load_or_train, load_or_train_judges,
                            predict, real_digits)
from diffkit import GaussianDiffusion

SAMPLER, STEPS = "dpm-solver++", 20
QUALITY_PER_CLASS = FD_N // CLASSES  # 500 samples per variant for the quality columns
TIMING_BATCH = 50  # samples per timed run
SEED = 3


def cpu_half_support() -> str:
    """Which half-precision instructions /proc/cpuinfo lists (they decide whether bf16 / fp16 can be fast)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    wanted = ["avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "f16c"]
    have = [f for f in wanted if f in flags]
    missing = [f for f in wanted if f not in flags]
    return (f"has {', '.join(have) or 'none of them'}; lacks {', '.join(missing) or 'none'} "
            "(without avx512_fp16 or amx_fp16 the CPU has no fp16 arithmetic, f16c only converts, so fp16 kernels "
            "take slow fallback paths)")


def quantize_linear_int8(diffusion: GaussianDiffusion) -> GaussianDiffusion:
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; it still works in this torch.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(diffusion), {nn.Linear}, dtype=torch.qint8)


def variants(fp32: GaussianDiffusion) -> dict[str, tuple[GaussianDiffusion, Callable[[], contextlib.AbstractContextManager]]]:
    """name → (engine, context to sample under)."""
    plain = contextlib.nullcontext
    return {
        "fp32": (fp32, plain),
        "bf16 autocast": (fp32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "fp16 autocast": (fp32, lambda: torch.autocast("cpu", dtype=torch.float16)),
        "bf16 weights": (copy.deepcopy(fp32).to(torch.bfloat16), plain),
        "int8 dynamic (Linear)": (quantize_linear_int8(fp32), plain),
    }


@torch.no_grad()
def sample(engine: GaussianDiffusion, context, labels: torch.Tensor, guidance: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with context():
        x = engine.sample(len(labels), sampler=SAMPLER, steps=STEPS, y=labels, guidance_scale=guidance,
                          generator=generator)
    return x.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    add_threads_option(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()

    diffusion, facts = load_or_train()
    judge_net, feature_net = load_or_train_judges()
    summary_path = RESULTS / "digits_quality.json"
    guidance = json.loads(summary_path.read_text())["headline"]["guidance"] if summary_path.is_file() else 2.0
    x_test, _ = real_digits("test")
    test_feats = features(feature_net, x_test)
    runs = variants(diffusion)

    # Quality: every variant from the same noise.
    labels = balanced_labels(QUALITY_PER_CLASS)
    quality = {}
    reference = None
    for name, (engine, context) in runs.items():
        t0 = time.perf_counter()
        x = sample(engine, context, labels, guidance, SEED)
        pred = predict(judge_net, x)
        if reference is None:
            reference = (x, pred)
        quality[name] = {
            "accuracy": float((pred == labels).float().mean()),
            "fd": fd_to(feature_net, x, test_feats),
            "pixel_diff": float((x.clamp(-1, 1) - reference[0].clamp(-1, 1)).abs().mean()),
            "label_changed": float((pred != reference[1]).float().mean()),
            "finite": bool(torch.isfinite(x).all()),
        }
        print(f"  {name}: {quality[name]['accuracy']:.1%} recognised, FD {quality[name]['fd']:.2f}, "
              f"|Δ| vs fp32 {quality[name]['pixel_diff']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    # Speed: the variants take turns sampling the same batch.
    timing_labels = balanced_labels(TIMING_BATCH // CLASSES)
    runners = {name: (lambda e=engine, c=context: sample(e, c, timing_labels, guidance, SEED))
               for name, (engine, context) in runs.items()}
    times = interleaved(runners, args.repeats, warmup=0)  # the quality pass above was the warm-up

    n = len(labels)
    linear_share = sum(p.numel() for m in diffusion.modules() if isinstance(m, nn.Linear) for p in m.parameters()) \
        / sum(p.numel() for p in diffusion.parameters())
    rows = []
    for name in runs:
        q = quality[name]
        speedup = 1.0 if name == "fp32" else 1.0 / paired_ratio(times, name, "fp32")
        rows.append([name, f"{min(times[name]):.2f}", f"**{speedup:.2f}×**" if name != "fp32" else "1.00×",
                     f"{q['accuracy']:.1%}", f"{q['fd']:.2f}", f"{q['pixel_diff']:.4f}", f"{q['label_changed']:.1%}"])
    lines = [
        "# Reduced-precision sampling on the CPU (digits model)",
        "",
        f"`python benchmarks/reduced_precision.py` — {machine()}.",
        "",
        f"The class-conditional digits model of `digits_quality.md` ({facts['parameters'] / 1e6:.2f}M parameters), "
        f"{SAMPLER} at {STEPS} network calls, guidance {guidance:g}. *Speed-up*: fp32's sampling time / the "
        f"variant's for a batch of {TIMING_BATCH} ({TIMING_BATCH // CLASSES} per digit), median over "
        f"{args.repeats} rounds in which the variants take turns. Quality columns: {n} samples per variant "
        "from the same noise; recognised and Fréchet distance as in `digits_quality.md` (judge and test split); "
        "|Δ| and *label changed* compare each variant's samples to fp32's from the same noise.",
        "",
        *table(["variant", "best s / batch", "speed-up vs fp32", "recognised", "Fréchet distance",
                "mean abs. pixel difference vs fp32", "label changed vs fp32"], rows),
        "",
        "- bf16 / fp16 autocast: convolutions and matmuls in half precision, weights and the sampler's state "
        "in fp32.",
        "- bf16 weights: the network *and* the sampler's state in bf16 (the schedule stays float64).",
        "- int8 dynamic: only `nn.Linear` layers are quantised (`quantize_dynamic(model, {nn.Linear}, "
        "dtype=torch.qint8)`): the time / label embedding MLPs and the residual blocks' embedding projections, "
        f"{linear_share:.0%} of the parameters and almost none of the compute, which sits in the convolutions. "
        "`torch.ao.quantization` is deprecated in favour of torchao; it still runs in this torch.",
        "",
        f"- This CPU's instruction set: {cpu_half_support()}.",
        "",
        f"Script runtime: {elapsed(started)}.",
    ]
    if not all(q["finite"] for q in quality.values()):
        lines.insert(-2, "- Some variant produced NaN or Inf samples: see the table.")
    write_results("reduced_precision.md", lines)


if __name__ == "__main__":
    main()
