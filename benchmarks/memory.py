"""Activation memory of one training forward + backward, with and without gradient checkpointing.

    python benchmarks/memory.py [--out benchmarks/results/memory.md] [--device cpu|cuda]

Measured per backbone:

- **saved activations**: the bytes autograd keeps from the forward pass for the backward pass, counted
  by a ``torch.autograd.graph.saved_tensors_hooks`` pack hook over distinct storages, parameters
  left out. This is what checkpointing trades for recomputation, and it is exact on any device
  (checkpoint's own stored inputs pass through the hook too, so nothing kept is missed). A
  checkpointed block briefly recomputes its own activations during backward: one block's worth on
  top of this number.
- **peak (CUDA only)**: ``torch.cuda.max_memory_allocated`` during forward + backward above what
  was allocated before it (parameters, input), so it includes gradients and temporaries.
- **time**: wall-clock seconds of that forward + backward, the fastest of two runs (checkpointing
  recomputes the forward).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

import diffkit


@dataclass
class Case:
    label: str  # what the row is called in the table
    backbone: str
    input_shape: tuple[int, ...]  # (B, C, *spatial)
    options: dict[str, Any] = field(default_factory=dict)


CASES = [
    # The seed's audio network, UNet1D(channels=[32, 64, 128, 256], attention_levels=[2]).
    Case("unet1d, 16 384 samples", "unet1d", (1, 1, 16384),
         dict(channels=[32, 64, 128, 256], attention_levels=[2])),
    # The same widths with factor-4 downsampling: attention at level 2 sees 1 024 positions, not 4 096.
    Case("unet1d, 16 384 samples, factors 4", "unet1d", (1, 1, 16384),
         dict(channels=[32, 64, 128, 256], attention_levels=[2], downsample_factors=4)),
    Case("unet3d, 32³ volume", "unet3d", (1, 1, 32, 32, 32),
         dict(channels=[32, 64, 128, 256], attention_levels=[2])),
]


REPEATS = 2  # runs per backbone and mode; the table reports the fastest


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct non-parameter storages autograd saves during ``model(x, t)``, and the output."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t)
    return sum(storages.values()), out


@dataclass
class Measurement:
    saved: int
    peak: Optional[int]
    seconds: float


def measure(case: Case, checkpointing: bool, device: torch.device) -> Measurement:
    torch.manual_seed(0)
    model = diffkit.create_backbone(case.backbone, in_channels=case.input_shape[1],
                                    gradient_checkpointing=checkpointing, **case.options).to(device).train()
    x = torch.randn(case.input_shape, device=device)
    t = torch.randint(0, 1000, (case.input_shape[0],), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    saved, out = saved_activation_bytes(model, x, t)
    out.square().mean().backward()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    return Measurement(saved, peak, time.perf_counter() - start)


def best_of(repeats: int, case: Case, checkpointing: bool, device: torch.device) -> Measurement:
    """The fastest of ``repeats`` runs (the first pays for kernel selection; others share the machine)."""
    runs = [measure(case, checkpointing, device) for _ in range(repeats)]
    assert len({run.saved for run in runs}) == 1, "saved bytes must not vary between runs"
    return min(runs, key=lambda run: run.seconds)


def mib(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 2**20:,.1f}"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory.md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rows = []
    for case in CASES:
        plain = best_of(REPEATS, case, False, device)
        ckpt = best_of(REPEATS, case, True, device)
        saving = 1 - ckpt.saved / plain.saved
        print(f"{case.label}: saved activations {mib(plain.saved)} → {mib(ckpt.saved)} MiB "
              f"({saving:.0%} less), {plain.seconds:.1f} s → {ckpt.seconds:.1f} s")
        rows.append(
            f"| {case.label} | {tuple(case.input_shape)} | {mib(plain.saved)} | {mib(ckpt.saved)} | **{saving:.0%}** "
            f"| {mib(plain.peak)} | {mib(ckpt.peak)} | {plain.seconds:.1f} | {ckpt.seconds:.1f} |"
        )

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    options = "\n".join(f"- {c.label}: `{c.backbone}` with `{c.options}`" for c in CASES)
    text = f"""# Gradient checkpointing: activation memory

Generated by `python benchmarks/memory.py` on {device_name}, torch {torch.__version__}, float32,
one training forward + backward (loss = mean square of the output) of a freshly built backbone:

{options}

- *saved activations*: bytes of distinct tensors autograd keeps from the forward pass for the
  backward pass (a `saved_tensors_hooks` pack hook; parameters excluded). With checkpointing these
  are the blocks' inputs (and skip tensors); each block recomputes its own activations, one block
  at a time, during the backward pass.
- *peak*: `torch.cuda.max_memory_allocated` above the memory held before the step (CUDA only).
- *time*: wall-clock seconds of the step, the fastest of {REPEATS} runs; checkpointing runs each
  block's forward twice. The machine's load average was {load:.1f} on {os.cpu_count()} cores when
  this ran: timings taken beside other work are rough; the memory columns do not depend on it.

| backbone | input (B, C, …) | saved activations, MiB | with checkpointing, MiB | less | peak, MiB | peak with checkpointing, MiB | time, s | time with checkpointing, s |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
