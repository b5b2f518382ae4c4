"""Inpainting and continuation on real data, by models trained without ever seeing a mask.

Run: python benchmarks/inpainting.py [--retrain] [--threads N]
(a first run trains two small unconditional models, cached under runs/bench-inpaint-digits and
runs/bench-inpaint-tones.) Writes benchmarks/results/inpainting.md and one picture per modality.
"""

from __future__ import annotations

from typing import Any

import common
from common import ROOT

DIGITS_RUN = ROOT / "runs" / "bench-inpaint-digits"
TONES_RUN = ROOT / "runs" / "bench-inpaint-tones"
DIGITS_STEPS, TONES_STEPS = 2000, 1500
SAMPLE_RATE, LENGTH = 4000, 1024  # 0.256 s windows


def digits_config(steps: int = DIGITS_STEPS) -> dict[str, Any]:
    """digits_quality.py's network without its conditioner: an unconditional model of 8×8 digits."""
    return {
        "run": {"dir": str(DIGITS_RUN), "seed": 0, "device": "cpu"},
        "data": {"dataset": "digits", "options": {"size": 8, "split": "train"}, "batch_size": 64},
        "model": {"backbone": "unet2d",
                  "options": {"in_channels": 1, "channels": [32, 64, 64], "num_res_blocks": 1,
                              "attention_levels": [1], "dropout": 0.1}},
        "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "train": {"steps": steps, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.999, "ema_start": 200,
                  "log_every": 50, "checkpoint_every": 0, "keep_checkpoints": 1},
        "sample": {"num": 16, "sampler": "dpm-solver++", "steps": 20},
    }


def tones_config(steps: int = TONES_STEPS) -> dict[str, Any]:
    """An unconditional model of steady tones (TonesDataset's low and high tones) in 0.256 s windows at 4 kHz."""
    return {
        "run": {"dir": str(TONES_RUN), "seed": 0, "device": "cpu"},
        "data": {"dataset": "tones", "batch_size": 32,
                 "options": {"num_examples": 4096, "sample_rate": SAMPLE_RATE, "length": LENGTH, "num_classes": 2}},
        "model": {"backbone": "unet1d",
                  # 1024 → 256 → 64 → 16 samples; attention over the 64 and 16 positions.
                  "options": {"in_channels": 1, "channels": [16, 32, 64, 64], "num_res_blocks": 1,
                              "downsample_factors": 4, "attention_levels": [2, 3]}},
        "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "train": {"steps": steps, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.999, "ema_start": 200,
                  "log_every": 50, "checkpoint_every": 0, "keep_checkpoints": 1},
        "sample": {"num": 8, "sampler": "dpm-solver++", "steps": 20},
    }


def load_models(retrain: bool = False):
    digits = common.load_or_train(DIGITS_RUN, digits_config(), "the unconditional digits model", retrain)
    tones = common.load_or_train(TONES_RUN, tones_config(), "the unconditional tones model", retrain)
    return digits, tones
