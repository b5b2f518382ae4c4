"""Evaluating a trained run: bits/dim from the variational bound, and sample statistics against the data's."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from .build import build_dataset, sample_labels
from .config import ConfigError
from .files import probe_writable, write_text_atomic

if TYPE_CHECKING:
    from .run import Run


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
    return value


def evaluate(
    run: "Run",
    *,
    examples: int = 64,
    timesteps: Optional[int] = 100,
    samples: int = 64,
    seed: int = 0,
    ema: Optional[bool] = None,
    checkpoint: Union[str, None] = None,
    device: Optional[str] = None,
    progress: bool = False,
) -> dict[str, Any]:
    """bits/dim on ``examples`` data examples (``timesteps`` terms of the bound, stratified and unbiased;
    None: all T) and the mean / std of ``samples`` generated samples; written to ``RUN/eval.json``."""
    _positive("examples", examples)
    _positive("samples", samples)
    config = run.config
    try:
        probe_writable(run.path)  # before the work, not after it
    except OSError as exc:
        raise ConfigError(f"eval: cannot write {run.eval_path.name} into '{run.path}': {exc.strerror or exc}") from None
    diffusion = run.diffusion(ema=ema, checkpoint=checkpoint, device=device)
    T = diffusion.num_timesteps
    if timesteps is not None and (_positive("timesteps", timesteps) > T):
        raise ConfigError(f"timesteps: the bound has {T} terms (the schedule's T); got {timesteps}")
    dev = diffusion.alphas_cumprod.device
    dataset = build_dataset(config, progress=progress)
    count = min(examples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    xs, ys = zip(*(dataset[i] for i in order))
    x = torch.stack(xs).to(dev)
    y = torch.tensor(ys, device=dev) if diffusion.conditioner is not None else None
    generator = torch.Generator(dev).manual_seed(seed)
    with torch.no_grad():
        bpd = diffusion.nll(x, y=y, steps=timesteps, batch_size=64, generator=generator, progress=progress)
    s = config.sample
    labels = sample_labels(diffusion, samples, None)
    generated = diffusion.sample(samples, sampler=s.sampler, steps=s.steps,
                                 y=None if labels is None else labels.to(dev), guidance_scale=s.guidance_scale,
                                 generator=generator, progress=progress)
    folder = run.checkpoint(checkpoint)
    result = {
        "checkpoint": str(folder),
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_stderr": float(bpd.std() / len(bpd) ** 0.5) if len(bpd) > 1 else None,
        "examples": count,
        "bound_terms": timesteps or T,
        "data_mean": float(x.mean()), "data_std": float(x.std()) if x.numel() > 1 else 0.0,
        "sample_mean": float(generated.mean()), "sample_std": float(generated.std()) if generated.numel() > 1 else 0.0,
        "samples": samples, "sampler": s.sampler, "steps": s.steps,
    }
    write_text_atomic(run.eval_path, json.dumps(result, indent=2) + "\n")
    return result
