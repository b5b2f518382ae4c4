"""The ``diffkit`` command: plugins, train, sample, eval."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import inpaint_io

EXAMPLES = """examples:
  diffkit plugins
  diffkit train examples/shapes.toml
  diffkit train examples/shapes.toml --set train.steps=200 --set run.dir=runs/quick
  diffkit train examples/shapes.toml --resume          # continue the run in its run.dir
  diffkit sample runs/shapes --num 64 --sampler ddim --steps 50
  diffkit export-demo tones data/tones --num 256      # a folder of WAV files to train on
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffkit",
        description="Train and sample DDPM diffusion models for images, audio and volumes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("plugins", help="list every backbone and conditioner with the distribution providing it")

    t = sub.add_parser("train", help="train from a TOML config file",
                       description="Train the model a TOML config describes; writes checkpoints, samples, "
                                   "metrics.jsonl and loss.png into run.dir.")
    t.add_argument("config", type=Path, help="the TOML config file (see examples/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=500 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.dir")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("sample", help="write samples from a trained run",
                       description="Write samples in the data's own form: PNG for images, WAV for audio, "
                                   ".npy for volumes. Defaults come from the run's [sample] config.")
    s.add_argument("run", type=Path, help="a run directory (uses its newest checkpoint)")
    s.add_argument("--checkpoint", type=Path, help="a specific checkpoint folder")
    s.add_argument("--num", type=int, help="number of samples")
    s.add_argument("--sampler", help="ddpm, ddim or dpm-solver++")
    s.add_argument("--steps", type=int, help="network calls (ignored by ddpm, which runs all T)")
    s.add_argument("--eta", type=float, help="DDIM stochasticity (0: deterministic)")
    s.add_argument("--labels", help="comma-separated class indices, one per sample (conditional models)")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale (1: none)")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    s.add_argument("--out", type=Path, help="output folder (default: RUN/samples)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    inpaint_io.add_arguments(s)  # --input FILE with --mask/--box/--gap/--extend/--slab: diffkit/inpaint_io.py
    v = sub.add_parser("eval", help="bits/dim and sample statistics of a trained run",
                       description="Evaluate a run: the variational bound in bits per dimension on data examples "
                                   "(Ho et al. 2020, 8-bit data in [-1, 1]) and the mean / std of generated samples "
                                   "against the data's. Writes RUN/eval.json.")
    v.add_argument("run", type=Path, help="a run directory (uses its newest checkpoint)")
    v.add_argument("--checkpoint", type=Path, help="a specific checkpoint folder")
    v.add_argument("--examples", type=int, default=64, help="data examples for bits/dim (default 64)")
    v.add_argument("--timesteps", type=int, default=100,
                   help="terms of the bound to evaluate, stratified and unbiased (default 100; 0: all T)")
    v.add_argument("--samples", type=int, default=64, help="generated samples for the statistics (default 64)")
    v.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("export-demo", help="write a built-in demo set as real files (PNG, WAV or .npy)",
                       description="Write a built-in demo dataset into class sub-folders, to try the folder "
                                   "datasets (image_folder, audio_folder, volume_folder) without data of your own.")
    e.add_argument("dataset", help="a built-in set: shapes, tones, solids or digits")
    e.add_argument("out", type=Path, help="output folder (created; must be empty or new)")
    e.add_argument("--num", type=int, default=128, help="number of examples (default 128)")
    return p


def cmd_export_demo(args: argparse.Namespace) -> int:
    from .data import create_dataset, save_images, save_volume, save_wav
    from .config import ConfigError

    builtin = ("shapes", "tones", "solids", "digits")
    if args.dataset not in builtin:
        raise ConfigError(f"export-demo: unknown demo set {args.dataset!r}; choose one of {', '.join(builtin)}")
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"export-demo: '{args.out}' is not empty; choose a new folder")
    options = {} if args.dataset == "digits" else {"num_examples": args.num}
    dataset = create_dataset(args.dataset, **options)
    count = min(args.num, len(dataset))
    for i in range(count):
        x, y = dataset[i]
        folder = args.out / (dataset.classes[y].replace(" ", "_") if dataset.classes else "all")
        if dataset.modality == "image":
            save_images(x[None], folder, stem=f"{i:05d}")
        elif dataset.modality == "audio":
            save_wav(x, folder / f"{i:05d}.wav", dataset.sample_rate)
        else:
            save_volume(x, folder / f"{i:05d}.npy")
    print(f"wrote {count} {dataset.modality} files to {args.out}")
    return 0


def cmd_plugins() -> int:
    from .registry import get_registry

    registry = get_registry()
    for title, table in (("backbones", registry.backbones), ("conditioners", registry.conditioners)):
        print(f"{title}:")
        rows = [(name, f"{table[name].distribution} ({table[name].plugin})", table[name].description)
                for name in sorted(table)]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(2)]
        for name, source, description in rows:
            print(f"  {name:<{widths[0]}}  {source:<{widths[1]}}  {description}")
    for failure in registry.failures:
        print(f"failed: {failure}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .trainer import Trainer

    config = load_config(args.config, args.overrides)
    run_dir = Trainer(config, resume=args.resume, progress=not args.no_progress).run()
    print(f"run written to {run_dir}: checkpoints/, samples/, metrics.jsonl, loss.png")
    return 0


def _load_run(args: argparse.Namespace, device_name: str = "auto"):
    """(config, run info, checkpoint folder, diffusion on its device in eval mode) of a run directory."""
    import torch

    from . import checkpoint as ckpt
    from .build import RunInfo, build_diffusion
    from .config import load_config

    config = load_config(args.run / "config.toml")
    info = RunInfo.load(args.run / "run.json")
    folder = ckpt.resolve_checkpoint(args.checkpoint or args.run)
    diffusion = build_diffusion(config, info)
    weights = "model.safetensors" if args.raw or not config.sample.use_ema else "ema.safetensors"
    ckpt.load_into(diffusion, folder / weights)
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    diffusion.to(torch.device("cuda" if cuda else "cpu")).eval()
    return config, info, folder, diffusion


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from .build import build_dataset, sample_labels

    config, info, folder, diffusion = _load_run(args)
    device = diffusion.alphas_cumprod.device
    dataset = build_dataset(config)
    count = min(args.examples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count].tolist()
    xs, ys = zip(*(dataset[i] for i in order))
    x = torch.stack(xs).to(device)
    y = torch.tensor(ys, device=device) if diffusion.conditioner is not None else None
    generator = torch.Generator(device).manual_seed(args.seed)
    with torch.no_grad():
        bpd = diffusion.nll(x, y=y, steps=args.timesteps or None, batch_size=64, generator=generator,
                            progress=not args.no_progress)
    s = config.sample
    labels = sample_labels(diffusion, args.samples, None)
    samples = diffusion.sample(args.samples, sampler=s.sampler, steps=None if s.sampler == "ddpm" else s.steps,
                               y=None if labels is None else labels.to(device), guidance_scale=s.guidance_scale,
                               generator=generator, progress=not args.no_progress)
    result = {
        "checkpoint": str(folder),
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_stderr": float(bpd.std() / max(1, len(bpd)) ** 0.5) if len(bpd) > 1 else None,
        "examples": count,
        "bound_terms": args.timesteps or diffusion.num_timesteps,
        "data_mean": float(x.mean()), "data_std": float(x.std()),
        "sample_mean": float(samples.mean()), "sample_std": float(samples.std()),
        "samples": args.samples, "sampler": s.sampler, "steps": s.steps,
    }
    (args.run / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"bits/dim        {result['bits_per_dim']:.3f} on {count} examples ({result['bound_terms']} terms of the bound)")
    print(f"data    mean {result['data_mean']:+.3f}  std {result['data_std']:.3f}")
    print(f"samples mean {result['sample_mean']:+.3f}  std {result['sample_std']:.3f}  "
          f"({args.samples} with {s.sampler}, {s.steps} steps)")
    print(f"written to {args.run / 'eval.json'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .build import sample_labels
    from .config import ConfigError
    from .data import save_samples

    run = args.run
    config, info, folder, diffusion = _load_run(args, args.device)
    device = diffusion.alphas_cumprod.device
    s = config.sample

    num = args.num or s.num
    sampler = args.sampler or s.sampler
    labels = [int(v) for v in args.labels.split(",")] if args.labels else None
    if labels is not None and args.num is None:
        num = len(labels)
    y = sample_labels(diffusion, num, labels if labels is not None else s.labels if num == s.num else None)
    steps = args.steps or s.steps
    if args.input is not None:  # inpainting and continuation: diffkit/inpaint_io.py
        return inpaint_io.inpaint_command(
            args, diffusion, info, sampler=sampler, steps=None if sampler == "ddpm" else steps,
            eta=args.eta if args.eta is not None else s.eta,
            guidance_scale=args.guidance if args.guidance is not None else s.guidance_scale,
            out=args.out or run / "samples", stem=f"inpaint_{args.input.stem}_{folder.name}_{sampler}")
    try:
        x = diffusion.sample(num, sampler=sampler, steps=None if sampler == "ddpm" else steps,
                             eta=args.eta if args.eta is not None else s.eta,
                             y=None if y is None else y.to(device),
                             guidance_scale=args.guidance if args.guidance is not None else s.guidance_scale,
                             generator=torch.Generator(device).manual_seed(args.seed),
                             progress=not args.no_progress)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = args.out or run / "samples"
    paths = save_samples(x, info.modality, out, stem=f"sample_{folder.name}_{sampler}", sample_rate=info.sample_rate)
    for path in paths:
        print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .registry import PluginError
    from .trainer import TrainingError

    try:
        if args.command == "plugins":
            return cmd_plugins()
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "export-demo":
            return cmd_export_demo(args)
    except (ConfigError, TrainingError, CheckpointError, PluginError) as exc:
        print(f"diffkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffkit: interrupted; checkpoints already written are intact", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
