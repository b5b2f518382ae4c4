"""The training loop: config in, run directory out (checkpoints, samples, metrics, loss curve)."""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .build import (build_dataset, build_diffusion, check_backbone_fits, check_sample_config, churn_options,
                    exception_line, sample_labels)
from .config import Config, ConfigError, Overrides, apply_overrides, load_config, validate
from .data import DataError, save_samples
from .distributed import Dist, init_distributed, pick_device
from .ema import EMA
from .metrics import MetricsLog
from .run import Run, RunError, RunInfo, load_weights_from

# Keys that may change between a run and its --resume without breaking exact continuation.
# run.dir is where the run lies now: it may be spelled another way, or the run may have moved. The loader's
# workers change nothing: each example is loaded under its own seed (SeededExamples).
RESUMABLE_CHANGES = ("run.dir", "data.num_workers", "train.steps", "train.log_every", "train.sample_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "sample.")
# With train.on_nonfinite = "skip", this many skipped batches in a row end the run: nothing is being learned.
MAX_CONSECUTIVE_SKIPS = 20
# Free space kept for samples, metrics and the loss plot beside the checkpoints.
_SPACE_MARGIN = 1 << 20


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what is safe on disk."""


class TrainingStopped(TrainingError):
    """The run was asked to stop (SIGTERM, Ctrl-C) and saved a checkpoint first."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class Position:
    """Where the data stream is: epoch and the number of batches of it already consumed."""

    epoch: int = 0
    batch: int = 0


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


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The random state example ``index`` is loaded with in ``epoch`` of a run seeded ``seed`` (a 63-bit mix)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % 2**64
    return (mixed ^ (mixed >> 31)) % 2**63


class SeededExamples(torch.utils.data.Dataset):
    """``dataset[i]`` loaded under a random state of its own, :func:`example_seed`: the random crops and flips an
    example gets depend on the run's seed, the epoch and the example alone, not on which process loads it or what
    it loaded before. So ``data.num_workers`` changes nothing, and a resume mid-epoch loads what the run would
    have loaded. Torch's CPU generator is put back afterwards (the training noise draws from it); NumPy's and
    Python's global generators, which the training does not use, are left seeded (putting NumPy's back would
    cost 0.1 ms an example)."""

    def __init__(self, dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = example_seed(self.seed, self.epoch, index)
        saved = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)  # the CPU's alone: torch.manual_seed would reseed CUDA too
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved)


def batches(dataset, config: Config, d: Dist, start: Position) -> Iterator[tuple[Position, Any]]:
    """Endless batches; each epoch's order comes from its own seeded generator so a resume can skip to it, and
    each example is loaded under its own seed (:class:`SeededExamples`)."""
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
        loader = DataLoader(SeededExamples(dataset, config.run.seed, epoch), batch_sampler=groups[skip:],
                            num_workers=config.data.num_workers,
                            collate_fn=default_collate, pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator().manual_seed(config.run.seed + epoch))
        for i, batch in enumerate(loader, start=skip + 1):
            yield Position(epoch, i), batch
        epoch, skip = epoch + 1, 0


# --- resuming ------------------------------------------------------------------------------------


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


_STATE_KEYS = ("step", "epoch", "batch", "optimizer", "ema", "rng")


def _check_state(state: Any, path: Path) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise ckpt.CheckpointError(f"checkpoint state '{path}' holds a {type(state).__name__}, not a diffkit state")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ckpt.CheckpointError(f"checkpoint state '{path}' is not a diffkit training state: it lacks "
                                   f"{', '.join(missing)}")
    return state


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: Path) -> None:
    """Load an optimizer state, refusing one that belongs to another model (one line naming the file)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        groups = saved["param_groups"]
        count = sum(len(g["params"]) for g in groups)
        if count != len(params):
            raise ValueError(f"it holds {count} parameters, this model has {len(params)}")
        for index, param in enumerate(params):
            for name, value in saved["state"].get(index, {}).items():
                if torch.is_tensor(value) and value.ndim and value.shape != param.shape:
                    raise ValueError(f"its '{name}' of parameter {index} has shape {tuple(value.shape)}, "
                                     f"the model's is {tuple(param.shape)}")
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ckpt.CheckpointError(f"checkpoint state '{path}': the optimizer state belongs to another model "
                                   f"({exc})") from None


# --- stopping on a signal ------------------------------------------------------------------------


class _StopRequest:
    """SIGTERM (what schedulers send before they kill) and Ctrl-C ask the loop to save and stop after the
    current step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# --- training ------------------------------------------------------------------------------------


class Trainer:
    """Trains the diffusion a config describes; ``run()`` returns the :class:`~diffkit.run.Run`."""

    def __init__(self, config: Config, *, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.resume = resume
        self.progress = progress
        self.dist = init_distributed("cuda" if config.run.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = pick_device(config.run.device, self.dist)
        self.run_dir = Run(config.run.dir)
        self.ckpt_root = self.run_dir.checkpoints_dir
        t = config.train
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: 'fp16' needs CUDA (it uses a gradient scaler); use 'bf16' on the CPU")
        self.checkpoint_bytes: Optional[int] = None  # the real size of the last checkpoint written
        self.consecutive_skips = 0

    # The one place that decides what a checkpoint holds.
    def _state(self, step: int, position: Position, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "step": step,
            "epoch": position.epoch,
            "batch": position.batch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.counters(),  # the averaged weights go to ema.safetensors
            "rng": rngs[0],
            # Every process's random state (each seeds its own): a torchrun resume continues bit for bit.
            "rng_per_rank": rngs,
            "processes": self.dist.world,
            "skipped_batches": self.skipped,
        }

    def _save(self, step: int, position: Position, rngs: list[dict[str, Any]]) -> Path:
        weights = {"model": self.diffusion.state_dict(), "ema": self.ema.model.state_dict()}  # model.safetensors, ema.safetensors
        self._check_space_for_save(step)
        try:
            folder = ckpt.save_checkpoint(self.ckpt_root, step, weights, self._state(step, position, rngs),
                                          self.config.train.keep_checkpoints)
        except (OSError, SafetensorError, RuntimeError) as exc:
            # A full disk surfaces as ENOSPC, EFBIG or EDQUOT from Python, SafetensorError from Rust and
            # "iostream error" from torch.save's C++ writer: one message for all of them.
            raise TrainingError(f"could not write checkpoint {ckpt.checkpoint_name(step)} to '{self.ckpt_root}' "
                                f"({exception_line(exc)}); {self._space_note()}; the previous checkpoints are intact") from None
        self.checkpoint_bytes = sum(f.stat().st_size for f in folder.iterdir())
        return folder

    def _space_note(self) -> str:
        free = shutil.disk_usage(self.run_dir.path).free
        need = self.checkpoint_bytes or self._estimated_checkpoint_bytes()
        return f"a checkpoint needs about {_mib(need)} and '{self.run_dir.path}' has {_mib(free)} free"

    def _estimated_checkpoint_bytes(self) -> int:
        """Before the first save: model + EMA weights and AdamW's two moments, plus serialisation overhead."""
        weights = sum(p.numel() * p.element_size() for p in self.diffusion.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.diffusion.buffers())
        return 4 * weights + 2 * buffers + 64 * 1024

    def _check_space_for_save(self, step: int) -> None:
        need = (self.checkpoint_bytes or self._estimated_checkpoint_bytes()) + _SPACE_MARGIN
        free = shutil.disk_usage(self.run_dir.path).free
        if free < need:
            raise TrainingError(f"cannot write checkpoint {ckpt.checkpoint_name(step)}: '{self.run_dir.path}' has {_mib(free)} free, "
                                f"a checkpoint needs about {_mib(need)}; free some space and --resume "
                                "(the previous checkpoints are intact)")

    def _load(self, folder: Path) -> tuple[int, Position]:
        ckpt.load_into(self.diffusion, folder / ckpt.MODEL_FILE)
        ckpt.load_into(self.ema.model, folder / ckpt.EMA_FILE)
        path = folder / ckpt.STATE_FILE
        state = _check_state(ckpt.load_state(path), path)
        _load_optimizer(self.optimizer, state["optimizer"], path)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.ema.load_state_dict(state["ema"])
        saved_world = int(state.get("processes", 1))
        if saved_world != self.dist.world:
            raise TrainingError(f"--resume: checkpoint '{folder}' was written by {saved_world} process(es), this run has "
                                f"{self.dist.world}; resume with the same number of processes to continue exactly")
        try:
            set_rng_state(state.get("rng_per_rank", [state["rng"]])[self.dist.rank])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"checkpoint state '{path}': its random state is damaged ({exception_line(exc)})") from None
        self.skipped = int(state.get("skipped_batches", 0))
        return int(state["step"]), Position(int(state["epoch"]), int(state["batch"]))

    def _init_from(self, source: str) -> None:
        try:
            load_weights_from(self.diffusion, source)
        except (ckpt.CheckpointError, RunError, ValueError) as exc:
            raise ConfigError(f"train.init_from: {exc}") from None
        self.ema.model.load_state_dict(self.diffusion.state_dict())

    def _setup(self) -> tuple[int, Position]:
        c = self.config
        d = self.dist
        if d.main:
            self.run_dir.create()
        saved = None
        if self.resume:
            saved = self.run_dir.saved_config()
            check_resumable(saved, c)
            if self.run_dir.latest_checkpoint() is None:
                if d.main:
                    ckpt.recover(self.ckpt_root)
                if self.run_dir.latest_checkpoint() is None:
                    raise TrainingError(f"--resume: no complete checkpoint in '{self.ckpt_root}'")
        elif self.run_dir.latest_checkpoint() is not None:
            raise TrainingError(f"run directory '{self.run_dir.path}' already holds checkpoints; "
                                "pass --resume to continue it, or choose another run.dir")

        if d.main:
            for note in ckpt.recover(self.ckpt_root):
                tqdm.write(f"{self.run_dir.path}: {note} (left by an interrupted save)")
        d.barrier()
        seed_everything(c.run.seed + d.rank)
        self.dataset = build_dataset(c, progress=self.progress)
        self.info = RunInfo.from_dataset(self.dataset)
        self.diffusion = build_diffusion(c, self.info.example_shape).to(self.device)
        # Everything that can be checked is checked before step 1: a mistake must not cost a run.
        check_backbone_fits(self.diffusion, self.info, c)
        check_sample_config(self.diffusion, c, self.info.modality)
        t = c.train
        if c.train.channels_last and len(self.info.example_shape) in (3, 4):
            fmt = torch.channels_last if len(self.info.example_shape) == 3 else torch.channels_last_3d
            self.diffusion.model.to(memory_format=fmt)
        self.ema = EMA(self.diffusion, decay=t.ema_decay, start_step=t.ema_start, update_every=t.ema_every,
                       warmup=t.ema_warmup)
        self.optimizer = torch.optim.AdamW(self.diffusion.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.skipped = 0
        self.metrics = MetricsLog(self.run_dir.metrics_path, self.run_dir.tensorboard_dir if d.main else None)
        if d.main:
            self._check_free_space()
        if t.compile:
            self.diffusion.model.compile()
        self.train_model: torch.nn.Module = self.diffusion
        if d.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.diffusion, device_ids=ids)

        if self.resume:
            folder = self.run_dir.latest_checkpoint()
            step, position = self._load(folder)
            if step >= t.steps:
                raise TrainingError(f"--resume: '{self.run_dir.path}' has already trained {step} steps and train.steps "
                                    f"is {t.steps}; raise train.steps (e.g. --set train.steps={step + max(step, 1)}) "
                                    "to continue it")
            if d.main:
                dropped = self.metrics.truncate_after(step)
                note = f" (dropped {dropped} metrics row(s) logged after it)" if dropped else ""
                tqdm.write(f"resuming {self.run_dir.path} from {folder.name}{note}")
                inexact = self._inexact_resume(saved, step)
                if inexact:
                    tqdm.write(f"{self.run_dir.path}: note: {inexact}")
                if saved != c:  # train.steps, intervals or [sample] changed: what later calls read
                    self.run_dir.write_config(c)
        else:
            if t.init_from:
                self._init_from(t.init_from)
            step, position = 0, Position()
            if d.main:
                self.run_dir.write_config(c)
                self.info.save(self.run_dir.info_path)
                self.metrics.start()
        return step, position

    def _inexact_resume(self, saved: Config, step: int) -> Optional[str]:
        """What makes this resume differ from one run trained straight to train.steps (said, not refused): only a
        stretched cosine learning-rate curve can."""
        t = self.config.train
        if t.lr_decay != "cosine" or saved.train.steps == t.steps or step <= t.warmup_steps:
            return None
        return (f"lr_decay = \"cosine\" now decays to 0 at step {t.steps}, not {saved.train.steps}: the learning "
                f"rate goes from {self._lr(step, saved.train.steps):.3g} to {self._lr(step):.3g} at step {step + 1}, so "
                f"this run will differ from one trained straight to {t.steps} steps")

    def _check_free_space(self) -> None:
        """Refuse to start when the disk cannot hold the checkpoints this run will keep."""
        per = self._estimated_checkpoint_bytes()
        needed = per * (self.config.train.keep_checkpoints + 1) + _SPACE_MARGIN
        free = shutil.disk_usage(self.run_dir.path).free
        if free < needed:
            raise TrainingError(f"run directory '{self.run_dir.path}' has {_mib(free)} free; keeping "
                                f"{self.config.train.keep_checkpoints} checkpoints of about {_mib(per)} (and writing "
                                f"one more) needs about {_mib(needed)}")

    def _lr(self, step: int, steps: Optional[int] = None) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
        constant or, with ``lr_decay = "cosine"``, half a cosine from ``lr`` down to 0 at ``steps`` (Loshchilov &
        Hutter 2017, without restarts): a short run ends on small steps, which its EMA no longer has to average out.
        ``steps`` replaces train.steps (what the curve was for a run of another length)."""
        t = self.config.train
        steps = t.steps if steps is None else steps
        if t.warmup_steps and step < t.warmup_steps:
            return t.lr * (step + 1) / t.warmup_steps
        if t.lr_decay == "cosine":
            progress = min(1.0, (step - t.warmup_steps) / max(1, steps - t.warmup_steps))
            return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return t.lr

    def _autocast(self):
        if self.config.train.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.train.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _safe_note(self) -> str:
        """What is safe on disk, for the message of a run that stops."""
        last = self.run_dir.latest_checkpoint()
        return f"the last good checkpoint is '{last}'" if last else "no checkpoint was written yet"

    def _next_batch(self, stream: Iterator, step: int) -> tuple[Position, Any]:
        try:
            return next(stream)
        except DataError as exc:
            safe = self._safe_note()
            raise TrainingError(f"data file became unreadable at step {step + 1}: {exc}; {safe}") from None

    def _train_step(self, stream: Iterator, step: int) -> tuple[Optional[float], float, Position]:
        """One optimizer step over ``grad_accum`` micro-batches; (None, ...) when it was not taken."""
        t = self.config.train
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        finite = True
        position = Position()
        for micro in range(t.grad_accum):
            position, (x, y) = self._next_batch(stream, step)
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
        max_norm = t.grad_clip if t.grad_clip else math.inf  # 0 or None: no clipping
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), max_norm))
        # Under fp16 an overflowing gradient is the scaler's business (it skips and rescales).
        if not finite or (self.scaler is None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(step, total, grad_norm)
            return None, grad_norm, position
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step)
        try:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        except RuntimeError as exc:  # e.g. AdamW's step size overflowing float32 with an enormous lr
            safe = self._safe_note()
            raise TrainingError(f"the optimizer step failed at step {step + 1} ({exception_line(exc)}; "
                                f"train.lr={t.lr:g} is too large?); {safe}") from None
        if not all(bool(torch.isfinite(p).all()) for p in self.diffusion.parameters()):
            # The step itself overflowed (an enormous learning rate): nothing after it can be trusted.
            safe = self._safe_note()
            raise TrainingError(f"the weights became non-finite at step {step + 1} (train.lr={t.lr:g} is too "
                                f"large?); {safe}")
        self.ema.update(self.diffusion)
        self.consecutive_skips = 0
        return total, grad_norm, position

    def _nonfinite(self, step: int, loss: float, grad_norm: float) -> None:
        what = f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {step + 1} " \
               f"(loss={loss}, grad norm={grad_norm})"
        safe = self._safe_note()
        if self.config.train.on_nonfinite == "stop":
            raise TrainingError(f"{what}: stopped before the optimizer moved; {safe}")
        self.skipped += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise TrainingError(f"{what}: {self.consecutive_skips} batches in a row were non-finite, so nothing is being "
                                f"learned (train.lr={self.config.train.lr:g}?); stopped; {safe}")
        warnings.warn(f"{what}: batch skipped ({self.skipped} so far)", RuntimeWarning, stacklevel=2)

    def sample_and_save(self, step: int) -> list[Path]:
        s = self.config.sample
        model = self.ema.model if s.use_ema else self.diffusion
        model.eval()
        y = sample_labels(model, s.num, s.labels)
        generator = torch.Generator(self.device).manual_seed(self.config.run.seed)
        # Sampling draws from its own generator: the training RNG stream is left as it was.
        x = model.sample(s.num, sampler=s.sampler, steps=s.steps, eta=s.eta,
                         y=None if y is None else y.to(self.device),
                         guidance_scale=s.guidance_scale, generator=generator, progress=self.progress,
                         **churn_options(s.sampler, {}, s))
        return save_samples(x, self.info.modality, self.run_dir.samples_dir, stem=f"step_{step:08d}",
                            sample_rate=self.info.sample_rate, dc_offset=s.dc_offset,
                            nyquist=s.nyquist, noise_gate_db=s.noise_gate)

    def run(self) -> Run:
        try:
            # Training needs gradients even when the caller is inside torch.no_grad().
            with _StopRequest() as stop, torch.enable_grad():
                return self._run(stop)
        finally:
            if self.dist.main:
                self.run_dir.release()

    def _stop_now(self, stop: _StopRequest) -> Optional[int]:
        """The signal every process agrees to stop on (ranks may receive it a step apart)."""
        if self.dist.world == 1:
            return stop.signum
        flags = self.dist.all_gather(stop.signum or 0)
        return max(flags) or None

    def _run(self, stop: _StopRequest) -> Run:
        c, d = self.config, self.dist
        step, position = self._setup()
        stream = batches(self.dataset, c, d, position)
        bar = tqdm(total=c.train.steps, initial=step, desc="training", disable=not (self.progress and d.main),
                   dynamic_ncols=True)
        window: list[float] = []
        started = time.perf_counter()
        steps_done = 0
        try:
            while step < c.train.steps:
                loss, grad_norm, position = self._train_step(stream, step)
                if loss is None:
                    continue
                step += 1
                steps_done += 1
                window.append(loss)
                bar.update(1)
                signum = self._stop_now(stop)
                if step % c.train.log_every == 0 or step == c.train.steps or signum:
                    mean_loss = sum(window) / len(window)
                    if d.world > 1:  # every process's batches: the loss of the global batch
                        mean_loss = sum(d.all_gather(mean_loss)) / d.world
                    window.clear()
                    rate = steps_done / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
                    if d.main:
                        self.metrics.log({"step": step, "processes": d.world, "loss": mean_loss,
                                          "lr": self._lr(step - 1), "grad_norm": grad_norm, "steps_per_s": rate,
                                          "skipped_batches": self.skipped})
                last = step == c.train.steps
                save_now = last or signum or (c.train.checkpoint_every and step % c.train.checkpoint_every == 0)
                sample_now = last or (c.train.sample_every and step % c.train.sample_every == 0)
                if save_now:
                    rngs = d.all_gather(rng_state())
                    if d.main:
                        self._save(step, position, rngs)
                if signum:
                    d.barrier()
                    name = signal.Signals(signum).name
                    written = self.ckpt_root / ckpt.checkpoint_name(step)
                    if last:  # the run is complete: nothing to resume, only the end-of-training samples are missing
                        raise TrainingStopped(f"stopped by {name} after the last step {step}: checkpoint '{written}' "
                                              f"written, the end-of-training samples not made (diffkit sample "
                                              f"{self.run_dir.path} makes them)", signum)
                    raise TrainingStopped(f"stopped by {name} after step {step}: checkpoint '{written}' "
                                          f"written; continue with --resume", signum)
                if d.main and sample_now:
                    self.sample_and_save(step)
                    self.metrics.plot(self.run_dir.loss_plot_path)
                if save_now or sample_now:
                    d.barrier()  # the other ranks wait while rank 0 writes
        finally:
            bar.close()
            self.metrics.close()
        d.close()
        return self.run_dir


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def train(config: Union[str, Path, Mapping[str, Any], Config], *, overrides: Overrides = None, resume: bool = False,
          progress: bool = True) -> Run:
    """Train from a TOML file, a config mapping or a :class:`~diffkit.config.Config`; returns the :class:`Run`.

    ``overrides`` are ``"section.key=value"`` strings (as ``--set`` takes) or a mapping
    ``{"section.key": value}``; ``resume=True`` continues the run in ``run.dir`` from its newest checkpoint.
    """
    if isinstance(config, (Config, Mapping)):
        raw = config.model_dump(exclude_none=True) if isinstance(config, Config) else config
        config = validate(apply_overrides(raw, overrides), "config")
    else:
        config = load_config(config, overrides)
    # Even when called inside torch.inference_mode(): the model must be built as ordinary (autograd) tensors.
    with torch.inference_mode(False):
        return Trainer(config, resume=resume, progress=progress).run()
