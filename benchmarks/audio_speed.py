"""Audio training speed: the recommended unet1d preset against the seed's AudioDDPM network, one process.

Run: python benchmarks/audio_speed.py [--repeats 8] [--seed-steps 150]
Writes benchmarks/results/audio_speed.md.

Speed: one training step (forward, backward, AdamW) at batch 16 on 4,096-sample clips, the two networks
taking turns (``common.interleaved``), so the ratio holds on a loaded machine; user and system CPU time
of each network's steps are counted apart (a share of system time is allocation thrash).

Quality at equal CPU time: the seed's network trains ``--seed-steps`` steps on the tones demo folder, the
recommended preset the steps that the measured speed-up buys in the same CPU time, both with
examples/audio_wav.toml's recipe through diffkit's Trainer (but with data_std 1, the units the held-out
v-loss is taken in), one after the other; then the held-out v-loss on a
fixed grid of noise levels and the FFT judge of benchmarks/audio_quality.py on 64 clips each (dpm-solver++,
20 calls, guidance 2).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import audio_quality as aq
from common import add_threads_option, elapsed, interleaved, machine, paired_ratio, median, set_threads, table, write_results
from diffkit import GaussianDiffusion
from diffkit.registry import create_backbone, create_conditioner
from diffkit.schedules import make_beta_schedule

# The seed's AudioDDPM network as examples/audio_wav.toml first had it, and the recommended preset.
RECOMMENDED = "audio-p2"
NETWORKS = {
    "seed (channels 32/64/128/256, factors 4)": dict(channels=[32, 64, 128, 256], attention_levels=[2],
                                                     num_res_blocks=1, downsample_factors=4),
    f"{RECOMMENDED} preset": dict(preset=RECOMMENDED),
}
# The examples' networks (timed only): the preset with adaptive GroupNorm and the position channel, and with
# adaptive GroupNorm, attention at 512 positions and mean_skip.
EXAMPLE_NETWORKS = {
    f"{RECOMMENDED} + scale_shift_norm + coordinates (examples/audio_wav.toml)":
        dict(preset=RECOMMENDED, scale_shift_norm=True, coordinates=True),
    f"{RECOMMENDED} + scale_shift_norm + attention at 512 positions + mean_skip (examples/speech_digits.toml until it moved to unet-mdct)":
        dict(preset=RECOMMENDED, scale_shift_norm=True, attention_levels=[1, 2, 4], mean_skip=True),
}
PRESET_NOTE = ("`audio-p2` folds 2 samples into channels (`patch_size=2`), so its finest level has 2,048 positions of "
               "only 16 channels, then 512 × 32, 128 × 64 (with attention), 32 × 128 and 8 × 256 (with attention); the "
               "seed's finest level runs 32-channel convolutions over all 4,096 samples, which is where its time goes "
               "(torch.profiler: ~80% in convolutions, two thirds of it in their backward pass).")
BATCH, LENGTH = 16, 4096


def build(options: dict, conditional: bool = True) -> GaussianDiffusion:
    cond = create_conditioner("labels", num_classes=4, dim=64, dropout=0.1) if conditional else None
    net = create_backbone("unet1d", in_channels=1, **options, **({"cond_dim": 64} if conditional else {}))
    return GaussianDiffusion(net, (1, LENGTH), make_beta_schedule("cosine", 1000), objective="v", conditioner=cond)


def usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def speed(repeats: int) -> tuple[dict, dict, dict]:
    torch.manual_seed(0)
    x = torch.randn(BATCH, 1, LENGTH).clamp(-1, 1)
    y = torch.randint(0, 4, (BATCH,))
    runners, cpu, params = {}, {}, {}
    for name, options in {**NETWORKS, **EXAMPLE_NETWORKS}.items():
        d = build(options)
        params[name] = sum(p.numel() for p in d.parameters())
        opt = torch.optim.AdamW(d.parameters(), 1e-3)
        cpu[name] = [0.0, 0.0]

        def step(d=d, opt=opt, name=name):
            u0, s0 = usage()
            loss = d(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            u1, s1 = usage()
            cpu[name][0] += u1 - u0
            cpu[name][1] += s1 - s0

        runners[name] = step
    times = interleaved(runners, repeats)
    return times, cpu, params


def train(name: str, steps: int) -> tuple[GaussianDiffusion, float]:
    """``examples/audio_wav.toml``'s recipe with network ``name``, through diffkit's own Trainer (its lr schedule,
    EMA and data pipeline), on the tones demo folder for ``steps``; the EMA model and the training CPU-seconds."""
    import diffkit

    run = aq.RUN / ("speed-" + name.split(" ")[0])
    raw = aq.train_config(run, steps)
    raw["model"]["options"] = {**NETWORKS[name], "cond_dim": 64}
    # The engine's default units: heldout_loss compares the network's output with the v target in the data's own.
    raw["diffusion"]["data_std"] = 1.0
    raw["sample"]["num"] = 1
    import shutil

    if run.exists():
        shutil.rmtree(run)
    torch.manual_seed(0)
    c0 = time.process_time()
    opened = diffkit.train(raw, progress=False)
    return opened.diffusion(ema=True, device="cpu"), time.process_time() - c0


@torch.no_grad()
def heldout_loss(d: GaussianDiffusion, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean v-MSE over t = 50, 150, …, 950, the same noise for every network."""
    g = torch.Generator().manual_seed(7)
    losses = []
    cond = d.conditioner(y)
    for t in range(50, 1000, 100):
        noise = torch.randn(x.shape, generator=g)
        a, s = d.sqrt_alphas_cumprod[t], d.sqrt_one_minus_alphas_cumprod[t]
        out = d.model(a * x + s * noise, torch.full((len(x),), t), cond=cond)
        losses.append(float((out - (a * noise - s * x)).square().mean()))
    return float(np.mean(losses))


def quality_row(name: str, steps: int) -> list[str]:
    """Train ``name`` for ``steps`` on the tones folder; its CPU time, held-out v-loss and FFT judgement."""
    aq.export_tones()
    real_x, real_y = aq.real_clips(64)
    y = torch.arange(4).repeat_interleave(16)
    print(f"training {name} for {steps} steps …", flush=True)
    d, cpu_s = train(name, steps)
    r = aq.judge(aq.generate(d, y, "dpm-solver++", 20, 2.0, aq.SEED), y.numpy())
    row = [f"{name}, {steps} steps", f"{cpu_s / 60:.1f}", f"{heldout_loss(d, real_x, torch.from_numpy(real_y)):.4f}",
           f"{r['all']:.1%}", f"{np.median(r['purity']) / np.median(aq.track_purity(real_x)):.2f}×",
           f"{np.median(np.abs(r['dc'])):.4f}", f"{r['clipped'].mean():.3%}"]
    print("  " + " | ".join(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--seed-steps", type=int, default=150,
                        help="training steps of the seed's network for the quality part (0 skips it); the "
                             "recommended preset gets the steps that fit the same CPU time at the measured speed-up")
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    times, cpu, params = speed(args.repeats)
    seed, fast = list(NETWORKS)
    ratio = paired_ratio(times, seed, fast)
    rows = []
    for n in [*NETWORKS, *EXAMPLE_NETWORKS]:
        user, system = cpu[n]
        rows.append([n, f"{params[n] / 1e6:.2f}M", f"{median(times[n]):.2f}", f"{system / (user + system):.1%}",
                     "1.00×" if n == seed else f"**{ratio:.2f}×**" if n == fast else
                     f"{paired_ratio(times, seed, n):.2f}× ({paired_ratio(times, fast, n):.2f}× the preset's speed)"])
    lines = [
        f"# Audio: training-step speed of the `{RECOMMENDED}` unet1d preset",
        "",
        f"`python benchmarks/audio_speed.py --repeats {args.repeats} --seed-steps {args.seed_steps}` — {machine()}.",
        "",
        f"One training step (forward, backward, AdamW; v-prediction, labels) at batch {BATCH} on {LENGTH}-sample clips, "
        f"{args.repeats} interleaved rounds (+1 warm-up): the `{RECOMMENDED}` preset is **{ratio:.2f}× faster** than "
        "the seed's AudioDDPM network with the factors of 4 of the first `examples/audio_wav.toml` (median of "
        "per-round ratios). The examples' networks, timed in the same rounds, against the seed's and (in "
        "brackets) the preset's.",
        "",
        *table(["network", "parameters", "median s/step", "system share of CPU time", "speed-up"], rows),
        "",
        PRESET_NOTE,
    ]
    if args.seed_steps:
        fast_steps = round(args.seed_steps * ratio)
        qrows = [quality_row(seed, args.seed_steps), quality_row(fast, fast_steps)]
        lines += [
            "",
            f"## Quality at equal CPU time ({args.seed_steps} steps of the seed's network, {fast_steps} of "
            f"`{RECOMMENDED}`)",
            "",
            "Both trained in this process, one after the other, with `examples/audio_wav.toml`'s recipe through "
            "diffkit's Trainer (its lr warm-up and cosine decay over each run's own steps, EMA with warm-up; "
            "`data_std` 1, the units of the held-out v-loss, where the example has 0.3) on the "
            f"tones demo folder; the recommended preset gets {ratio:.2f}× the steps, the measured speed-up.",
            "",
            *table(["network", "train CPU-min", "held-out v-loss", "FFT class match", "track purity / real",
                    "median abs DC", "clipped"], qrows),
            "",
            "Held-out v-loss: mean over t = 50, 150, …, 950 of the v-prediction MSE on 64 real clips the networks "
            "never saw (same noise for both). FFT judge and track purity as in `audio_quality.md` (16 clips per "
            "class, dpm-solver++, 20 calls, guidance 2).",
        ]
    lines += ["", f"Script runtime: {elapsed(started)}."]
    write_results("audio_speed.md", lines)


if __name__ == "__main__":
    main()
