"""Data loading: what loading each example under its own seed (the trainer's ``SeededExamples``) costs.

Run: python benchmarks/data_loading.py [--rounds N]  (a few seconds). Writes benchmarks/results/data_loading.md.

One process, one thread, the two loaders taking turns: batches of the demo datasets through a ``DataLoader``
(no workers, as the trainer's default) over the dataset itself and over ``SeededExamples`` around it, and
the time of one training step of the examples' networks for scale.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, default_collate

from common import interleaved, machine, median, paired_ratio, set_threads, table, write_results
from diffkit.data import create_dataset
from diffkit.trainer import SeededExamples

CASES = {
    "shapes 16×16 RGB, batch 32 (examples/shapes.toml)": (
        dict(name="shapes", num_examples=2048, size=16, channels=3), 32),
    "tones 4,096 samples, batch 16 (the audio example's clip length)": (
        dict(name="tones", num_examples=512, sample_rate=8000, length=4096, num_classes=4), 16),
}
BATCHES = 32
STEP_MS = (150.0, 428.0)  # one training step of each case's example (README, audio_quality.md)


def loader_pass(dataset, batch_size: int):
    def run() -> None:
        groups = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(BATCHES)]
        for _ in DataLoader(dataset, batch_sampler=groups, collate_fn=default_collate):
            pass
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    set_threads(1)
    started = time.perf_counter()
    rows, added = [], []
    for label, (options, batch_size) in CASES.items():
        options = dict(options)
        dataset = create_dataset(options.pop("name"), **options)
        times = interleaved({"plain": loader_pass(dataset, batch_size),
                             "seeded": loader_pass(SeededExamples(dataset, 0, 0), batch_size)},
                            args.rounds, progress=False)
        plain, seeded = (median(times[k]) / BATCHES * 1e3 for k in ("plain", "seeded"))
        added.append(seeded - plain)
        ratio = paired_ratio(times, "seeded", "plain")
        rows.append([label, f"{plain:.2f}", f"{seeded:.2f}", f"{ratio:.3f}", f"{(seeded - plain) / batch_size * 1e3:.0f}"])
        print(rows[-1], flush=True)
    lines = [
        "# Data loading: each example under its own seed",
        "",
        f"`python benchmarks/data_loading.py` — {machine()}.",
        "",
        "The trainer loads every example under a seed of its own (`SeededExamples`: torch's CPU generator saved, "
        "seeded and put back, NumPy's and Python's seeded), so that `data.num_workers` and a resume mid-epoch "
        f"change nothing. Per batch, {BATCHES} batches a pass, {args.rounds} passes each, the loaders taking turns "
        "in one process; the ratio is the median of the per-round ratios.",
        "",
        *table(["data", "ms per batch, plain", "ms per batch, seeded", "ratio", "µs per example added"], rows),
        "",
        "For scale, against the training steps measured elsewhere on this machine (the shapes example about "
        f"{STEP_MS[0]:.0f} ms, 6-7 steps/s in the README; the tones example about {STEP_MS[1]:.0f} ms, 1,400 steps "
        f"in 599 s in audio_quality.md): the added time is {added[0] / STEP_MS[0]:.2%} and "
        f"{added[1] / STEP_MS[1]:.2%} of a step.",
        "",
        f"Script runtime: {time.perf_counter() - started:.0f} s.",
    ]
    write_results("data_loading.md", lines)


if __name__ == "__main__":
    main()
