"""The training loop: config in, run directory out (checkpoints, samples, metrics, loss curve)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .build import build_dataset, build_diffusion, run_info, sample_labels
from .config import Config, ConfigError, load_config
from .data import save_samples
from .ema import EMA

# Keys that may change between a run and its --resume without breaking exact continuation.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "sample.")


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what is safe on disk."""


@dataclass
class Position:
    """Where the data stream is: epoch and the number of batches of it already consumed."""

    epoch: int = 0
    batch: int = 0


# --- processes and devices -----------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(config: Config, d: Dist) -> torch.device:
    want = config.run.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: 'cuda' was asked for but no CUDA device is available")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.cuda.set_device(d.local_rank)
    return torch.device("cuda", d.local_rank)


# --- RNG state: everything that makes a resumed run continue bit for bit ---------------------------


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- data ----------------------------------------------------------------------------------------


def batches(dataset, config: Config, d: Dist, start: Position) -> Iterator[tuple[Position, Any]]:
    """Endless batches; each epoch's order comes from its own seeded generator so a resume can skip to it."""
    bs = config.data.batch_size
    epoch, skip = start.epoch, start.batch
    while True:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.run.seed * 100_003 + epoch))
        shard = order[d.rank:: d.world].tolist()
        groups = [shard[i: i + bs] for i in range(0, len(shard) - bs + 1, bs)]
        if not groups:
            raise ConfigError(f"data.batch_size: the dataset has {len(dataset)} examples, fewer than "
                              f"batch_size={bs} × {d.world} process(es)")
        # The loader's own generator: creating it mid-epoch on resume must not draw from the global RNG.
        loader = DataLoader(dataset, batch_sampler=groups[skip:], num_workers=config.data.num_workers,
                            collate_fn=default_collate, pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator().manual_seed(config.run.seed + epoch))
        for i, batch in enumerate(loader, start=skip + 1):
            yield Position(epoch, i), batch
        epoch, skip = epoch + 1, 0


# --- the run directory ---------------------------------------------------------------------------


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_resumable(saved: Config, current: Config) -> None:
    a, b = _flatten(saved.model_dump()), _flatten(current.model_dump())
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        raise ConfigError(f"--resume: the config differs from the run's saved config.toml at {', '.join(changed)}; "
                          "only train.steps, logging, sampling and checkpoint intervals may change")


class RunDirectory:
    """The run folder, locked for the lifetime of a run so two runs never write into one directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_file = None

    def open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise TrainingError(f"run directory '{self.path}' is not writable: {exc.strerror or exc}") from None
        self._lock_file = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise TrainingError(f"run directory '{self.path}' is in use by another diffkit run; "
                                "choose another run.dir or wait for it to finish") from None
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def close(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _tensorboard(path: Path):
    """A TensorBoard writer into ``path/tensorboard`` when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path / "tensorboard"))


def plot_loss_curve(metrics_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


# --- training ------------------------------------------------------------------------------------


class Trainer:
    """Trains the diffusion a config describes; ``run()`` returns the run directory."""

    def __init__(self, config: Config, *, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.resume = resume
        self.progress = progress
        self.dist = init_distributed("cuda" if config.run.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = pick_device(config, self.dist)
        self.run_dir = RunDirectory(Path(config.run.dir))
        self.ckpt_root = self.run_dir.path / "checkpoints"
        t = config.train
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: 'fp16' needs CUDA (it uses a gradient scaler); use 'bf16' on the CPU")

    # The one place that decides what a checkpoint holds.
    def _state(self, step: int, position: Position) -> dict[str, Any]:
        return {
            "step": step,
            "epoch": position.epoch,
            "batch": position.batch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.state_dict(),
            "rng": rng_state(),
            "skipped_batches": self.skipped,
        }

    def _save(self, step: int, position: Position) -> Path:
        weights = {"model": self.diffusion.state_dict(), "ema": self.ema.model.state_dict()}
        try:
            return ckpt.save_checkpoint(self.ckpt_root, step, weights, self._state(step, position),
                                        self.config.train.keep_checkpoints)
        except OSError as exc:
            raise TrainingError(f"could not write a checkpoint to '{self.ckpt_root}': {exc.strerror or exc}; "
                                f"the previous checkpoints are intact") from None

    def _load(self, folder: Path) -> tuple[int, Position]:
        ckpt.load_into(self.diffusion, folder / "model.safetensors")
        ckpt.load_into(self.ema.model, folder / "ema.safetensors")
        state = ckpt.load_state(folder / "state.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.skipped = int(state.get("skipped_batches", 0))
        return int(state["step"]), Position(int(state["epoch"]), int(state["batch"]))

    def _init_from(self, source: str) -> None:
        folder = ckpt.resolve_checkpoint(source)
        name = "ema.safetensors" if (folder / "ema.safetensors").is_file() else "model.safetensors"
        try:
            ckpt.load_into(self.diffusion, folder / name)
        except ckpt.CheckpointError as exc:
            raise ConfigError(f"train.init_from: {exc}") from None
        self.ema.model.load_state_dict(self.diffusion.state_dict())

    def _setup(self) -> tuple[int, Position]:
        c = self.config
        d = self.dist
        if d.main:
            self.run_dir.open()
        if self.resume:
            saved_config = self.run_dir.path / "config.toml"
            if not saved_config.is_file():
                raise TrainingError(f"--resume: '{saved_config}' not found; nothing to resume in '{self.run_dir.path}'")
            check_resumable(load_config(saved_config), c)
            if ckpt.latest_checkpoint(self.ckpt_root) is None:
                raise TrainingError(f"--resume: no checkpoint in '{self.ckpt_root}'")
        elif ckpt.latest_checkpoint(self.ckpt_root) is not None:
            raise TrainingError(f"run directory '{self.run_dir.path}' already holds checkpoints; "
                                "pass --resume to continue it, or choose another run.dir")

        if d.main:
            for note in ckpt.recover(self.ckpt_root):
                tqdm.write(f"{self.run_dir.path}: {note} (left by an interrupted save)")
        seed_everything(c.run.seed + d.rank)
        self.dataset = build_dataset(c)
        self.info = run_info(self.dataset)
        self.diffusion = build_diffusion(c, self.info).to(self.device)
        t = c.train
        if c.train.channels_last and len(self.info.example_shape) in (3, 4):
            fmt = torch.channels_last if len(self.info.example_shape) == 3 else torch.channels_last_3d
            self.diffusion.model.to(memory_format=fmt)
        self.ema = EMA(self.diffusion, decay=t.ema_decay, start_step=t.ema_start, update_every=t.ema_every)
        self.optimizer = torch.optim.AdamW(self.diffusion.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.skipped = 0
        if d.main:
            self._check_free_space()
        if t.compile:
            self.diffusion.model.compile()
        self.train_model: torch.nn.Module = self.diffusion
        if d.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.diffusion, device_ids=ids)

        if self.resume:
            folder = ckpt.latest_checkpoint(self.ckpt_root)
            step, position = self._load(folder)
            if d.main:
                tqdm.write(f"resuming {self.run_dir.path} from {folder.name}")
        else:
            if t.init_from:
                self._init_from(t.init_from)
            step, position = 0, Position()
            if d.main:
                (self.run_dir.path / "config.toml").write_text(c.to_toml())
                self.info.save(self.run_dir.path / "run.json")
                (self.run_dir.path / "metrics.jsonl").write_text("")
        return step, position

    def _check_free_space(self) -> None:
        """Refuse to start when the disk cannot hold the checkpoints this run will keep."""
        weights = sum(p.numel() * p.element_size() for p in self.diffusion.parameters())
        # model + EMA + two AdamW moments, for the kept checkpoints plus one being written.
        needed = 4 * weights * (self.config.train.keep_checkpoints + 1)
        free = shutil.disk_usage(self.run_dir.path).free
        if free < needed:
            raise TrainingError(f"run directory '{self.run_dir.path}' has {free / 2**20:.0f} MiB free; keeping "
                                f"{self.config.train.keep_checkpoints} checkpoints needs about {needed / 2**20:.0f} MiB")

    def _lr(self, step: int) -> float:
        t = self.config.train
        return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr

    def _autocast(self):
        if self.config.train.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.train.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _train_step(self, stream: Iterator, step: int) -> tuple[Optional[float], float, Position]:
        """One optimizer step over ``grad_accum`` micro-batches; (None, ...) when it was not taken."""
        t = self.config.train
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        finite = True
        position = Position()
        for micro in range(t.grad_accum):
            position, (x, y) = next(stream)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device) if self.diffusion.conditioner is not None else None
            sync = contextlib.nullcontext()
            if isinstance(self.train_model, DistributedDataParallel) and micro < t.grad_accum - 1:
                sync = self.train_model.no_sync()
            with sync:
                with self._autocast():
                    loss = self.train_model(x, y) / t.grad_accum
                finite &= bool(torch.isfinite(loss))
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = t.grad_clip if t.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), max_norm))
        # Under fp16 an overflowing gradient is the scaler's business (it skips and rescales).
        if not finite or (self.scaler is None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(step, total, grad_norm)
            return None, grad_norm, position
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.ema.update(self.diffusion)
        return total, grad_norm, position

    def _nonfinite(self, step: int, loss: float, grad_norm: float) -> None:
        what = f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {step + 1} " \
               f"(loss={loss}, grad norm={grad_norm})"
        if self.config.train.on_nonfinite == "stop":
            last = ckpt.latest_checkpoint(self.ckpt_root)
            safe = f"the last good checkpoint is '{last}'" if last else "no checkpoint was written yet"
            raise TrainingError(f"{what}: stopped before the optimizer moved; {safe}")
        self.skipped += 1
        warnings.warn(f"{what}: batch skipped ({self.skipped} so far)", RuntimeWarning, stacklevel=2)

    def sample_and_save(self, step: int) -> list[Path]:
        s = self.config.sample
        model = self.ema.model if s.use_ema else self.diffusion
        model.eval()
        y = sample_labels(model, s.num, s.labels)
        generator = torch.Generator(self.device).manual_seed(self.config.run.seed)
        # Sampling draws from its own generator: the training RNG stream is left as it was.
        x = model.sample(s.num, sampler=s.sampler, steps=s.steps,
                         eta=s.eta, y=None if y is None else y.to(self.device),
                         guidance_scale=s.guidance_scale, generator=generator, progress=self.progress)
        return save_samples(x, self.info.modality, self.run_dir.path / "samples", stem=f"step_{step:08d}",
                            sample_rate=self.info.sample_rate)

    def run(self) -> Path:
        try:
            return self._run()
        finally:
            self.run_dir.close()

    def _run(self) -> Path:
        c, d = self.config, self.dist
        step, position = self._setup()
        stream = batches(self.dataset, c, d, position)
        metrics = self.run_dir.path / "metrics.jsonl"
        bar = tqdm(total=c.train.steps, initial=step, desc="training", disable=not (self.progress and d.main),
                   dynamic_ncols=True)
        board = _tensorboard(self.run_dir.path) if d.main else None
        window: list[float] = []
        started = time.perf_counter()
        steps_done = 0
        while step < c.train.steps:
            loss, grad_norm, position = self._train_step(stream, step)
            if loss is None:
                continue
            step += 1
            steps_done += 1
            window.append(loss)
            bar.update(1)
            if step % c.train.log_every == 0 or step == c.train.steps:
                mean_loss = sum(window) / len(window)
                window.clear()
                rate = steps_done / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
                if d.main:
                    row = {"step": step, "processes": d.world, "loss": mean_loss, "lr": self._lr(step - 1), "grad_norm": grad_norm,
                           "steps_per_s": rate, "skipped_batches": self.skipped}
                    with open(metrics, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    if board is not None:
                        for key in ("loss", "lr", "grad_norm", "steps_per_s"):
                            board.add_scalar(f"train/{key}", row[key], step)
            last = step == c.train.steps
            save_now = last or (c.train.checkpoint_every and step % c.train.checkpoint_every == 0)
            sample_now = last or (c.train.sample_every and step % c.train.sample_every == 0)
            if d.main and save_now:
                self._save(step, position)
            if d.main and sample_now:
                self.sample_and_save(step)
                plot_loss_curve(metrics, self.run_dir.path / "loss.png")
            if d.world > 1 and (save_now or sample_now):
                dist.barrier()  # the other ranks wait while rank 0 writes
        bar.close()
        if board is not None:
            board.close()
        if d.world > 1:
            dist.destroy_process_group()
        return self.run_dir.path
