"""Inpainting and continuation on real data, by models trained without ever seeing a mask.

Run: python benchmarks/inpainting.py [--retrain] [--threads N]
(a first run trains the small models, cached under runs/bench-inpaint-*; the digits
judge comes from benchmarks/digits_quality.py, cached under runs/bench-digits.) Writes
benchmarks/results/inpainting.md, inpainting_digits.png, inpainting_audio.png, inpainting_volumes.png.

- Digits (benchmarks/inpainting_digits.py): the bottom half (rows 4-7) of each held-out real 8×8 digit is
  filled in from its top half; digits_quality.py's judge CNN (trained on the real train split) names the
  completed digit, and we count how often that is the original's class. First the ceiling of any
  completion, from the data alone; then an unconditional model with the engine's inpainting settings and
  with reconstruction guidance; then a class-conditional model that reads the label off the top half by
  its own denoising error (a diffusion classifier) and completes with it. Models cached under
  runs/bench-inpaint-digits-api (about 4 CPU-minutes each); the previous model (runs/bench-inpaint-digits,
  the Trainer's recipe) gives one row.
- Audio: a 100 ms gap in the middle of each held-out tone is filled; the dominant frequency inside the
  gap must match the tone's (the original clip's over the same 100 ms, measured the same way, so that
  the estimator's bias on a short window cancels) within MATCH_TOLERANCE. Then
  each tone is extended by 3× its window, window by window with half a window of overlap; the
  spectral flux (frame-to-frame change of the normalised magnitude spectrum) at the seams, where a new
  window's fresh part begins, is compared with the flux elsewhere in the continuation.
- Volumes: a slab of 2 depth slices through the middle of held-out solids is filled; we count the
  voxels of the slab whose occupancy (solid or background) matches the original's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
from common import RESULTS, ROOT, add_threads_option, elapsed, machine, set_threads, table, write_results

DIGITS_RUN = ROOT / "runs" / "bench-inpaint-digits"
TONES_RUN = ROOT / "runs" / "bench-inpaint-tones-6k"
PREVIOUS_TONES_RUN, PREVIOUS_TONES_STEPS = ROOT / "runs" / "bench-inpaint-tones-v", 3000  # the same network, shorter
VOLUMES_RUN = ROOT / "runs" / "bench-inpaint-volumes"
DIGITS_STEPS, TONES_STEPS, VOLUMES_STEPS = 2000, 6000, 800
SAMPLE_RATE, LENGTH = 4000, 1024  # 0.256 s windows
SAMPLER, STEPS = "dpm-solver++", 20
GAP = (LENGTH // 2 - 200, LENGTH // 2 + 200)  # 400 samples = 100 ms
MATCH_TOLERANCE = 0.03  # relative difference of dominant frequencies
RECONSTRUCTION = 20.0  # guidance weight of the audio rows (tones gap, DDPM 100 steps: 20 → 84 %, 50 → 81 %)
EXTEND_WINDOWS = 3


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


def tones_config(steps: int = TONES_STEPS, run: Path = TONES_RUN) -> dict[str, Any]:
    """An unconditional model of steady tones (TonesDataset's low and high tones) in 0.256 s windows at 4 kHz.

    The recipe of examples/audio_wav.toml (v-prediction, the lr decaying along half a cosine, the EMA's decay
    warming up). At 3,000 steps the gaps it filled matched in 73 % with the defaults and 86 % with
    reconstruction guidance, all misses on high tones (440-880 Hz, 4.5-9 samples a period) 3-7 % off pitch; at
    6,000 steps 83 % and 98 %, though its own free tones are no steadier (pitch kept over 0.15 s: 62 % and
    59 %): the longer run couples the fill to the known part better."""
    return {
        "run": {"dir": str(run), "seed": 0, "device": "cpu"},
        "data": {"dataset": "tones", "batch_size": 32,
                 "options": {"num_examples": 4096, "sample_rate": SAMPLE_RATE, "length": LENGTH, "num_classes": 2}},
        "model": {"backbone": "unet1d",
                  # 1024 → 256 → 64 → 16 samples; attention over the 64 and 16 positions.
                  "options": {"in_channels": 1, "channels": [16, 32, 64, 64], "num_res_blocks": 1,
                              "downsample_factors": 4, "attention_levels": [2, 3]}},
        "diffusion": {"timesteps": 1000, "schedule": "cosine", "objective": "v"},
        "train": {"steps": steps, "lr": 1e-3, "warmup_steps": 100, "lr_decay": "cosine", "ema_decay": 0.999,
                  "ema_start": 0, "ema_warmup": True, "log_every": 50, "checkpoint_every": 0, "keep_checkpoints": 1},
        "sample": {"num": 8, "sampler": "dpm-solver++", "steps": 20},
    }


def volumes_config(steps: int = VOLUMES_STEPS) -> dict[str, Any]:
    """An unconditional model of the spheres and cubes of SolidsDataset at 8³."""
    return {
        "run": {"dir": str(VOLUMES_RUN), "seed": 0, "device": "cpu"},
        "data": {"dataset": "solids", "options": {"num_examples": 2048, "size": 8}, "batch_size": 16},
        "model": {"backbone": "unet3d",
                  "options": {"in_channels": 1, "channels": [16, 32], "num_res_blocks": 1, "attention_levels": []}},
        "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "train": {"steps": steps, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.995, "ema_start": 100,
                  "log_every": 50, "checkpoint_every": 0, "keep_checkpoints": 1},
        "sample": {"num": 4, "sampler": "dpm-solver++", "steps": 20},
    }


def settings():
    """(row name, sampler options) of each inpainting setting compared: the default, plain replacement, and a
    stochastic sampler (DDIM with η = 1, 50 steps) with its default inpainting settings."""
    from diffkit.inpaint import DEFAULT_RESAMPLE

    r = DEFAULT_RESAMPLE[SAMPLER][0]
    return [(f"replacement + resampling (default: resample {r})", dict(sampler=SAMPLER, steps=STEPS, resample=r)),
            ("replacement only (resample 1)", dict(sampler=SAMPLER, steps=STEPS, resample=1)),
            (f"ddim η=1, 50 steps, resample {DEFAULT_RESAMPLE['ddim'][0]} (stochastic)",
             dict(sampler="ddim", steps=50, eta=1.0, resample=DEFAULT_RESAMPLE["ddim"][0])),
            (f"default + reconstruction guidance w={RECONSTRUCTION:g}",
             dict(sampler=SAMPLER, steps=STEPS, resample=r, reconstruction=RECONSTRUCTION)),
            (f"ddpm 100 steps, replacement + reconstruction guidance w={RECONSTRUCTION:g}",
             dict(sampler="ddpm", steps=100, resample=1, reconstruction=RECONSTRUCTION))]


def cost(diffusion, options: dict) -> int | str:
    """Network calls per sample (and as many backward passes with reconstruction guidance)."""
    from inpainting_digits import calls_of

    return calls_of(diffusion, options)


# --- digits ----------------------------------------------------------------------------------------


@torch.no_grad()
def bench_digits(rows: list, lines: list) -> None:
    import inpainting_digits
    from diffkit.data import save_image_grid

    # The previous digits model (the Trainer's recipe with dropout 0.1), kept for one row: before and after.
    old, _ = common.load_or_train(DIGITS_RUN, digits_config(), "the previous unconditional digits model")
    shown = inpainting_digits.bench(rows, lines, old_model=old)
    import digits_quality as dq

    x, _ = dq.real_digits("test")
    n = 12
    picture = torch.cat([x[:n], inpainting_digits.blank_bottom(x)[:n], shown["default"][:n], shown["recon"][:n],
                         shown["cond"][:n]])
    picture = torch.nn.functional.interpolate(picture, scale_factor=5, mode="nearest")
    save_image_grid(picture, RESULTS / "inpainting_digits.png", nrow=n)


# --- audio -----------------------------------------------------------------------------------------


def dominant_frequency(x: np.ndarray) -> np.ndarray:
    """Hz of the strongest Hann-windowed FFT bin of each row, refined by a parabola through log magnitudes;
    the FFT is zero-padded to 8192 points so short segments are read finely."""
    n = x.shape[-1]
    spectrum = np.abs(np.fft.rfft((x - x.mean(-1, keepdims=True)) * np.hanning(n), n=8192, axis=-1))
    spectrum[:, 0] = 0.0
    k = spectrum.argmax(-1).clip(1, spectrum.shape[-1] - 2)
    rows = np.arange(len(x))
    a, b, c = (np.log(spectrum[rows, k + d] + 1e-12) for d in (-1, 0, 1))
    offset = 0.5 * (a - c) / np.where(a - 2 * b + c == 0, 1.0, a - 2 * b + c)
    return (k + offset.clip(-0.5, 0.5)) * SAMPLE_RATE / 8192


def gap_match(x: torch.Tensor, original: torch.Tensor) -> np.ndarray:
    """Whether the dominant frequency inside GAP matches the tone's: that of the original clip over the same
    100 ms, measured the same way (so the estimator's own bias on a short window cancels)."""
    inside = dominant_frequency(x[:, 0, GAP[0]:GAP[1]].double().numpy())
    reference = dominant_frequency(original[:, 0, GAP[0]:GAP[1]].double().numpy())
    return np.abs(inside - reference) <= MATCH_TOLERANCE * reference


def spectral_flux(x: torch.Tensor, n_fft: int = 256, hop: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(flux per frame (B, frames-1), centre sample of each flux value): the L2 change between consecutive
    frames' unit-norm magnitude spectra."""
    spec = torch.stft(x[:, 0].float(), n_fft, hop, window=torch.hann_window(n_fft), center=False,
                      return_complex=True).abs()
    spec = spec / spec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    flux = (spec[:, :, 1:] - spec[:, :, :-1]).norm(dim=1).numpy()
    centres = np.arange(1, spec.shape[-1]) * hop + n_fft // 2 - hop // 2
    return flux, centres


@torch.no_grad()
def bench_audio(rows: list, lines: list) -> None:
    from diffkit.data import create_dataset, save_spectrogram_png
    from diffkit.inpaint import extend

    diffusion, facts = common.load_or_train(TONES_RUN, tones_config(), "the unconditional tones model")
    previous, previous_facts = common.load_or_train(
        PREVIOUS_TONES_RUN, tones_config(PREVIOUS_TONES_STEPS, PREVIOUS_TONES_RUN),
        f"the same tones model at {PREVIOUS_TONES_STEPS} steps")
    held = create_dataset("tones", num_examples=64, sample_rate=SAMPLE_RATE, length=LENGTH, num_classes=2, seed=1)
    x = torch.stack([held[i][0] for i in range(len(held))])
    mask = torch.ones(1, LENGTH, dtype=torch.bool)
    mask[:, GAP[0]:GAP[1]] = False

    def fill_gaps(model, name: str, options: dict, row_name: str) -> torch.Tensor:
        out = model.sample(len(x), known=x, mask=mask, generator=torch.Generator().manual_seed(1), **options)
        rows.append(["tones: a 100 ms gap", row_name, cost(model, options), f"{gap_match(out, x).mean():.1%}"])
        print(rows[-1], flush=True)
        return out

    filled = {name: fill_gaps(diffusion, name, options, name) for name, options in settings()}
    for name, options in (settings()[0], settings()[3]):  # the default, and the guided one
        fill_gaps(previous, name, options, f"{PREVIOUS_TONES_STEPS}-step model: {name}")
    free = diffusion.sample(len(x), sampler=SAMPLER, steps=STEPS, generator=torch.Generator().manual_seed(2))
    spliced = torch.where(mask, x, free)
    rows.append(["tones", "gap from an unconditional sample (no known part)", STEPS, f"{gap_match(spliced, x).mean():.1%}"])
    # How steady the model's own tones are: its unconditional samples' pitch over their first 100 ms against
    # that over their last 100 ms, measured as above.
    width = GAP[1] - GAP[0]
    first = dominant_frequency(free[:, 0, :width].double().numpy())
    last = dominant_frequency(free[:, 0, -width:].double().numpy())
    rows.append(["tones", "unconditional samples: pitch of the first 100 ms vs the last (the model's own "
                 "steadiness)", STEPS, f"{(np.abs(last - first) <= MATCH_TOLERANCE * first).mean():.1%}"])

    n_ext = 16
    overlap = LENGTH // 2
    seams = np.arange(LENGTH, LENGTH * (1 + EXTEND_WINDOWS), LENGTH - overlap)
    windows = int(np.ceil(LENGTH * EXTEND_WINDOWS / (LENGTH - overlap)))
    real_flux = spectral_flux(x[:n_ext])[0].mean()
    ext_seconds, extended = {}, {}
    for name, options in (settings()[0], settings()[-1]):  # the default, and the guided one
        t0 = time.perf_counter()
        long = extend(diffusion, x[:n_ext], LENGTH * (1 + EXTEND_WINDOWS), generator=torch.Generator().manual_seed(3),
                      **options)
        ext_seconds[name], extended[name] = time.perf_counter() - t0, long
        flux, centres = spectral_flux(long)
        near = np.abs(centres[:, None] - seams[None]).min(1) <= 64
        made = centres > LENGTH
        seam_flux, inner_flux = flux[:, near & made].mean(), flux[:, ~near & made].mean()
        f_start = dominant_frequency(long[:, 0, :LENGTH].double().numpy())
        f_end = dominant_frequency(long[:, 0, -LENGTH:].double().numpy())
        pitch_kept = float((np.abs(f_end - f_start) <= MATCH_TOLERANCE * f_start).mean())
        n = cost(diffusion, options)
        ext_calls = windows * n if isinstance(n, int) else f"{windows} × ({n})"
        rows.append([f"tones: extended by 3 windows, {name}", "spectral flux at the seams / inside windows", ext_calls,
                     f"{seam_flux / inner_flux:.2f} ({seam_flux:.3f} / {inner_flux:.3f}; real tones {real_flux:.3f})"])
        rows.append([f"tones: extended by 3 windows, {name}", "last window's pitch within 3 % of the first's",
                     ext_calls, f"{pitch_kept:.1%}"])
        print(rows[-2:], flush=True)
    long = extended[settings()[0][0]]
    save_spectrogram_png(filled[settings()[0][0]][:4], RESULTS / "inpainting_audio_gap.png", SAMPLE_RATE,
                         marks=[GAP])
    save_spectrogram_png(long[:4], RESULTS / "inpainting_audio.png", SAMPLE_RATE,
                         marks=[(LENGTH, LENGTH * (1 + EXTEND_WINDOWS))])
    lines += [f"- Tones model: `unet1d` 16/32/64/64 without conditioner on TonesDataset's low (110-220 Hz) and high "
              f"(440-880 Hz) tones, {LENGTH} samples at {SAMPLE_RATE} Hz, {facts['parameters'] / 1e6:.2f}M parameters, "
              "v-prediction, lr decaying along half a cosine, EMA decay warming up to 0.999 (the recipe of "
              "examples/audio_wav.toml), "
              f"{facts['train_steps']} steps ({facts['train_seconds'] / 60:.1f} min of wall time on the shared machine), final loss {facts['final_loss']}; the "
              f"{PREVIOUS_TONES_STEPS}-step rows: the same recipe with {PREVIOUS_TONES_STEPS} steps, its lr decay over those (final loss "
              f"{previous_facts['final_loss']}). {len(x)} held-out tones (seed 1; training used seed 0). Extending {n_ext} tones took "
              f"{' and '.join(f'{v:.0f} s' for v in ext_seconds.values())}.",
              "  Pictures: `inpainting_audio_gap.png` (gap filled, cyan marks) and `inpainting_audio.png` "
              "(continuations: the first 0.256 s is the given tone, the rest is made, cyan bar)."]


def enlarge(path, factor: int) -> None:
    """Enlarge a PNG in place by pixel repetition, so that 8-pixel slices can be seen."""
    from PIL import Image

    image = Image.open(path)
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(path)


# --- volumes ---------------------------------------------------------------------------------------


@torch.no_grad()
def bench_volumes(rows: list, lines: list) -> None:
    from diffkit.data import create_dataset, save_volume_slices_png

    diffusion, facts = common.load_or_train(VOLUMES_RUN, volumes_config(), "the unconditional solids model")
    held = create_dataset("solids", num_examples=64, size=8, seed=1)
    x = torch.stack([held[i][0] for i in range(len(held))])
    mask = torch.ones(1, 8, 8, 8, dtype=torch.bool)
    mask[:, 3:5] = False  # two depth slices through the middle
    solid = x > -0.5

    def agreement(out):
        return float(((out > -0.5) == solid)[:, ~mask].float().mean())

    best = None
    for name, options in settings()[:2]:
        out = diffusion.sample(len(x), known=x, mask=mask, generator=torch.Generator().manual_seed(1), **options)
        best = out if best is None else best
        rows.append(["solids: 2 middle slices", name, cost(diffusion, options), f"{agreement(out):.1%} voxels"])
        print(rows[-1], flush=True)
    free = diffusion.sample(len(x), sampler=SAMPLER, steps=STEPS, generator=torch.Generator().manual_seed(2))
    rows.append(["solids", "slab from an unconditional sample (no known part)", STEPS, f"{agreement(free):.1%} voxels"])
    rows.append(["solids", "slab left as background (no model)", 0, f"{agreement(torch.full_like(x, -1.0)):.1%} voxels"])
    # Slices across H through the centre show the filled depth slices 3-4 as rows 3-4.
    path = save_volume_slices_png(torch.stack([x[:4], best[:4]], 1).flatten(0, 1), RESULTS / "inpainting_volumes.png")
    enlarge(path, 8)
    lines += [f"- Solids model: `unet3d` 16/32 without conditioner, 8³ spheres and cubes, "
              f"{facts['parameters'] / 1e6:.2f}M parameters, {facts['train_steps']} steps "
              f"({facts['train_seconds'] / 60:.1f} min). {len(x)} held-out solids.",
              "  Picture `inpainting_volumes.png`: pairs of rows, original then completion, each the slices through "
              "the centre across D, H and W (in the 2nd and 3rd, depth slices 3-4 are the filled rows)."]


def targets(rows: list) -> list[str]:
    """The issue's audio targets against the measured rows, in words (the digits': inpainting_digits.summary)."""
    found = {(row[0], row[1].split(" (")[0]): row[3] for row in rows}

    def get(task: str, setting: str) -> str:
        return found.get((task, setting), "not run")

    gap = [float(row[3].rstrip("%")) for row in rows if row[0] == "tones: a 100 ms gap"]
    met = bool(gap) and max(gap) >= 95.0
    w = f"w={RECONSTRUCTION:g}"
    return [
        f"**Tones gap (issue 15: ≥ 95 %) — {'met' if met else 'not met'}.** The gap's pitch matches in "
        f"{get('tones: a 100 ms gap', 'replacement + resampling')} with the engine's defaults "
        f"({get('tones: a 100 ms gap', 'ddim η=1, 50 steps, resample 30')} with the stochastic DDIM, "
        f"{get('tones: a 100 ms gap', 'replacement only')} with replacement alone); reconstruction guidance "
        f"({w}) gives {get('tones: a 100 ms gap', 'default + reconstruction guidance ' + w)} on the "
        f"defaults and {get('tones: a 100 ms gap', 'ddpm 100 steps, replacement + reconstruction guidance ' + w)} "
        f"with DDPM's 100 ancestral steps. What decided it was training: the same network after "
        f"{PREVIOUS_TONES_STEPS} steps matches in "
        f"{get('tones: a 100 ms gap', f'{PREVIOUS_TONES_STEPS}-step model: replacement + resampling')} with the "
        f"defaults and {get('tones: a 100 ms gap', f'{PREVIOUS_TONES_STEPS}-step model: default + reconstruction guidance ' + w)} "
        f"with guidance ({w}). The longer-trained model's own "
        "free tones are no steadier (pitch kept within 3 % over 0.15 s in "
        f"{get('tones', 'unconditional samples: pitch of the first 100 ms vs the last')}): what more training "
        "bought is a fill that follows the known part. The exact Gaussian test (tests/test_inpaint.py) checks the "
        "method itself.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["digits", "audio", "volumes"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--report", action="store_true", help="only rewrite inpainting.md from inpainting.json")
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    # Each part's rows are kept in inpainting.json, so that a part can be re-run alone (--only).
    store = RESULTS / "inpainting.json"
    saved = json.loads(store.read_text()) if store.is_file() else {}
    parts = {"digits": bench_digits, "audio": bench_audio, "volumes": bench_volumes}
    for name, run in sorted(parts.items(), key=lambda item: item[0] != "volumes"):  # the quickest first
        if not args.report and (not args.only or name in args.only):
            part_rows: list = []
            part_lines: list = []
            run(part_rows, part_lines)
            saved[name] = {"rows": part_rows, "lines": part_lines, "machine": machine()}
            store.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    import inpainting_digits

    digit_rows = saved.get("digits", {}).get("rows", [])
    rows = [row for name in parts if name != "digits" and name in saved for row in saved[name]["rows"]]
    lines = [line for name in parts if name in saved for line in saved[name]["lines"]]
    from diffkit.inpaint import DEFAULT_RESAMPLE

    resample, jump, below = DEFAULT_RESAMPLE[SAMPLER]
    out = [
        "# Inpainting and continuation on real data",
        "",
        f"`python benchmarks/inpainting.py` — {machine()}.",
        "",
        f"No model was trained with masks. Unless a row says otherwise: sampler {SAMPLER}, {STEPS} steps, with "
        f"`sample(..., known=, mask=)`; its inpainting defaults: resample {resample}, jump length {jump}, resampling "
        f"where σ_t/α_t ≤ {below} (those loops with DDPM's ancestral steps). *Calls* are network calls per sample.",
        "",
        "## Digits: the bottom half from the top half",
        "",
        *table(["task", "setting", "calls", "named as the original's class", "confident"], digit_rows,
               align="llrll"),
        "",
        *inpainting_digits.summary(digit_rows),
        "",
        "## Audio and volumes",
        "",
        *table(["task", "setting", "calls", "result"], rows, align="llrl"),
        "",
        *targets(rows),
        "",
        "## Setup",
        "",
        *lines,
        "",
        f"Runtime of the last run ({'report only' if args.report else ', '.join(args.only or parts)}): "
        f"{elapsed(started)}.",
    ]
    write_results("inpainting.md", out)


if __name__ == "__main__":
    main()
