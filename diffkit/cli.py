"""The ``diffkit`` command: plugins, train, sample, eval, export-demo — a thin layer over the Python API."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from . import inpaint_io
from .config import MAX_SEED
from .data.audio import DC_OFFSETS, DEFAULT_DC_OFFSET, DEFAULT_NYQUIST, NYQUIST_CHOICES

EXAMPLES = """examples:
  diffkit plugins
  diffkit train examples/shapes.toml
  diffkit train examples/shapes.toml --set train.steps=200 --set run.dir=runs/quick
  diffkit train examples/shapes.toml --resume          # continue the run in its run.dir
  diffkit sample runs/shapes --num 64 --sampler dpm-solver++ --steps 20
  diffkit export-demo tones data/tones --num 256      # a folder of WAV files to train on
"""
# Set to 1 to see the Python traceback of an unexpected error.
DEBUG_ENV = "DIFFKIT_DEBUG"
# The largest count (samples, examples, steps, …) an argument takes: beyond it, a typo, not a plan.
MAX_COUNT = 10**9


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and the exit status 2), like every other diffkit error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _int_in(low: int, high: int, what: str, out_of_range: str):
    """An argparse type: an integer in [low, high], or one line saying what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {out_of_range}, got {value}")
        return value

    return parse


_positive_int = _int_in(1, MAX_COUNT, "a positive integer", f"a positive integer up to {MAX_COUNT:,}")
_seed = _int_in(0, MAX_SEED, f"an integer in 0…{MAX_SEED}", f"an integer in 0…{MAX_SEED}")
_timestep = _int_in(0, MAX_COUNT, "a timestep (an integer >= 0)", f"a timestep from 0 to {MAX_COUNT:,}")


def _at_least_zero(expected: str):
    """argparse type: a finite number >= 0; a negative one is refused as not ``expected``."""

    def parse(text: str) -> float:
        value = inpaint_io.finite_number(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_noise_gate = _at_least_zero("a number of dB >= 0 (0: off)")  # decibels under the loudest frame
_churn = _at_least_zero("a number >= 0 (0: the ODE)")  # the SDE sampler's fresh noise per step


def _labels(text: str) -> list[int]:
    parts = text.split(",")
    if not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices such as 0,3,3, got {text!r}")
    return [int(p) for p in parts]


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="diffkit",
        description="Train and sample DDPM diffusion models for images, audio and volumes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("plugins", help="list every backbone and conditioner with the distribution providing it")

    t = sub.add_parser("train", help="train from a TOML config file",
                       description="Train the model a TOML config describes; writes checkpoints, samples, "
                                   "metrics.jsonl and loss.png into run.dir. SIGTERM or Ctrl-C saves a checkpoint "
                                   "and stops; --resume continues.")
    t.add_argument("config", type=Path, help="the TOML config file (see examples/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=500 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.dir")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("sample", help="write samples from a trained run",
                       description="Write numbered samples in the data's own form: PNG for images, WAV for audio, "
                                   ".npy for volumes, plus one summary picture. Each call writes into a folder "
                                   "named after its settings (never overwriting another call's files); a re-run "
                                   "fills in what is missing. Defaults come from the run's [sample] config. Under "
                                   "torchrun the work is split over the processes, with identical results.")
    s.add_argument("run", type=Path, help="a run directory (uses its newest checkpoint)")
    s.add_argument("--checkpoint", help="a checkpoint folder, or a step number of the run")
    # -n as well: under torchrun, "--num" is ambiguous with torchrun's own --numa-binding.
    s.add_argument("-n", "--num", type=_positive_int, help="number of samples")
    s.add_argument("--sampler", help="ddpm, ddim, dpm-solver++, dpm-solver++-sde or unipc")
    s.add_argument("--steps", type=_positive_int, help="network calls per sample")
    s.add_argument("--eta", type=inpaint_io.finite_number, help="DDIM stochasticity (0: deterministic)")
    s.add_argument("--churn", type=_churn,
                   help="dpm-solver++-sde: fresh noise per step, 0: the ODE (default: the run's [sample] churn, "
                        "itself 1 by default)")
    s.add_argument("--churn-stop", type=_timestep,
                   help="dpm-solver++-sde: no fresh noise for the steps that land below this timestep (default: the "
                        "run's [sample] churn_stop, itself 0: churn to the end)")
    s.add_argument("--labels", type=_labels, help="comma-separated class indices, one per sample (conditional models)")
    s.add_argument("--guidance", type=inpaint_io.finite_number, help="classifier-free guidance scale (1: none)")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    s.add_argument("--dc-offset", choices=DC_OFFSETS,
                   help="audio: 'remove' each clip's mean before writing its WAV or 'keep' it "
                        f"(default: the run's [sample] dc_offset, itself '{DEFAULT_DC_OFFSET}' by default)")
    s.add_argument("--nyquist", choices=NYQUIST_CHOICES,
                   help="audio: 'remove' each clip's Nyquist-rate component (+a, -a, …) before writing its WAV or "
                        f"'keep' it (default: the run's [sample] nyquist, itself '{DEFAULT_NYQUIST}' by default)")
    s.add_argument("--noise-gate", type=_noise_gate, metavar="DB",
                   help="audio: silence the parts of each clip DB decibels quieter than its loudest, 0: off "
                        "(default: the run's [sample] noise_gate, itself 0 by default)")
    s.add_argument("--out", type=Path, help="output folder (default: RUN/samples/<settings>)")
    s.add_argument("--seed", type=_seed, default=0, help="seed of the sampling noise (default 0)")
    s.add_argument("--batch-size", type=_positive_int, help="samples per network call (default: by memory)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to sample (default auto: CUDA when available, else the CPU)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    inpaint_io.add_arguments(s)  # --input FILE with --mask/--box/--gap/--extend/--slab: diffkit/inpaint_io.py

    v = sub.add_parser("eval", help="bits/dim and sample statistics of a trained run",
                       description="Evaluate a run: the variational bound in bits per dimension on data examples "
                                   "(Ho et al. 2020, 8-bit data in [-1, 1]) and the mean / std of generated samples "
                                   "against the data's. Writes RUN/eval.json.")
    v.add_argument("run", type=Path, help="a run directory (uses its newest checkpoint)")
    v.add_argument("--checkpoint", help="a checkpoint folder, or a step number of the run")
    v.add_argument("--examples", type=_positive_int, default=64, help="data examples for bits/dim (default 64)")
    v.add_argument("--timesteps", type=int, default=100,
                   help="terms of the bound to evaluate, stratified and unbiased (default 100; 0: all T)")
    v.add_argument("--samples", type=_positive_int, default=64, help="generated samples for the statistics (default 64)")
    v.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    v.add_argument("--seed", type=_seed, default=0, help="seed of the examples drawn and of the sampling noise (default 0)")
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to evaluate (default auto: CUDA when available, else the CPU)")
    v.add_argument("--no-progress", action="store_true", help="no progress bars")

    x = sub.add_parser("export-diffusers", help="write a run's unet2d as a diffusers UNet2DModel folder",
                       description="Write a trained unet2d run in diffusers' layout (config.json, "
                                   "diffusion_pytorch_model.safetensors, scheduler_config.json), readable by "
                                   "diffusers' UNet2DModel.from_pretrained and by diffkit sample.")
    x.add_argument("run", type=Path, help="a run directory whose backbone is unet2d")
    x.add_argument("out", type=Path, help="output folder (created; must be empty or new)")
    x.add_argument("--checkpoint", help="a checkpoint folder, or a step number of the run")
    x.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")

    e = sub.add_parser("export-demo", help="write a built-in demo set as real files (PNG, WAV or .npy)",
                       description="Write a built-in demo dataset into class sub-folders, to try the folder "
                                   "datasets (image_folder, audio_folder, volume_folder) without data of your own.")
    e.add_argument("dataset", help="a built-in set: shapes, tones, solids or digits")
    e.add_argument("out", type=Path, help="output folder (created; must be empty or new)")
    e.add_argument("--num", type=_positive_int, default=128, help="number of examples (default 128)")
    return p


BUILTIN_DEMOS = ("shapes", "tones", "solids", "digits")


def cmd_export_demo(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .data import create_dataset, save_images, save_volume, save_wav

    if args.dataset not in BUILTIN_DEMOS:
        raise ConfigError(f"export-demo: unknown demo set {args.dataset!r}; choose one of {', '.join(BUILTIN_DEMOS)}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ConfigError(f"export-demo: '{args.out}' is {'a file' if not args.out.is_dir() else 'not empty'}; "
                          "choose a new folder")
    try:
        dataset = create_dataset(args.dataset, **({} if args.dataset == "digits" else {"num_examples": args.num}))
    except ModuleNotFoundError as exc:
        raise ConfigError(f"export-demo: {exc}") from None
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


def cmd_export_diffusers(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .pretrained import export_diffusers
    from .run import Run

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ConfigError(f"export-diffusers: '{args.out}' is not a new or empty folder; choose another")
    diffusion = Run.open(args.run).diffusion(ema=False if args.raw else None, checkpoint=args.checkpoint, device="cpu")
    folder = export_diffusers(diffusion, args.out)
    print(f"wrote a diffusers UNet2DModel to {folder}")
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
    for clash in registry.clashes.values():
        print(f"disabled: {clash}")
    for failure in registry.failures:
        print(f"failed: {failure}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    run = train(args.config, overrides=args.overrides, resume=args.resume, progress=not args.no_progress)
    print(f"run written to {run.path}: checkpoints/, samples/, metrics.jsonl, loss.png")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .build import churn_options
    from .config import ConfigError
    from .run import Run

    run = Run.open(args.run)
    if args.input is None:
        given = [f"--{name.replace('_', '-')}" for name in inpaint_io.INPUT_ONLY if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to inpainting and "
                              "continuation only: add --input FILE (the file to complete)")
    if args.input is not None:  # inpainting and continuation: diffkit/inpaint_io.py
        for flag, value in (("--dc-offset", args.dc_offset), ("--nyquist", args.nyquist),
                            ("--noise-gate", args.noise_gate)):
            if value is not None:
                raise ConfigError(f"{flag} applies to clips sampled from scratch, not with --input "
                                  "(inpainting keeps the known samples exactly as read)")
        s = run.sample_defaults()
        sampler = args.sampler or s.sampler
        folder = run.checkpoint(args.checkpoint)
        diffusion = run.diffusion(ema=False if args.raw else None, checkpoint=folder, device=args.device)
        # Like `sample`, a folder named after every setting: another call never overwrites these files.
        settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in ("out", "no_progress", "run")}
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:8]
        out = args.out or run.samples_dir / f"inpaint-{args.input.stem}-{folder.name}-{sampler}-{digest}"
        try:
            return inpaint_io.inpaint_command(
                args, diffusion, run.info, sampler=sampler, steps=args.steps or s.steps,
                eta=args.eta if args.eta is not None else s.eta,
                guidance_scale=args.guidance if args.guidance is not None else s.guidance_scale,
                options=churn_options(sampler, {"churn": args.churn, "churn_stop": args.churn_stop}, s),
                out=out, stem=f"inpaint_{args.input.stem}_{folder.name}_{sampler}", data=run.config.data)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    paths = run.sample(
        args.num, sampler=args.sampler, steps=args.steps, eta=args.eta, labels=args.labels, guidance=args.guidance,
        seed=args.seed, out=args.out, ema=False if args.raw else None, checkpoint=args.checkpoint,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, dc_offset=args.dc_offset,
        nyquist=args.nyquist, noise_gate=args.noise_gate, churn=args.churn, churn_stop=args.churn_stop)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{len(paths) - 1} samples in {paths[0].parent}; summary picture {paths[-1]}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .run import Run

    if args.timesteps < 0:
        raise ConfigError(f"eval --timesteps: expected 0 (all T) or a positive number of terms, got {args.timesteps}")
    run = Run.open(args.run)
    r = run.evaluate(examples=args.examples, timesteps=args.timesteps or None, samples=args.samples, seed=args.seed,
                     ema=False if args.raw else None, checkpoint=args.checkpoint, device=args.device,
                     progress=not args.no_progress)
    print(f"bits/dim        {r['bits_per_dim']:.3f} on {r['examples']} examples ({r['bound_terms']} terms of the bound)")
    print(f"data    mean {r['data_mean']:+.3f}  std {r['data_std']:.3f}")
    print(f"samples mean {r['sample_mean']:+.3f}  std {r['sample_std']:.3f}  "
          f"({r['samples']} with {r['sampler']}, {r['steps'] or 'all'} steps)")
    print(f"written to {run.eval_path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already printed on one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .pretrained import PretrainedError
    from .registry import PluginError
    from .run import RunError
    from .trainer import TrainingError, TrainingStopped

    commands = {"plugins": lambda: cmd_plugins(), "train": lambda: cmd_train(args), "sample": lambda: cmd_sample(args),
                "eval": lambda: cmd_eval(args), "export-demo": lambda: cmd_export_demo(args),
                "export-diffusers": lambda: cmd_export_diffusers(args)}
    try:
        return commands[args.command]()
    except TrainingStopped as exc:
        print(f"diffkit: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except (ConfigError, TrainingError, CheckpointError, PluginError, RunError, PretrainedError, DataError) as exc:
        print(f"diffkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffkit: interrupted; checkpoints already written are intact", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as exc:
        where = f"'{exc.filename}': " if exc.filename else ""
        print(f"diffkit: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, with the way to see more
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(exc).split())[:300]
        print(f"diffkit: internal error: {type(exc).__name__}: {message} (a bug in diffkit or a plugin; set "
              f"{DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
