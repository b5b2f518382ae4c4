"""Spoken digits: a class-conditional AudioDDPM against audio-diffusion-pytorch, judged by a classifier.

Benchmark-only dependencies (see benchmarks/requirements.txt):
    apt-get install -y espeak-ng
    pip install audio-diffusion-pytorch==0.1.3

Run: python benchmarks/speech_digits.py [--steps N] [--peer-cpu-minutes 30]
     python benchmarks/speech_digits.py --export data/speech_digits   # the WAV folder examples/speech_digits.toml trains on

The data ("zero" … "nine", an SC09-like task no one here recorded): espeak-ng speaks each digit in one of
7 English accents × 40 voice variants, at a random pitch (-p 20-80), speed (-s 140-240 words per minute)
and amplitude (-a 60-140); 22.05 kHz output resampled to 8 kHz, the leading silence trimmed and the clip
cut (or padded) to 4096 samples (0.51 s). Training clips use 32 variants; the judge's test clips and the
Fréchet reference come from 8 other variants (held-out voices).

Both models train on the same 1,440 clips with the same batch, AdamW learning rate, warm-up, lr decay and
EMA (all read from ``examples/speech_digits.toml``'s [data] and [train]), one thread each (they may run at the
same time, as two processes: ``--only diffkit`` / ``--only peer``). diffkit trains through
``examples/speech_digits.toml`` (the user's path: ``Trainer`` on the exported WAV folder) for the config's
``train.steps`` (sized by measured seconds per step to fit 30 CPU-minutes on one thread; ``--steps`` overrides).
audio-diffusion-pytorch (``UNetV0`` + ``VDiffusion`` + ``VSampler``, labels as a one-token embedding with
its classifier-free guidance) trains in a plain loop here for ``--peer-cpu-minutes`` (its cosine decay runs
over that CPU budget, as it cannot know its step count ahead) with diffkit's ``EMA`` class, and keeps a
checkpoint every 100 steps with the CPU time spent so far, so that it is judged both at diffkit's number of
steps and at diffkit's CPU time.

Judged (100 clips per model, 10 per digit, 20 sampling steps, the example's guidance): share recognised by a small CNN
on log-mel spectrograms trained on real training clips only; Fréchet distance of per-clip log-mel
statistics (mean and standard deviation of each of 40 mel bands) against held-out real clips, divided by
the real-versus-real floor (training clips against held-out ones, same counts); noise floor (RMS of the
quietest tenth of 32 ms frames, dBFS, median over clips); level (RMS dBFS); DC offset; share of samples
with |x| ≥ 0.999. Writes benchmarks/results/speech_digits.md, speech_spectrograms.png and a few WAVs.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

from common import RESULTS, ROOT, add_threads_option, elapsed, frechet_distance, machine, set_threads, table, write_results

RUN = ROOT / "runs" / "bench-speech"
DATA = RUN / "digits.npz"
CONFIG = ROOT / "examples" / "speech_digits.toml"
SAMPLE_RATE, LENGTH = 8000, 4096
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3",
            "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
            "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "iven",
            # held out: the judge's test clips and the Fréchet reference
            "john", "linda", "max", "michel", "norbert", "paul", "steph", "victor"]
HELD_OUT = 8
TRAIN_PER_DIGIT, TEST_PER_DIGIT = 144, 40
PER_DIGIT = 10  # generated clips per digit and model
CALLS = 20


def shared_settings() -> dict[str, Any]:
    """What both models share, from the example config: batch, AdamW lr, warm-up, lr decay, EMA."""
    from diffkit.config import load_config

    c = load_config(CONFIG)
    t = c.train
    return {"batch": c.data.batch_size, "lr": t.lr, "weight_decay": t.weight_decay, "warmup": t.warmup_steps,
            "lr_decay": t.lr_decay, "ema_decay": t.ema_decay, "ema_start": t.ema_start, "ema_warmup": t.ema_warmup,
            "steps": t.steps, "backbone": c.model.backbone, "model_options": dict(c.model.options),
            "schedule_shift": c.diffusion.schedule_shift,
            "data_std": c.diffusion.data_std}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- data ----------------------------------------------------------------------------------------


def speak(word: str, voice: str, pitch: int, speed: int, amplitude: int) -> np.ndarray:
    """One clip: espeak-ng's 22.05 kHz output at 8 kHz, leading silence trimmed, LENGTH samples."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude),
                          "--stdout", word], check=True, capture_output=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    x = torchaudio.functional.resample(torch.from_numpy(x), rate, SAMPLE_RATE).numpy()
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    start = max(int(loud[0]) - 80, 0) if len(loud) else 0  # keep 10 ms before the onset
    x = x[start:start + LENGTH]
    return np.pad(x, (0, LENGTH - len(x))).clip(-1, 1)


def make_split(variants: list[str], per_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    xs, ys = [], []
    for y, word in enumerate(DIGITS):
        for i in range(per_digit):
            voice = f"{ACCENTS[(i + y + i // len(variants)) % len(ACCENTS)]}+{variants[i % len(variants)]}"
            xs.append(speak(word, voice, rng.randint(20, 80), rng.randint(140, 240), rng.randint(60, 140)))
            ys.append(y)
    return np.stack(xs)[:, None].astype(np.float32), np.array(ys)


def load_data() -> dict[str, np.ndarray]:
    if not DATA.is_file():
        t0 = time.perf_counter()
        DATA.parent.mkdir(parents=True, exist_ok=True)
        train_x, train_y = make_split(VARIANTS[:-HELD_OUT], TRAIN_PER_DIGIT, 0)
        test_x, test_y = make_split(VARIANTS[-HELD_OUT:], TEST_PER_DIGIT, 1)
        np.savez_compressed(DATA, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
        print(f"synthesised {len(train_x)} + {len(test_x)} clips with espeak-ng in {elapsed(t0)}", flush=True)
    return dict(np.load(DATA))


def export(folder: Path) -> None:
    """The training clips as WAV files, one sub-folder per digit (for ``audio_folder`` with labels)."""
    from diffkit.data import save_wav

    data = load_data()
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"export: '{folder}' is not empty; choose a new folder")
    for i, (x, y) in enumerate(zip(data["train_x"], data["train_y"])):
        save_wav(torch.from_numpy(x), folder / f"{int(y)}_{DIGITS[y]}" / f"{i:05d}.wav", SAMPLE_RATE)
    print(f"wrote {len(data['train_x'])} WAV files to {folder}")


# --- features and the judge ----------------------------------------------------------------------

_MEL = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=128, n_mels=40,
                                            f_min=40.0, f_max=SAMPLE_RATE / 2)


def log_mel(x: torch.Tensor) -> torch.Tensor:
    """(B, 40 mels, 33 frames), log10 power with a floor at -8 (−80 dB)."""
    return torch.log10(_MEL(x.float().reshape(len(x), -1)).clamp_min(1e-8))


def mel_stats(x: torch.Tensor) -> np.ndarray:
    m = log_mel(x)
    return torch.cat([m.mean(-1), m.std(-1)], 1).numpy()


class Judge(nn.Module):
    """A small CNN over log-mel spectrograms."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in ((1, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = log_mel(x)
        m = (m - m.mean((1, 2), keepdim=True)) / 2.0  # loudness-invariant
        return self.net(m[:, None])


def train_judge(x: np.ndarray, y: np.ndarray, epochs: int = 25, seed: int = 0) -> Judge:
    torch.manual_seed(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), 2e-3, weight_decay=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        judge.train()
        for idx in torch.randperm(len(xt)).split(64):
            xb = xt[idx]
            shift = int(torch.randint(-400, 401, ()))  # ±50 ms: onsets of generated clips may wander
            xb = torch.roll(xb, shift, -1) * torch.empty(len(xb), 1, 1).uniform_(0.5, 2.0)
            loss = F.cross_entropy(judge(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return judge.eval()


def cached_judge(data: dict[str, np.ndarray]) -> Judge:
    """The judge trained once on the real training clips, kept in runs/bench-speech/judge.pt."""
    path = RUN / "judge.pt"
    if not path.is_file():
        torch.save(train_judge(data["train_x"], data["train_y"]).state_dict(), path)
    judge = Judge()
    judge.load_state_dict(torch.load(path))
    return judge.eval()


@torch.no_grad()
def recognised(judge: Judge, x: torch.Tensor, y: np.ndarray) -> float:
    pred = torch.cat([judge(b).argmax(-1) for b in x.split(256)]).numpy()
    return float((pred == y).mean())


def audio_stats(x: torch.Tensor) -> dict[str, float]:
    """Median over clips: noise floor (quietest tenth of 32 ms frames, dBFS), level (dBFS), |DC|; share clipped."""
    x = x.float().reshape(len(x), -1)
    frames = x.unfold(-1, 256, 128)
    rms = frames.square().mean(-1).sqrt()
    k = max(1, rms.shape[1] // 10)
    quiet = rms.sort(-1).values[:, :k].square().mean(-1).sqrt()
    db = lambda v: 20 * torch.log10(v.clamp_min(1e-5))  # noqa: E731 (floor: -100 dBFS)
    return {"floor": float(db(quiet).median()), "level": float(db(x.square().mean(-1).sqrt()).median()),
            "dc": float(x.mean(-1).abs().median()), "clipped": float((x.abs() >= 0.999).float().mean())}


# --- diffkit ------------------------------------------------------------------------------------


def diffkit_overrides(steps: int, folder: Path) -> list[str]:
    return [f"run.dir={RUN / 'diffkit'}", f"data.options.root={folder}", f"train.steps={steps}",
            "train.checkpoint_every=0", "train.log_every=50", f"sample.steps={CALLS}",
            f"sample.guidance_scale={guidance()}"]


def train_diffkit(steps: int) -> None:
    from diffkit.config import load_config
    from diffkit.trainer import Trainer

    folder = RUN / "wav"
    if not folder.is_dir():
        export(folder)
    if (RUN / "diffkit").exists():
        shutil.rmtree(RUN / "diffkit")
    config = load_config(CONFIG, diffkit_overrides(steps, folder))
    print(f"diffkit: training for {steps} steps …", flush=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    Trainer(config, progress=False).run()
    facts = {"steps": steps, "cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - t0, "machine": machine()}
    (RUN / "diffkit" / "bench.json").write_text(json.dumps(facts, indent=2) + "\n")


def load_diffkit():
    import diffkit

    run = diffkit.open_run(RUN / "diffkit")
    diffusion = run.diffusion(ema=True, device="cpu")
    facts = json.loads((run.path / "bench.json").read_text())
    facts["parameters"] = sum(p.numel() for p in diffusion.parameters())
    return diffusion, facts


def example_sample():
    """The example's [sample] section (what its users get), as diffkit reads the config."""
    from diffkit.config import load_config

    return load_config(CONFIG).sample


def diffkit_sampler() -> str:
    return example_sample().sampler


def guidance() -> float:
    """The example's [sample] guidance_scale, used for both models."""
    return example_sample().guidance_scale


def as_written(x: torch.Tensor) -> torch.Tensor:
    """Clips as `diffkit sample` writes them with the example's [sample]: DC offset, then the noise gate."""
    from diffkit.data import as_written as written

    s = example_sample()
    return written(x, s.dc_offset, s.noise_gate, SAMPLE_RATE, s.nyquist)


def written_settings() -> str:
    s = example_sample()
    return f"dc_offset \"{s.dc_offset}\", nyquist \"{s.nyquist}\", noise_gate {s.noise_gate:g} dB"


@torch.no_grad()
def sample_diffkit(diffusion, y: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([diffusion.sample(len(b), sampler=diffkit_sampler(), steps=CALLS, y=b, guidance_scale=guidance(),
                                       generator=g) for b in y.split(100)])


# --- audio-diffusion-pytorch -------------------------------------------------------------------------


class Peer(nn.Module):
    """audio-diffusion-pytorch's DiffusionModel (UNetV0, v-diffusion) with labels as a one-token embedding."""

    FEATURES = 128

    def __init__(self) -> None:
        super().__init__()
        from audio_diffusion_pytorch import DiffusionModel, UNetV0, VDiffusion, VSampler

        # The library's README network, shortened to 4096 samples: 4096 → 4096 → 1024 → 256 → 64 → 32 → 16.
        self.model = DiffusionModel(
            net_t=UNetV0, in_channels=1, channels=[8, 32, 64, 128, 256, 256], factors=[1, 4, 4, 4, 2, 2],
            items=[1, 2, 2, 2, 2, 2], attentions=[0, 0, 0, 1, 1, 1], cross_attentions=[0, 0, 0, 1, 1, 1],
            attention_heads=8, attention_features=64, diffusion_t=VDiffusion, sampler_t=VSampler,
            use_embedding_cfg=True, embedding_max_length=1, embedding_features=self.FEATURES)
        self.labels = nn.Embedding(len(DIGITS), self.FEATURES)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, embedding=self.labels(y)[:, None], embedding_mask_proba=0.1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        out = []
        for b in y.split(100):
            noise = torch.randn(len(b), 1, LENGTH, generator=g)
            out.append(self.model.sample(noise, num_steps=CALLS, embedding=self.labels(b)[:, None],
                                         embedding_scale=guidance()))
        return torch.cat(out)


def train_peer(max_steps: int, max_cpu_s: float) -> None:
    """Train the peer on the same clips, batch, AdamW, warm-up, lr decay and EMA as diffkit's example config;
    an EMA checkpoint every 100 steps. The cosine decay's progress is the larger of the shares of ``max_steps``
    and ``max_cpu_s`` spent, so the lr reaches 0 where the run stops."""
    from diffkit.ema import EMA

    s = shared_settings()
    data = load_data()
    folder = RUN / "peer"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    peer = Peer()
    ema = EMA(peer, decay=s["ema_decay"], start_step=s["ema_start"], warmup=s["ema_warmup"])
    opt = torch.optim.AdamW(peer.parameters(), s["lr"], weight_decay=s["weight_decay"])
    batch, warmup = s["batch"], s["warmup"]

    def lr(step: int, cpu_s: float) -> float:  # diffkit's Trainer._lr, with progress by steps or CPU time
        if warmup and step < warmup:
            return s["lr"] * (step + 1) / warmup
        if s["lr_decay"] == "cosine":
            progress = min(1.0, max((step - warmup) / max(1, max_steps - warmup), cpu_s / max_cpu_s))
            return s["lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))
        return s["lr"]

    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    print(f"peer: {sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M parameters; training up to {max_steps} "
          f"steps or {max_cpu_s / 60:.0f} CPU-minutes …", flush=True)
    c0, log = cpu_seconds(), []
    step, order = 0, torch.randperm(len(x))
    while step < max_steps and cpu_seconds() - c0 < max_cpu_s:
        if len(order) < batch:
            order = torch.randperm(len(x))
        idx, order = order[:batch], order[batch:]
        for group in opt.param_groups:
            group["lr"] = lr(step, cpu_seconds() - c0)
        loss = peer(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        ema.update(peer)
        if step % 50 == 0:
            log.append({"step": step, "loss": loss.item(), "cpu_s": cpu_seconds() - c0})
            print(f"  peer step {step}: loss {loss.item():.4f}, {log[-1]['cpu_s']:.0f} CPU-s", flush=True)
        if step % 100 == 0:  # the log too: a run stopped from outside keeps what it reached
            torch.save(ema.model.state_dict(), folder / f"ema_{step:06d}.pt")
            (folder / "log.json").write_text(json.dumps(log) + "\n")
    log.append({"step": step, "loss": loss.item(), "cpu_s": cpu_seconds() - c0})
    torch.save(ema.model.state_dict(), folder / f"ema_{step:06d}.pt")
    (folder / "log.json").write_text(json.dumps(log) + "\n")


def load_peer(step: int) -> Peer:
    peer = Peer()
    peer.load_state_dict(torch.load(RUN / "peer" / f"ema_{step:06d}.pt"))
    return peer.eval()


def peer_checkpoints() -> dict[int, float]:
    """Saved peer step → CPU seconds spent to reach it."""
    log = json.loads((RUN / "peer" / "log.json").read_text())
    cpu = {e["step"]: e["cpu_s"] for e in log}
    steps = sorted(int(p.stem.split("_")[1]) for p in (RUN / "peer").glob("ema_*.pt"))
    return {s: cpu.get(s, max(cpu.values()) if cpu else 0.0) for s in steps}


# --- report --------------------------------------------------------------------------------------


def spectrogram_png(rows: dict[str, tuple[torch.Tensor, np.ndarray]], path: Path, digits=(0, 3, 5, 7, 9)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(digits), figsize=(2.2 * len(digits), 1.8 * len(rows)), dpi=90,
                             sharex=True, sharey=True)
    for r, (name, (x, y)) in enumerate(rows.items()):
        for c, d in enumerate(digits):
            m = 10 * log_mel(x[y == d][:1])[0].numpy()
            ax = axes[r, c]
            ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=m.max() - 80, vmax=m.max(),
                      extent=(0, LENGTH / SAMPLE_RATE, 0, 40))
            ax.set_title(f"{name}: {DIGITS[d]}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate(notes: list[str]) -> None:
    from diffkit.data import save_wav

    started = time.perf_counter()
    data = load_data()
    train_x, train_y = torch.from_numpy(data["train_x"]), data["train_y"]
    test_x, test_y = torch.from_numpy(data["test_x"]), data["test_y"]
    judge = cached_judge(data)
    judge_acc = recognised(judge, test_x, test_y)
    judge_train_acc = recognised(judge, train_x, train_y)
    print(f"judge: {judge_acc:.1%} on held-out voices ({judge_train_acc:.1%} on its training clips)", flush=True)
    hiss = torch.randn(test_x.shape, generator=torch.Generator().manual_seed(0))
    # Held-out clips under white noise (the first runs' samples had a floor near -44 dBFS).
    under_hiss = {db: recognised(judge, test_x + hiss * 10 ** (db / 20), test_y) for db in (-60, -45)}
    print(f"judge on held-out voices under white noise at -60 / -45 dBFS: {under_hiss}", flush=True)

    ref = mel_stats(test_x)
    y = torch.arange(len(DIGITS)).repeat_interleave(PER_DIGIT)
    # The floor at the generated sets' size (a Fréchet distance from few clips is biased upwards): as many
    # real training clips, 10 per digit, against the held-out ones; the mean over 5 draws.
    rng = np.random.default_rng(0)
    floor = float(np.mean([frechet_distance(mel_stats(train_x[np.concatenate(
        [rng.choice(np.flatnonzero(train_y == d), PER_DIGIT, replace=False) for d in range(len(DIGITS))])]), ref)
        for _ in range(5)]))

    def judge_clips(name: str, x: torch.Tensor, extra: dict[str, Any]) -> dict[str, Any]:
        fd = frechet_distance(mel_stats(x), ref)
        row = {"name": name, "acc": recognised(judge, x, y.numpy()), "fd": fd, "fd_ratio": fd / floor,
               **audio_stats(x), **extra, "x": x}
        print(f"  {name}: {row['acc']:.1%} recognised, Fréchet ×{row['fd_ratio']:.1f}, floor {row['floor']:.1f} dBFS",
              flush=True)
        return row

    real = {"name": f"real clips, held-out voices (n={len(test_x)})", "acc": judge_acc, "fd_ratio": 1.0,
            **audio_stats(test_x), "steps": "–", "cpu": "–", "x": test_x, "y": test_y}
    rows = [real]

    diffusion, facts = load_diffkit()
    t0 = time.perf_counter()
    x = sample_diffkit(diffusion, y, seed=1)
    shared = shared_settings()
    dk = judge_clips(f"diffkit {shared['backbone']}, {facts['steps']} steps", x,
                     {"steps": facts["steps"], "cpu": facts["cpu_s"], "sample_s": time.perf_counter() - t0,
                      "params": sum(p.numel() for p in diffusion.parameters())})
    rows.append(dk)

    peers = peer_checkpoints()
    at_steps = min(peers, key=lambda s: (abs(s - facts["steps"]), s))
    # The first checkpoint at or past diffkit's CPU time: the peer gets at least as much time, never less.
    at_time = min((s for s, c in peers.items() if c >= facts["cpu_s"]), default=max(peers))
    chosen: dict[int, list[str]] = {}
    chosen.setdefault(at_steps, []).append("same steps" if at_steps == facts["steps"]
                                           else f"the nearest it reached to {facts['steps']} steps")
    chosen.setdefault(at_time, []).append("at least diffkit's CPU time")
    chosen = {s: "; ".join(v) for s, v in chosen.items()}
    for s, label in sorted(chosen.items()):
        peer = load_peer(s)
        t0 = time.perf_counter()
        x = peer.sample(y, seed=1)
        rows.append(judge_clips(f"audio-diffusion-pytorch, {s} steps ({label})", x,
                                {"steps": s, "cpu": peers[s], "sample_s": time.perf_counter() - t0,
                                 "params": sum(p.numel() for p in peer.parameters())}))

    for r in rows[1:]:
        r["y"] = y.numpy()
    np.savez_compressed(RUN / "generated.npz", **{f"x{i}": r["x"].numpy() for i, r in enumerate(rows[1:])})
    same_time = next(r for r in rows[2:] if r["steps"] == at_time)  # the peer's row at diffkit's CPU time
    # The same clips as `diffkit sample` writes them with the example's [sample] (both models alike).
    written = [{**judge_clips(f"{r['name']}, written with {written_settings()}", as_written(r["x"]),
                              {k: r[k] for k in ("steps", "cpu", "sample_s", "params")}), "y": r["y"]}
               for r in (rows[1], same_time)]
    spectrogram_png({"real": (test_x, test_y), "diffkit": (rows[1]["x"], y.numpy()),
                     "peer (same time)": (same_time["x"], y.numpy())}, RESULTS / "speech_spectrograms.png")
    wav_dir = RESULTS / "speech_digits"
    if wav_dir.exists():
        shutil.rmtree(wav_dir)
    for tag, r in (("real", rows[0]), ("diffkit", rows[1]), ("peer", same_time), ("diffkit_written", written[0])):
        for d in (0, 3, 7):
            save_wav(r["x"][r["y"] == d][0], wav_dir / f"{tag}_{DIGITS[d]}.wav", SAMPLE_RATE)

    def fmt_cpu(c: Any) -> str:
        return c if isinstance(c, str) else f"{c / 60:.1f}"

    lines = [
        "# Spoken digits: class-conditional AudioDDPM vs audio-diffusion-pytorch",
        "",
        f"`python benchmarks/speech_digits.py` — {machine()}, one thread per model.",
        "",
        *notes,
        "",
        "## Setup",
        "",
        f"- Data: espeak-ng speaking \"zero\" … \"nine\", {len(ACCENTS)} English accents × {len(VARIANTS)} voice "
        f"variants, random pitch, speed and amplitude; 8 kHz, {LENGTH} samples ({LENGTH / SAMPLE_RATE:.2f} s). "
        f"{len(train_x)} training clips ({len(VARIANTS) - HELD_OUT} variants); {len(test_x)} held-out clips from "
        f"{HELD_OUT} other variants ({', '.join(VARIANTS[-HELD_OUT:])}).",
        f"- Judge: a 3-layer CNN on 40-band log-mel spectrograms trained on the real training clips only; "
        f"**{judge_acc:.1%}** on the held-out voices ({judge_train_acc:.1%} on its training clips). It never heard "
        f"noise, and a hiss pulls its answers toward the digits with hissing sounds in them (white noise toward "
        f"\"zero\" and \"five\"): the held-out clips with white noise added at -60 / -45 dBFS are recognised {under_hiss[-60]:.1%} / {under_hiss[-45]:.1%}.",
        f"- Fréchet distance of per-clip log-mel statistics (mean and std of 40 bands) against the held-out clips; "
        f"the real-versus-real floor ({len(y)} training clips, {PER_DIGIT} per digit, against them; mean of 5 draws) is "
        f"{floor:.2f}; the table gives each set's distance ({len(y)} clips) divided by it.",
        f"- Both models: batch {shared['batch']}, AdamW lr {shared['lr']} (weight decay {shared['weight_decay']}), {shared['warmup']} "
        f"warm-up steps, then lr decay `{shared['lr_decay']}`"
        + (" (diffkit over its steps; the peer over its CPU budget)" if shared["lr_decay"] != "constant" else "")
        + f", EMA {shared['ema_decay']} from step {shared['ema_start']}" + (" with warm-up min(decay, (1+n)/(10+n))"
                                                                   if shared["ema_warmup"] else "")
        + f"; one thread; {PER_DIGIT} clips per digit, {CALLS} sampling steps with classifier-free guidance {guidance()} "
        "(two network evaluations per step for both).",
        f"- diffkit: `examples/speech_digits.toml`: backbone `{shared['backbone']}` with options "
        + ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in shared["model_options"].items())
        + ", the `labels` conditioner, v-prediction"
        + (f" in units of data_std {shared['data_std']:g}" if shared["data_std"] != 1 else "") + ", cosine schedule"
        + (f" shifted by {shared['schedule_shift']:g}" if shared["schedule_shift"] != 1 else "") + ", "
        f"`{diffkit_sampler()}`; {dk['params'] / 1e6:.2f}M parameters.",
        f"- audio-diffusion-pytorch 0.1.3: `UNetV0` channels 8/32/64/128/256/256, factors 1/4/4/4/2/2, attention "
        f"and cross-attention on the three coarsest levels, `VDiffusion`, `VSampler`, a learned one-token label "
        f"embedding with its classifier-free guidance (mask probability 0.1); {rows[-1]['params'] / 1e6:.2f}M parameters.",
        "",
        "## Results",
        "",
    ]
    body = []
    for r in rows + written:
        body.append([r["name"], str(r["steps"]), fmt_cpu(r["cpu"]), f"{r['acc']:.1%}", f"{r['fd_ratio']:.1f}",
                     f"{r['floor']:.1f}", f"{r['level']:.1f}", f"{r['dc']:.4f}", f"{r['clipped']:.3%}"])
    lines += table(["clips", "train steps", "train CPU-min", "recognised", "Fréchet / floor", "noise floor dBFS",
                    "level dBFS", "median abs DC", "clipped"], body)
    lines += [
        "",
        "![log-mel spectrograms: real, diffkit, peer](speech_spectrograms.png)",
        "",
        "WAVs (real, diffkit, peer at the same CPU time, and diffkit's as written; zero, three, seven): "
        "`benchmarks/results/speech_digits/`.",
        "",
        f"Sampling {len(y)} clips: diffkit {rows[1]['sample_s']:.0f} s, audio-diffusion-pytorch "
        f"{same_time['sample_s']:.0f} s. Evaluation runtime: {elapsed(started)}.",
    ]
    write_results("speech_digits.md", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="diffkit's training steps (default: the example's train.steps)")
    parser.add_argument("--peer-steps", type=int, default=10000, help="the peer's most training steps")
    parser.add_argument("--peer-cpu-minutes", type=float, default=30.0, help="the peer's most CPU-minutes")
    parser.add_argument("--only", choices=["data", "diffkit", "peer", "eval"], help="run one stage")
    parser.add_argument("--export", type=Path, help="write the training clips as WAV folders there and stop")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's head")
    add_threads_option(parser, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.export:
        return export(args.export)
    load_data()
    if args.only in (None, "diffkit"):
        train_diffkit(args.steps or shared_settings()["steps"])
    if args.only in (None, "peer"):
        train_peer(args.peer_steps, args.peer_cpu_minutes * 60)
    if args.only in (None, "eval"):
        evaluate(args.note)


if __name__ == "__main__":
    main()
