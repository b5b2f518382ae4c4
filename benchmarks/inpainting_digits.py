"""The digits part of benchmarks/inpainting.py: models, the ceiling of any completion, and the diagnostics.

Imported by inpainting.py; ``python benchmarks/inpainting_digits.py train`` trains and caches the models alone.

Models (cached under runs/bench-inpaint-digits-api/, trained by a plain AdamW loop with diffkit.EMA: the
recipe of benchmarks/default_api_quality.py, whose conditional digits are 92-97 % recognised unguided):
- ``uncond``: unet2d 32/64/64 without conditioner; it never sees a mask nor a label.
- ``cond``: the same network with the labels conditioner (label dropout 0.1); it never sees a mask.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from common import ROOT

import diffkit
from diffkit.schedules import make_beta_schedule

CACHE = ROOT / "runs" / "bench-inpaint-digits-api"
BACKBONE = dict(channels=[32, 64, 64], num_res_blocks=1, attention_levels=[1])
SCHEDULE = "cosine"
TRAIN_STEPS = 4000
SAVE_AT = (2000, 4000)  # EMA snapshots kept, to show what longer training buys


def build(kind: str) -> diffkit.GaussianDiffusion:
    betas = make_beta_schedule(SCHEDULE, 1000)
    if kind == "cond":
        return diffkit.ConditionalDDPM("unet2d", (1, 8, 8), betas, num_classes=10, dim=64, backbone_options=BACKBONE)
    backbone = diffkit.create_backbone("unet2d", in_channels=1, **BACKBONE)
    return diffkit.GaussianDiffusion(backbone, (1, 8, 8), betas)


def path(kind: str, steps: int) -> Path:
    return CACHE / f"{kind}-{steps}.safetensors"


def train(kind: str, steps: int = TRAIN_STEPS, seed: int = 0) -> None:
    """Train ``kind`` on the real train digits; save the EMA weights at each of SAVE_AT (and the facts)."""
    from safetensors.torch import save_file

    from digits_quality import real_digits

    torch.manual_seed(seed)
    x, y = real_digits("train")
    model = build(kind)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = diffkit.EMA(model, decay=0.999, start_step=100)
    generator = torch.Generator().manual_seed(seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    cpu0, losses = time.process_time(), []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (64,), generator=generator)
        loss = model(x[idx], y[idx] if kind == "cond" else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        losses.append(loss.item())
        if step % 200 == 0:
            print(f"  {kind} step {step}: loss {sum(losses[-200:]) / 200:.4f} "
                  f"({(time.process_time() - cpu0) / 60:.1f} CPU-min)", flush=True)
        if step in SAVE_AT or step == steps:
            save_file({k: v.contiguous() for k, v in ema.model.state_dict().items()}, str(path(kind, step)))
            facts = {"kind": kind, "steps": step, "cpu_seconds": round(time.process_time() - cpu0, 1),
                     "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 4),
                     "parameters": sum(p.numel() for p in model.parameters())}
            path(kind, step).with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")


def load(kind: str, steps: int = TRAIN_STEPS) -> tuple[diffkit.GaussianDiffusion, dict]:
    """(EMA model in eval mode, facts) of a cached model; trains it first when missing."""
    from safetensors.torch import load_file

    if not path(kind, steps).is_file():
        print(f"training the {kind} digits model for {max(steps, TRAIN_STEPS)} steps into {CACHE.relative_to(ROOT)} …")
        train(kind, max(steps, TRAIN_STEPS))
    model = build(kind)
    model.load_state_dict(load_file(str(path(kind, steps))))
    return model.eval(), json.loads(path(kind, steps).with_suffix(".json").read_text())


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["train"]:
        for kind in sys.argv[2:] or ["uncond", "cond"]:
            train(kind)


# --- judging -------------------------------------------------------------------------------------

CONFIDENT = 0.9  # the judge's probability above which a digit counts as clearly recognisable


@torch.no_grad()
def judge_probs(judge, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(judge(x.float().clamp(-1, 1)), 1)


def diagnose(judge, x: torch.Tensor, y: torch.Tensor | None = None) -> dict:
    """How recognisable ``x`` is to the judge (share with max probability ≥ CONFIDENT, mean max probability)
    and, with the true classes ``y``, the share named as ``y``, per class, and the commonest confusions."""
    p = judge_probs(judge, x)
    top, pred = p.max(1)
    out = {"confident": float((top >= CONFIDENT).float().mean()), "mean_max_p": float(top.mean())}
    if y is not None:
        hit = pred == y
        out["accuracy"] = float(hit.float().mean())
        out["per_class"] = [float(hit[y == k].float().mean()) for k in range(10)]
        pairs = torch.stack([y[~hit], pred[~hit]], 1).tolist()
        counts: dict = {}
        for a, b in pairs:
            counts[(a, b)] = counts.get((a, b), 0) + 1
        out["confusions"] = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    return out
