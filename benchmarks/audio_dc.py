"""Audio DC offset: where the per-clip mean of generated clips comes from, and what removing it does.

Run: python benchmarks/audio_dc.py   (one thread; about 10 CPU-minutes with the models cached)
Needs the tones model of benchmarks/audio_quality.py (runs/bench-tones, trained by that script when missing)
and, for a second model, the inpainting benchmark's tones model (runs/bench-inpaint-tones-ema995; skipped
when absent). Writes benchmarks/results/audio_dc.md.

Parts, each on the same starting noise where it compares settings:
1. the data path: real clips against what diffkit's ``audio_folder`` loader feeds the model (resampled,
   cropped, padded);
2. the denoiser on noised real clips: the DC of its x̂0, and its *DC gain* — how much of a constant added to
   x_t comes out in x̂0 — against √ᾱ (a network blind to the DC) and the Bayes-optimal gain;
3. the DC of x̂0 along a sampling trajectory;
4. samplers, step counts, guidance and thresholding;
5. a second model (ε-prediction, 1,024 samples);
6. remedies on the example's own setting (the clips of audio_quality.md's headline row), and the CLI's WAVs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

import audio_quality as aq
from common import ROOT, add_threads_option, elapsed, machine, set_threads, table, write_results
import diffkit
from diffkit import extract
from diffkit.data import DEFAULT_DC_OFFSET, apply_dc_offset, create_dataset, save_wav
from diffkit.objectives import eps_from_x0

SECOND_RUN = ROOT / "runs" / "bench-inpaint-tones-ema995"
HALF_NORMAL_MEDIAN = 0.6745  # median of |N(0, 1)|
PROBE_T = [999, 900, 800, 670, 510, 355, 233, 150, 60, 24, 4]
DC_STEP = 0.01  # the constant added to x_t to measure the DC gain
SWEEP_PER_CLASS = 16  # clips per class in parts 3 and 4
HIGHPASS_HZ = (5.0, 20.0)  # cut-offs of the DC-blocking high-pass tried instead


def example_setting() -> tuple[str, int, float]:
    """(sampler, network calls, guidance) of examples/audio_wav.toml's [sample]: what `diffkit sample` uses on
    its run, and audio_quality.md's headline row."""
    s = aq.example_sample()
    return s.sampler, s.steps, float(s.guidance_scale)


SAMPLER, CALLS, GUIDANCE = example_setting()
HEADLINE = f"{SAMPLER}, {CALLS} calls, guidance {GUIDANCE:g}"


def cpu_minutes() -> float:
    return time.process_time() / 60


def dc(x: torch.Tensor) -> np.ndarray:
    """Per clip: the mean over time of the mono mix."""
    return x.detach().double().cpu().mean(1).mean(-1).numpy()


def med_abs(v: np.ndarray) -> float:
    return float(np.median(np.abs(v)))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _hann_power(x: torch.Tensor, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, per-clip power spectrum) of the mono mix, mean removed, Hann window."""
    x = x.detach().double().cpu().mean(1).numpy()
    x = x - x.mean(-1, keepdims=True)
    window = np.hanning(x.shape[-1])
    power = np.abs(np.fft.rfft(x * window, axis=-1)) ** 2 / (window**2).sum()  # Σ over bins ≈ L·mean power
    return np.fft.rfftfreq(x.shape[-1], 1.0 / rate), power


def low_band(x: torch.Tensor, rate: int, low: tuple[float, float] = (2.0, 20.0),
             floor: tuple[float, float] = (2000.0, 3900.0)) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the RMS of what lies between ``low`` Hz (the DC bin left out), and the dB of its power per FFT
    bin over that in ``floor`` Hz, where no tone of the set lies: 0 dB when the lowest frequencies hold only the
    clip's broadband noise floor, more for a slow drift that removing the mean would leave."""
    hz, power = _hann_power(x, rate)
    band = (hz >= low[0]) & (hz <= low[1])
    rms = np.sqrt(2 * power[:, band].sum(-1) / x.shape[-1])
    ratio = power[:, band].mean(-1) / power[:, (hz >= floor[0]) & (hz <= floor[1])].mean(-1)
    return rms, 10 * np.log10(ratio)


# --- 1. the data path ------------------------------------------------------------------------------


def data_rows() -> list[list[str]]:
    torch.manual_seed(0)
    real_x, _ = aq.real_clips()
    rows = [("real clips (TonesDataset at 8 kHz, n=256)", real_x)]
    for name, options in [
        ("audio_folder: 16 kHz files resampled to 8 kHz (the example)", dict(sample_rate=8000, length=4096)),
        ("audio_folder: same files at 16 kHz, random 4,096-sample crops", dict(sample_rate=16000, length=4096)),
        ("audio_folder: 8 kHz, length 8,192 (each clip padded with 4,096 samples of silence)",
         dict(sample_rate=8000, length=8192)),
    ]:
        folder = create_dataset("audio_folder", root=str(aq.DATA), channels=1, labels=True, **options)
        rows.append((name, torch.stack([folder[i][0] for i in range(len(folder))])))
    return [[name, len(x), f"{med_abs(dc(x)):.5f}", f"{np.quantile(np.abs(dc(x)), 0.99):.5f}"] for name, x in rows]


# --- 2. the denoiser --------------------------------------------------------------------------------


def denoiser_rows(d, x0: torch.Tensor, y: torch.Tensor) -> tuple[list[list[str]], dict[int, dict[str, float]]]:
    """x̂0 on real clips noised at t (threshold off, so the network's own prediction is seen)."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    noise_dc = dc(noise)
    length = x0.shape[-1]
    var_m = float(np.mean(dc(x0) ** 2))  # E[m0²] of the data's per-clip mean
    rows, found = [], {}
    saved, d.threshold = d.threshold, "none"
    try:
        with torch.no_grad():
            for t in PROBE_T:
                tt = torch.full((len(x0),), t)
                x_t = d.perturb_x(x0, tt, noise)
                a, s = float(d.sqrt_alphas_cumprod[t]), float(d.sqrt_one_minus_alphas_cumprod[t])
                _, h1 = d.predict(x_t, tt, y, 1.0)
                _, h1c = d.predict(x_t + DC_STEP, tt, y, 1.0)
                _, h3 = d.predict(x_t, tt, y, GUIDANCE)
                gain = float(np.median((dc(h1c) - dc(h1)) / DC_STEP))
                # Posterior mean of m0 given mean(x_t) = a·m0 + s·m_ε, m_ε ~ N(0, 1/L): a·E[m0²]/(a²·E[m0²] + s²/L).
                ideal = a * var_m / (a * a * var_m + s * s / length)
                err1, err3 = dc(h1) - dc(x0), dc(h3) - dc(x0)
                found[t] = {"a": a, "gain": gain, "ideal": ideal, "err1": med_abs(err1), "err3": med_abs(err3)}
                rows.append([t, f"{a:.3f}", f"{gain:+.3f}", f"{ideal:.3f}", f"{med_abs(err1):.4f}",
                             f"{corr(err1, noise_dc):+.2f}", f"{med_abs(err3):.4f}"])
    finally:
        d.threshold = saved
    return rows, found


# --- sampling with the engine's own sampler functions ---------------------------------------------


def run_sampler(d, y: Optional[torch.Tensor], sampler: str, steps: int, guidance: float, seed: int, n: int,
                threshold: Optional[str] = None, on_x0: Optional[Callable] = None,
                zero_mean_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, clips) as ``d.sample`` makes them (checked once in main), with a look at every x̂0 (``on_x0``)
    and, for the engine-level alternative, x̂0 made zero-mean over time at every step."""
    saved = d.threshold
    d.threshold = saved if threshold is None else threshold
    try:
        fn, timesteps, options = d.check_sample_args(n, sampler=sampler, steps=steps, y=y, guidance_scale=guidance)
        generator = torch.Generator().manual_seed(seed)
        x_T = torch.randn((n, *d.input_shape), generator=generator)

        def denoise(x_t: torch.Tensor, t: torch.Tensor):
            eps, x0 = d.predict(x_t, t, y, guidance)
            if zero_mean_x0:
                x0 = x0 - x0.mean(-1, keepdim=True)
                a = extract(d.sqrt_alphas_cumprod, t, x_t.shape).to(x_t.dtype)
                s = extract(d.sqrt_one_minus_alphas_cumprod, t, x_t.shape).to(x_t.dtype)
                eps = eps_from_x0(x_t, x0, a, s)
            if on_x0 is not None:
                on_x0(int(t[0]), x0)
            return eps, x0

        with torch.no_grad():
            x = fn(denoise, x_T.clone(), d.alphas_cumprod, timesteps, generator=generator, **options)
        return x_T, (x if d.threshold == "none" else x.clamp(-1.0, 1.0))
    finally:
        d.threshold = saved


def trajectory_rows(d, y: torch.Tensor) -> tuple[list[list[str]], list[tuple[int, float]]]:
    trace: list[tuple[int, np.ndarray]] = []
    x_T, x = run_sampler(d, y, SAMPLER, CALLS, GUIDANCE, aq.SEED, len(y), on_x0=lambda t, x0: trace.append((t, dc(x0))))
    start = dc(x_T)
    rows = [[i + 1, t, f"{float(d.sqrt_alphas_cumprod[t]):.3f}", f"{med_abs(v):.4f}", f"{corr(v, start):+.2f}"]
            for i, (t, v) in enumerate(trace)]
    rows.append(["clip", "–", "–", f"{med_abs(dc(x)):.4f}", f"{corr(dc(x), start):+.2f}"])
    return rows, [(t, med_abs(v)) for t, v in trace]


# (sampler, network calls, guidance, threshold)
# The example's own setting first, then the others at its guidance; duplicates dropped.
SAMPLER_SETTINGS = list(dict.fromkeys([
    (SAMPLER, CALLS, 1.0, "clip"),
    (SAMPLER, CALLS, GUIDANCE, "clip"),
    (SAMPLER, CALLS, GUIDANCE, "none"),
    ("dpm-solver++", 20, 1.0, "clip"),
    ("dpm-solver++", 20, GUIDANCE, "clip"),
    ("dpm-solver++", 20, 3.0, "clip"),
    ("dpm-solver++", 10, GUIDANCE, "clip"),
    ("dpm-solver++", 50, GUIDANCE, "clip"),
    ("unipc", 20, GUIDANCE, "clip"),
    ("ddim", 20, GUIDANCE, "clip"),
    ("ddpm", 100, 1.0, "clip"),
    ("ddpm", 100, GUIDANCE, "clip"),
]))


def pitch(x: torch.Tensor, classes: np.ndarray) -> float:
    return aq.match_rates(aq.fft_classes(x)["pred"], classes)[1]


def sampler_rows(d, y: torch.Tensor, classes: np.ndarray) -> tuple[list[list[str]], dict[tuple, dict[str, float]]]:
    rows, found = [], {}
    for sampler, steps, guidance, threshold in SAMPLER_SETTINGS:
        c0 = cpu_minutes()
        x_T, x = run_sampler(d, y, sampler, steps, guidance, aq.SEED, len(y), threshold=threshold)
        v = dc(x)
        found[(sampler, steps, guidance, threshold)] = {"dc": med_abs(v), "corr": corr(v, dc(x_T))}
        rows.append([sampler, steps, f"{guidance:g}", threshold, f"{med_abs(v):.4f}", f"{corr(v, dc(x_T)):+.2f}",
                     f"{(x.abs() >= 0.999).float().mean():.3%}", f"{pitch(x, classes):.0%}"])
        print(f"  {sampler} {steps} calls, guidance {guidance:g}, {threshold}: |DC| {med_abs(v):.4f} "
              f"({cpu_minutes() - c0:.1f} CPU-min)", flush=True)
    return rows, found


# --- 5. a second model ------------------------------------------------------------------------------


def second_model() -> Optional[dict[str, Any]]:
    if not (SECOND_RUN / "config.toml").is_file():
        return None
    run = diffkit.open_run(SECOND_RUN)
    d = run.diffusion(ema=True, device="cpu").eval()
    n = 128
    conditional = d.conditioner is not None
    x_T, x = run_sampler(d, torch.arange(n) % 2 if conditional else None, "dpm-solver++", 20, 1.0, aq.SEED, n)
    real = create_dataset("tones", num_examples=64, sample_rate=run.info.sample_rate, length=d.input_shape[-1],
                          num_classes=2, seed=12345)
    x0 = torch.stack([real[i][0] for i in range(len(real))])
    y = torch.tensor([real[i][1] for i in range(len(real))]) if conditional else None
    gains = {}
    saved, d.threshold = d.threshold, "none"
    try:
        with torch.no_grad():
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
            for t in (670, 355, 150):
                tt = torch.full((len(x0),), t)
                x_t = d.perturb_x(x0, tt, noise)
                _, h = d.predict(x_t, tt, y)
                _, hc = d.predict(x_t + DC_STEP, tt, y)
                gains[t] = (float(d.sqrt_alphas_cumprod[t]), float(np.median((dc(hc) - dc(h)) / DC_STEP)))
    finally:
        d.threshold = saved
    cfg = run.config
    return {"objective": cfg.diffusion.objective, "conditional": conditional, "length": d.input_shape[-1], "rate": run.info.sample_rate,
            "dc": med_abs(dc(x)), "corr": corr(dc(x), dc(x_T)), "real": med_abs(dc(x0)), "gains": gains,
            "predicted": HALF_NORMAL_MEDIAN / np.sqrt(d.input_shape[-1]), "n": n}


# --- 6. remedies ------------------------------------------------------------------------------------


def through_wav(x: torch.Tensor, folder: Path) -> torch.Tensor:
    """Clips as diffkit writes them (16-bit WAV) and as a listener's software reads them back."""
    back = []
    for i, clip in enumerate(x):
        path = save_wav(clip, folder / f"{i:04d}.wav", aq.SAMPLE_RATE)
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        back.append(torch.from_numpy(np.ascontiguousarray(data.T)))
    return torch.stack(back)


def remedy_stats(x: torch.Tensor, classes: np.ndarray, reference: Optional[torch.Tensor] = None) -> dict[str, float]:
    v = dc(x)
    low_rms, low_db = low_band(x, aq.SAMPLE_RATE)
    stats = {"n": len(x), "dc": med_abs(v), "dc99": float(np.quantile(np.abs(v), 0.99)),
             "clipped": float((x.abs() >= 0.999).float().mean()), "pitch": pitch(x, classes),
             "purity": float(np.median(aq.track_purity(x))), "low_rms": float(np.median(low_rms)),
             "low_db": float(np.median(low_db)), "change": float("nan")}
    if reference is not None:  # the clip's AC part: largest change of (x - mean) against the reference's, away from full scale
        change = (x - x.mean(-1, keepdim=True)) - (reference - reference.mean(-1, keepdim=True))
        inside = (x.abs() < 0.999) & (reference.abs() < 0.999)
        rms = reference.double().square().mean((1, 2)).sqrt()
        stats["change"] = float((change.abs() * inside).amax() / rms.median())
    return stats


def remedy_row(name: str, r: dict[str, float], real: bool = False) -> list[str]:
    return [name, r["n"], f"{r['dc']:.5f}", f"{r['dc99']:.4f}", f"{r['clipped']:.3%}", f"{r['pitch']:.1%}",
            f"{r['purity']:.3f}", f"{r['low_rms']:.4f}", "–" if real else f"{r['low_db']:+.1f}",
            "–" if np.isnan(r["change"]) else f"{r['change']:.4f}"]


def cli_clips(dc_offset: str, n: int, folder: Path) -> tuple[torch.Tensor, np.ndarray]:
    """``diffkit sample`` on the tones run, as a user calls it (the run's own [sample] setting); the WAVs read
    back, and the classes asked for."""
    out = folder / f"cli-{dc_offset}"
    command = Path(sys.executable).with_name("diffkit")  # the console script installed with this interpreter's diffkit
    subprocess.run([str(command), "sample", str(aq.RUN / "run"), "-n", str(n), "--dc-offset", dc_offset,
                    "--out", str(out), "--no-progress", "--device", "cpu"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wavs = sorted(out.glob("*.wav"))
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(sf.read(str(p), dtype="float32", always_2d=True)[0].T))
                     for p in wavs])
    # `diffkit sample` cycles the run's labels 0, 1, … (its sorted folder names); CLASSES' order is the judge's.
    to_class = {int(aq.FOLDER_LABEL[k]): k for k in range(len(aq.CLASSES))}
    return x, np.array([to_class[i % len(aq.CLASSES)] for i in range(len(wavs))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_threads_option(parser, default=1)
    parser.add_argument("--cli-clips", type=int, default=32, help="clips per `diffkit sample` call (default 32)")
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    d, facts = aq.load_or_train()
    d.eval()

    print("1. data path", flush=True)
    rows_data = data_rows()

    print("2. denoiser", flush=True)
    real_x, real_classes = aq.real_clips()
    probe = torch.cat([torch.nonzero(torch.from_numpy(real_classes) == k).flatten()[:16] for k in range(4)])
    rows_denoiser, probed = denoiser_rows(d, real_x[probe], aq.FOLDER_LABEL[torch.from_numpy(real_classes[probe])])

    # The sweep: 16 clips per class, the same starting noise for every setting.
    classes = torch.arange(len(aq.CLASSES)).repeat_interleave(SWEEP_PER_CLASS)
    y = aq.FOLDER_LABEL[classes]
    check_x = d.sample(len(y), sampler=SAMPLER, steps=CALLS, y=y, guidance_scale=GUIDANCE,
                       generator=torch.Generator().manual_seed(aq.SEED))
    same = torch.equal(check_x, run_sampler(d, y, SAMPLER, CALLS, GUIDANCE, aq.SEED, len(y))[1])
    assert same, "run_sampler no longer reproduces GaussianDiffusion.sample"

    print("3. trajectory", flush=True)
    rows_traj, trace = trajectory_rows(d, y)
    print("4. samplers", flush=True)
    rows_samplers, swept = sampler_rows(d, y, classes.numpy())
    print("5. second model", flush=True)
    second = second_model()

    print("6. remedies", flush=True)
    full_classes = torch.arange(len(aq.CLASSES)).repeat_interleave(aq.PER_CLASS)
    before = aq.generate(d, full_classes, SAMPLER, CALLS, GUIDANCE, aq.SEED)  # audio_quality.md's headline clips
    _, in_loop = run_sampler(d, aq.FOLDER_LABEL[full_classes], SAMPLER, CALLS, GUIDANCE, aq.SEED, len(full_classes),
                             zero_mean_x0=True)
    fc = full_classes.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = remedy_stats(real_x, real_classes)
        # The DC alone: the Nyquist-rate component kept either way (its own option, audio_quality.md).
        kept = remedy_stats(through_wav(apply_dc_offset(before, "keep", "keep"), tmp / "keep"), fc, before)
        removed = remedy_stats(through_wav(apply_dc_offset(before, DEFAULT_DC_OFFSET, "keep"), tmp / "remove"), fc,
                               before)
        highpass = {hz: remedy_stats(through_wav(AF.highpass_biquad(before, aq.SAMPLE_RATE, hz), tmp / f"hp{hz:g}"),
                                     fc, before) for hz in HIGHPASS_HZ}
        loop = remedy_stats(through_wav(in_loop, tmp / "in-loop"), fc)
        print("   CLI", flush=True)
        cli_keep, cli_classes = cli_clips("keep", args.cli_clips, tmp)
        cli_remove, _ = cli_clips(DEFAULT_DC_OFFSET, args.cli_clips, tmp)
        cli_kept, cli_removed = remedy_stats(cli_keep, cli_classes), remedy_stats(cli_remove, cli_classes, cli_keep)
    rows_remedy = [
        remedy_row(f"real clips (n={len(real_x)})", real, real=True),
        remedy_row("as sampled: `diffusion.sample()`, WAVs with `dc_offset = \"keep\"`", kept),
        remedy_row(f"**as diffkit writes WAVs now: `dc_offset = \"{DEFAULT_DC_OFFSET}\"` (each clip's mean "
                   "subtracted)**", removed),
        *[remedy_row(f"alternative: DC-blocking high-pass, 2nd-order {hz:g} Hz (not shipped)", r)
          for hz, r in highpass.items()],
        remedy_row("alternative in the engine: x̂0 made zero-mean at every step (not shipped; other clips)", loop),
        remedy_row(f"`diffkit sample runs/bench-tones/run -n {args.cli_clips} --dc-offset keep`", cli_kept),
        remedy_row(f"`diffkit sample runs/bench-tones/run -n {args.cli_clips}` (default)", cli_removed),
    ]

    length = d.input_shape[-1]
    predicted = HALF_NORMAL_MEDIAN / np.sqrt(length)
    g1, ddpm1 = swept[("dpm-solver++", 20, 1.0, "clip")], swept[("ddpm", 100, 1.0, "clip")]
    own1 = swept[(SAMPLER, CALLS, 1.0, "clip")]
    guided = [r["dc"] for (_, _, w, _), r in swept.items() if w == GUIDANCE]
    mid = [t for t in (670, 510, 355, 233, 150) if t in probed]
    peak_t, peak = max(trace, key=lambda item: item[1])
    peak_call = [t for t, _ in trace].index(peak_t) + 1
    hp5, hp20 = highpass[min(HIGHPASS_HZ)], highpass[max(HIGHPASS_HZ)]
    second_text = "" if second is None else (
        f" A second model, {second['objective']}-prediction on {second['length']}-sample clips, ends at "
        f"{second['dc']:.4f} against {second['predicted']:.4f} for its starting noise's mean, correlated with it at "
        f"{second['corr']:+.2f}, its DC gain {min(g for _, g in second['gains'].values()):.2f}-"
        f"{max(g for _, g in second['gains'].values()):.2f} where the optimum is about 0 (part 5): it does not "
        "remove the DC either.")
    lines = [
        "# Audio: where generated clips' DC offset comes from",
        "",
        f"`python benchmarks/audio_dc.py` — {machine()}. Model: the tones run of "
        f"`audio_quality.md` (`examples/audio_wav.toml`: unet1d `audio-p2`, v-prediction, cosine schedule, "
        f"{facts['train_steps']} steps, EMA weights), 8 kHz, {length} samples per clip.",
        "",
        f"**Diagnosis.** Not the data: the clips diffkit's `audio_folder` loader feeds the model have a median "
        f"|DC| of {rows_data[1][2]} (real clips {rows_data[0][2]}; part 1). The network does not remove the DC of its "
        f"input: a constant added to x_t comes out of x̂0 multiplied by "
        + ", ".join(f"{probed[t]['gain']:.2f}" for t in mid) + f" at t = {', '.join(map(str, mid))}, close to "
        f"√ᾱ_t (" + ", ".join(f"{probed[t]['a']:.2f}" for t in mid) + "), which is what x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂ "
        "gives when v̂ carries no DC at all; the Bayes-optimal denoiser for clips like the real ones would pass "
        f"at most {max(probed[t]['ideal'] for t in mid):.3f} there (part 2). A sampler then keeps the clip's mean "
        "as it would keep a coordinate of unit-variance data: the mean of the starting noise, N(0, 1/L) per clip, "
        f"median magnitude 0.6745/√{length} = **{predicted:.4f}**. Unguided, the ODE sampler dpm-solver++'s clips "
        f"have {g1['dc']:.4f}, correlated with their starting noise's mean at {g1['corr']:+.2f} (part 4); DDPM, "
        f"which draws fresh noise at every step, ends at {ddpm1['dc']:.4f}, uncorrelated with x_T "
        f"({ddpm1['corr']:+.2f}), and the example's {SAMPLER} at {own1['dc']:.4f} ({own1['corr']:+.2f}). Guidance "
        f"adds DC of its own: on noised real clips x̂0's DC error at guidance {GUIDANCE:g} is "
        f"{probed[670]['err3']:.4f} at t = 670 against {probed[670]['err1']:.4f} unguided (part 2), and along a "
        f"trajectory x̂0's DC peaks at {peak:.4f} at call {peak_call} of {CALLS} (t = {peak_t}), then passes to the "
        f"clip ({trace[-1][1]:.4f}; part 3). Samplers, step counts (10-50) and the x̂0 threshold move it within "
        f"{min(guided):.4f}-{max(guided):.4f} at guidance {GUIDANCE:g} (part 4).{second_text} So the offset is the "
        "network's: the clip's mean is one coordinate of L in the loss, and a short run does not learn to "
        "remove it.",
        "",
        "**Remedy** (part 6): diffkit writes generated WAVs with each clip's mean subtracted "
        f"(`[sample] dc_offset = \"{DEFAULT_DC_OFFSET}\"`, the default; `dc_offset = \"keep\"` or `diffkit sample "
        "--dc-offset keep` writes the clip as sampled; `GaussianDiffusion.sample()` always returns it as sampled). "
        f"On the clips of `audio_quality.md`'s headline row the median |DC| goes from {kept['dc']:.4f} to "
        f"{removed['dc']:.5f} (real {real['dc']:.5f}); pitch match {kept['pitch']:.1%} → {removed['pitch']:.1%}, "
        f"track purity {kept['purity']:.3f} → {removed['purity']:.3f}, clipped samples {kept['clipped']:.3%} → "
        f"{removed['clipped']:.3%} (real {real['clipped']:.3%}; a clip whose "
        "shifted samples would pass full scale is scaled down to a peak of 1 instead). Away from full scale nothing but the mean changes (largest change "
        f"{removed['change']:.4f} of the median RMS: 16-bit rounding). The generated clips also hold a slow "
        f"drift at 2-20 Hz (median RMS {kept['low_rms']:.4f}, real {real['low_rms']:.4f}; {kept['low_db']:+.1f} dB "
        "per bin over their broadband floor), which removing the mean leaves; a DC-blocking high-pass at "
        f"{min(HIGHPASS_HZ):g} Hz leaves it too ({hp5['low_rms']:.4f}) and reshapes the start of each clip "
        f"(largest change {hp5['change']:.2f} of the median RMS), one at {max(HIGHPASS_HZ):g} Hz takes it to "
        f"{hp20['low_rms']:.4f} with a larger change ({hp20['change']:.2f}) and would cut real content below 20 Hz "
        "in other audio. Making x̂0 zero-mean inside the sampler at every step (an engine change, not made) gives "
        f"{loop['dc']:.5f}, pitch {loop['pitch']:.1%} and purity {loop['purity']:.3f} on the same starting noise: "
        "no better than removing the mean afterwards.",
        "",
        "## 1. The data path: DC of the clips the model is trained on",
        "",
    ]
    lines += table(["clips", "n", "median abs DC", "99th percentile abs DC"], rows_data)
    lines += [
        "", "## 2. The denoiser on noised real clips (threshold off; 64 clips, 16 per class)", "",
        f"DC gain: the change of x̂0's mean per unit of a constant {DC_STEP:g} added to x_t (guidance 1). A network "
        "blind to the DC has gain √ᾱ_t; the Bayes-optimal gain for data whose clip mean has the real clips' "
        "variance E[m²] is √ᾱ·E[m²]/(ᾱ·E[m²] + (1−ᾱ)/L). *x̂0 DC error*: median |mean(x̂0) − mean(x0)|; its "
        "correlation with the noise's mean shows where it comes from.",
        "",
    ]
    lines += table(["t", "√ᾱ_t", "DC gain (measured)", "DC gain (optimal)", "x̂0 DC error, guidance 1",
                    "corr. with noise's DC", f"x̂0 DC error, guidance {GUIDANCE:g}"], rows_denoiser)
    lines += [
        "", f"## 3. x̂0's DC along a trajectory ({HEADLINE}, {len(y)} clips)", "",
    ]
    lines += table(["call", "t", "√ᾱ_t", "median abs DC of x̂0", "corr. with x_T's DC"], rows_traj)
    lines += [
        "", f"## 4. Samplers, steps, guidance, threshold ({len(y)} clips, {SWEEP_PER_CLASS} per class, the same "
        "starting noise)", "",
        f"A sampler that keeps the starting noise's mean gives a median abs DC of {predicted:.4f}; real clips "
        f"{real['dc']:.5f}. Pitch: the FFT judge of `audio_quality.md` ({SWEEP_PER_CLASS} clips per class, so steps of {1 / len(y):.1%}).",
        "",
    ]
    lines += table(["sampler", "calls", "guidance", "threshold", "median abs DC", "corr. with x_T's DC", "clipped",
                    "pitch match"], rows_samplers)
    if second is not None:
        gains = ", ".join(f"t={t}: {g:+.2f} (√ᾱ {a:.2f})" for t, (a, g) in second["gains"].items())
        lines += [
            "", "## 5. A second model", "",
            f"`runs/bench-inpaint-tones-ema995` (the inpainting benchmark's tones model: {second['objective']}-"
            f"prediction, {second['rate']} Hz, {second['length']} samples, "
            f"{'class-conditional' if second['conditional'] else 'unconditional'}), dpm-solver++ 20 calls, "
            f"no guidance, {second['n']} clips: median abs DC **{second['dc']:.4f}** against 0.6745/√{second['length']}"
            f" = {second['predicted']:.4f} predicted for a DC-blind network (real clips {second['real']:.4f}); "
            f"correlation with the starting noise's mean {second['corr']:+.2f}. DC gain {gains}.",
        ]
    lines += [
        "", f"## 6. Remedies ({HEADLINE}: the example's own setting, the clips of `audio_quality.md`'s headline "
        "row)", "",
        "Every generated row is written as 16-bit WAVs and read back (the CLI's rows by `diffkit sample` itself). "
        "*RMS at 2-20 Hz*: median over clips of the RMS of what lies between 2 and 20 Hz, the clip's mean left out "
        "(Hann window). *2-20 Hz over floor*: median of the power per FFT bin there over that between 2 and 3.9 kHz, "
        "where no tone of the set lies: about 0 dB when the lowest frequencies hold only the clip's broadband noise "
        "floor, more for a slow drift that removing the mean leaves. *Largest AC change*: the largest change of any "
        "sample of (clip − its mean) against the clip as sampled, samples at full scale left out, "
        "relative to the median clip RMS.",
        "",
    ]
    lines += table(["clips", "n", "median abs DC", "99th pct abs DC", "clipped", "pitch match", "median track purity",
                    "RMS at 2-20 Hz", "2-20 Hz over floor (dB)", "largest AC change"], rows_remedy)
    lines += ["", f"Script runtime: {elapsed(started)}, {cpu_minutes():.1f} CPU-minutes (one thread; the CLI calls "
              "run in child processes, not counted)."]
    write_results("audio_dc.md", lines)


if __name__ == "__main__":
    main()
