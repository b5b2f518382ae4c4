"""Shared by the benchmark scripts: naming the machine, interleaved timing, tables, Fréchet distance.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Optional[torch.device] = None) -> str:
    """One line naming where the numbers come from: device, CPU, threads, torch."""
    if device is not None and device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        where = f"CPU {cpu_name()} ({torch.get_num_threads()} threads, {os.cpu_count()} cores visible)"
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def interleaved(
    runners: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Wall-clock seconds of each runner, ``repeats`` times, the runners taking turns within each round.

    Taking turns means a burst of load from elsewhere on a shared machine slows every runner of that
    round alike, so ratios of medians stay meaningful when absolute times do not.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(repeats):
        # Every other round runs in reverse order, so no runner always follows the same one.
        for name in order if r % 2 == 0 else order[::-1]:
            run = runners[name]
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
        if progress:
            print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {ts[-1]:.2f}s" for n, ts in times.items()), flush=True)
    return times


def add_threads_option(parser, default: Optional[int] = None) -> None:
    parser.add_argument("--threads", type=int, default=default,
                        help="torch CPU threads (default: %(default)s; None keeps torch's own choice)")


def set_threads(threads: Optional[int]) -> None:
    """Pin torch's CPU thread count. One thread per process is the robust choice on a shared machine:
    two OpenMP threads on two cores that another process also uses wait on each other at every
    barrier, and a step can take 10× longer, while a single thread just shares a core."""
    if threads is not None:
        torch.set_num_threads(threads)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of num/den measured in the same round: robust to load that changes between rounds."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Optional[str] = None) -> list[str]:
    """A markdown table; ``align`` is one character per column, ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write_results(name: str, lines: Sequence[str], echo: bool = True) -> Path:
    """Write ``benchmarks/results/NAME`` (and print it, unless ``echo`` is false)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    if echo:
        print(text)
        print(f"written to {path.relative_to(ROOT)}")
    return path


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are examples), as in FID
    (Heusel et al. 2017): |μa-μb|² + tr(Σa + Σb - 2(ΣaΣb)^½)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((ΣaΣb)^½) = Σ sqrt(eig(Σa^½ Σb Σa^½)): a symmetric PSD problem, so eigh is stable and real.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(min=0))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(cross).sum())


def elapsed(start: float) -> str:
    seconds = time.perf_counter() - start
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _settings(config) -> dict:
    """A resolved config without what does not change the trained model (where it lies, what it logs)."""
    data = config.model_dump()
    data["run"].pop("dir")
    for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
        data["train"].pop(key)
    data.pop("sample")
    return data


def load_or_train(run: Path, raw_config: dict, label: str, retrain: bool = False):
    """(EMA diffusion in eval mode, facts) of a cached benchmark run; trains it first when missing or ``retrain``.

    ``raw_config`` is a config mapping as ``diffkit.train`` takes it; the run lives in ``run``.
    """
    import json
    import shutil

    import diffkit

    from diffkit.config import validate

    facts_path = run / "bench.json"
    opened = None
    if not retrain and facts_path.is_file():
        try:
            opened = diffkit.open_run(run)
            opened.checkpoint()
        except (diffkit.RunError, diffkit.checkpoint.CheckpointError):
            opened = None
    if opened is not None and _settings(opened.config) != _settings(validate(raw_config, label)):
        # The cached run was trained from another config (the example changed since): judging it would
        # quote an old model under the new config's name.
        print(f"{run.relative_to(ROOT)} was trained from another {label}; training it again", flush=True)
        opened = None
    if opened is None:
        if run.exists():
            shutil.rmtree(run)
        steps = raw_config["train"]["steps"]
        print(f"training {label} for {steps} steps into {run.relative_to(ROOT)} …", flush=True)
        start = time.perf_counter()
        opened = diffkit.train(raw_config, overrides={"run.dir": str(run)}, progress=True)
        facts = {"train_steps": steps, "train_seconds": round(time.perf_counter() - start, 1),
                 "train_machine": machine()}
        facts_path.write_text(json.dumps(facts, indent=2) + "\n")
    facts = json.loads(facts_path.read_text())
    diffusion = opened.diffusion(ema=True, device="cpu")
    facts["parameters"] = sum(p.numel() for p in diffusion.parameters())
    facts["checkpoint"] = str(opened.checkpoint().relative_to(ROOT))
    losses = [row["loss"] for row in opened.metrics() if "loss" in row]
    facts["final_loss"] = round(float(np.mean(losses[-5:])), 4)
    return diffusion, facts
