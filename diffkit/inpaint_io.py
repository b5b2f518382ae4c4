"""``diffkit sample RUN --input FILE …``: inpainting and continuation from files, for every modality.

The engine's side is :mod:`diffkit.inpaint`; this module reads the input file, turns the region
options into a mask and writes the result in the input's form. On the command line a region names
what to FILL (a mask PNG's white pixels, a ``.npy`` mask's nonzero elements, a box, a gap, a slab);
the engine's ``mask`` is its complement (True = known).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .config import ConfigError

if TYPE_CHECKING:  # torch and numpy are imported where used: the CLI builds its parser without them
    import torch

# Which region options each modality takes.
REGION_OPTIONS: dict[str, tuple[str, ...]] = {
    "image": ("mask", "box", "extend"),
    "audio": ("gap", "extend"),
    "volume": ("mask", "slab"),
}
INPUT_KINDS = {"image": "a PNG image", "audio": "a WAV or FLAC file", "volume": "a .npy volume"}
VOLUME_AXES = {"d": 0, "h": 1, "w": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The inpainting options of ``diffkit sample``."""
    g = parser.add_argument_group(
        "inpainting and continuation",
        "With --input, fill a region of FILE (or continue it) instead of sampling from scratch; the rest of "
        "FILE is kept exactly. Images: --mask PNG (white = fill) or --box, or --extend PIXELS to the right; "
        "audio: --gap or --extend SECONDS; volumes: --mask NPY (nonzero = fill) or --slab. --num gives that "
        "many completions.")
    g.add_argument("--input", type=Path, metavar="FILE", help="the file to complete: PNG, WAV/FLAC or .npy (the run's modality)")
    g.add_argument("--mask", type=Path, metavar="FILE", help="the region to fill: a PNG (white) for images, a .npy (nonzero) for volumes")
    g.add_argument("--box", metavar="TOP,LEFT,HEIGHT,WIDTH", help="images: fill this rectangle (pixels)")
    g.add_argument("--gap", metavar="START:END", help="audio: fill this time range (seconds), e.g. 0.20:0.35")
    g.add_argument("--extend", type=float, metavar="AMOUNT",
                   help="continue past the end: seconds for audio, pixels (to the right) for images")
    g.add_argument("--slab", metavar="AXIS:START:STOP", help="volumes: fill slices START..STOP-1 along d, h or w, e.g. d:4:8")
    g.add_argument("--resample", type=int, help="RePaint resamplings per segment (default: the sampler's)")
    g.add_argument("--jump-length", type=int, help="RePaint segment length in steps (default: the sampler's)")
    g.add_argument("--resample-below", type=float, metavar="RATIO",
                   help="RePaint: resample only where the noise-to-signal ratio σ_t/α_t is at most this (default: the sampler's)")
    g.add_argument("--reconstruction", type=float, metavar="WEIGHT",
                   help="reconstruction guidance toward the known part (default off; a backward pass per call; "
                        "e.g. 50 with --resample 1: see the README)")
    g.add_argument("--overlap", type=float, help="--extend: known part of each window (seconds or pixels; default half a window)")


def inpaint_command(
    args: argparse.Namespace, diffusion: Any, info: Any, *, sampler: str, steps: Optional[int], eta: float,
    guidance_scale: float, out: Path, stem: str,
) -> int:
    """Read ``args.input``, fill the region the options name, write the result into ``out`` and print the
    paths written; returns the command's exit status."""
    import torch

    modality = info.modality
    given = [name for name in ("mask", "box", "gap", "extend", "slab") if getattr(args, name) is not None]
    if not given:
        raise ConfigError(f"--input needs a region to fill: {' or '.join('--' + n for n in REGION_OPTIONS[modality])} "
                          f"for {modality} runs")
    if len(given) > 1:
        raise ConfigError(f"give one region, not {' and '.join('--' + n for n in given)}")
    option = given[0]
    if option not in REGION_OPTIONS[modality]:
        raise ConfigError(f"--{option} does not apply to {modality} runs; use "
                          f"{' or '.join('--' + n for n in REGION_OPTIONS[modality])}")
    if args.overlap is not None and option != "extend":
        raise ConfigError("--overlap applies to --extend only")

    device = diffusion.alphas_cumprod.device
    x = read_input(args.input, info).to(device)  # (C, *spatial)
    labels = list(args.labels) if args.labels else None  # parsed by the CLI into class indices
    num = args.num or (len(labels) if labels else 1)
    y = None  # a conditional run without --labels fills in unconditionally (the null label)
    if labels:
        from .build import sample_labels

        y = sample_labels(diffusion, num, labels).to(device)
    elif guidance_scale != 1.0:
        if args.guidance is not None:
            raise ConfigError(f"--guidance {args.guidance:g} needs --labels: without them a conditional run "
                              "fills in with its null label, which guidance has nothing to steer toward")
        guidance_scale = 1.0  # the run's [sample] guidance is for labelled samples; none were given
    options = dict(sampler=sampler, steps=steps, y=y, guidance_scale=guidance_scale,
                   generator=torch.Generator(device).manual_seed(args.seed), progress=not args.no_progress,
                   resample=args.resample, jump_length=args.jump_length, resample_below=args.resample_below,
                   reconstruction=args.reconstruction)
    if eta:
        options["eta"] = eta
    rate = info.sample_rate
    scale = rate if modality == "audio" else 1

    from . import inpaint

    try:
        if option == "extend":
            window = diffusion.input_shape[-1]
            amount = round(args.extend * scale)
            overlap = window // 2 if args.overlap is None else round(args.overlap * scale)
            if amount < 1:
                raise ConfigError(f"--extend {args.extend:g}: nothing to add")
            if not 1 <= overlap < window:
                raise ConfigError(f"--overlap {args.overlap:g}: must leave between 1 and {window - 1} "
                                  f"{'samples' if modality == 'audio' else 'pixels'} of the model's window known")
            if x.shape[-1] < overlap:
                raise ConfigError(f"'{args.input}' is {x.shape[-1]} long along its last axis, shorter than the "
                                  f"overlap {overlap}: nothing to continue from")
            if tuple(x.shape[:-1]) != tuple(diffusion.input_shape[:-1]):
                raise ConfigError(f"'{args.input}' has shape {tuple(x.shape)}; this run continues "
                                  f"{tuple(diffusion.input_shape[:-1])} × any length")
            length = x.shape[-1]
            result = inpaint.extend(diffusion, x[None].expand(num, *x.shape), length + amount, overlap=overlap,
                                    **options)
            filled = (length, length + amount)
        else:
            fill = region(option, getattr(args, option), x, info, args.input)
            start, result = 0, None
            if modality == "audio":  # a window of the model's length around the gap, in a file of any length
                window = diffusion.input_shape[-1]
                if x.shape[-1] < window:
                    raise ConfigError(f"'{args.input}' has {x.shape[-1]} samples, fewer than the model's window of "
                                      f"{window} ({window / rate:.3f} s)")
                where = fill.nonzero()[:, -1]
                first, last = int(where.min()), int(where.max())
                if last - first + 1 >= window:
                    raise ConfigError(f"--gap {args.gap}: {(last - first + 1) / rate:.3f} s is not shorter than the "
                                      f"model's window of {window / rate:.3f} s")
                start = min(max(0, (first + last + 1) // 2 - window // 2), x.shape[-1] - window)
                filled = (first, last + 1)
            elif tuple(x.shape) != tuple(diffusion.input_shape):
                raise ConfigError(f"'{args.input}' has shape {tuple(x.shape)}, this run makes {tuple(diffusion.input_shape)}")
            piece = x[..., start:start + diffusion.input_shape[-1]]
            known_mask = ~fill[..., start:start + diffusion.input_shape[-1]]
            out_piece = diffusion.sample(num, known=piece[None], mask=known_mask[None], **options)
            result = x[None].repeat(num, *([1] * x.ndim))
            result[..., start:start + diffusion.input_shape[-1]] = out_piece
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None

    for path in _write(x, result, fill if option != "extend" else None, filled if modality == "audio" else None,
                       info, Path(out), stem):
        print(path)
    return 0


def _write(x, result, fill, filled, info, out: Path, stem: str) -> list[Path]:
    """The result in the input's form; images also show the input (its hole mid-grey) first."""
    import torch

    from .data import save_image_grid, save_spectrogram_png, save_volume, save_volume_slices_png, save_wav

    modality, rate = info.modality, info.sample_rate
    if modality == "image":
        shown = x[None].clone()
        if fill is not None:
            shown = torch.where(fill[None], torch.zeros_like(shown), shown)  # the hole, mid-grey
        else:
            shown = torch.nn.functional.pad(shown, (0, result.shape[-1] - x.shape[-1]), value=0.0)
        grid = torch.cat([shown, result.to(shown.dtype)])
        scale_up = max(1, 64 // max(grid.shape[2:]))
        grid = grid.repeat_interleave(scale_up, -1).repeat_interleave(scale_up, -2)
        return [save_image_grid(grid, out / f"{stem}.png", nrow=len(grid))]
    if modality == "audio":
        paths = [save_wav(wave, out / f"{stem}_{i:04d}.wav", rate) for i, wave in enumerate(result)]
        return paths + [save_spectrogram_png(result, out / f"{stem}_spectrogram.png", rate, marks=[filled])]
    paths = [save_volume(volume, out / f"{stem}_{i:04d}.npy") for i, volume in enumerate(result)]
    return paths + [save_volume_slices_png(result, out / f"{stem}_slices.png")]


def read_input(path: Path, info: Any) -> "torch.Tensor":
    """The file as a (C, *spatial) float tensor in [-1, 1], with the run's channels, image size and sample rate."""
    import numpy as np
    import torch

    channels = info.example_shape[0]
    if not path.is_file():
        raise ConfigError(f"--input: '{path}' not found")
    suffix = path.suffix.lower()
    try:
        if info.modality == "image" and suffix == ".png":
            from PIL import Image

            image = Image.open(path).convert("L" if channels == 1 else "RGB")
            height, width = info.example_shape[1:]
            if image.size != (width, height):  # e.g. 8×8 digits for a 16×16 run: resized, as the datasets do
                image = image.resize((width, height), Image.BILINEAR)
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
            return x[None] if channels == 1 else x.permute(2, 0, 1).contiguous()
        if info.modality == "audio" and suffix in (".wav", ".flac"):
            import soundfile as sf
            import torchaudio.functional

            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            x = torch.from_numpy(data.T.copy()).clamp(-1, 1)
            if channels == 1:
                x = x.mean(0, keepdim=True)
            elif x.shape[0] != channels:
                raise ConfigError(f"--input: '{path}' has {x.shape[0]} channels, the run's audio has {channels}")
            if rate != info.sample_rate:
                x = torchaudio.functional.resample(x, rate, info.sample_rate)
            return x
        if info.modality == "volume" and suffix == ".npy":
            x = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
            if x.ndim == len(info.example_shape) - 1 and channels == 1:
                x = x[None]
            if x.ndim != len(info.example_shape):
                raise ConfigError(f"--input: '{path}' has shape {tuple(x.shape)}; expected (C, D, H, W) or (D, H, W)")
            return x.clamp(-1, 1)
    except ConfigError:
        raise
    except Exception as exc:  # unreadable or damaged: one line naming the file
        raise ConfigError(f"--input: cannot read '{path}': {exc}") from None
    raise ConfigError(f"--input: '{path}' is not {INPUT_KINDS[info.modality]}, which this {info.modality} run needs")


def region(option: str, value: Any, x: "torch.Tensor", info: Any, input_path: Path) -> "torch.Tensor":
    """The region to fill as a boolean tensor shaped like ``x`` (C, *spatial), checked to be neither empty nor all."""
    import torch

    spatial = tuple(x.shape[1:])
    fill = torch.zeros(spatial, dtype=torch.bool)
    if option == "mask":
        fill = _read_mask(value, info.modality, spatial)
    elif option == "box":
        try:
            top, left, height, width = (int(v) for v in value.split(","))
        except ValueError:
            raise ConfigError(f"--box {value}: expected TOP,LEFT,HEIGHT,WIDTH in pixels, e.g. 4,0,4,8") from None
        if height < 1 or width < 1:
            raise ConfigError(f"--box {value}: height and width must be positive")
        fill[max(0, top):max(0, top + height), max(0, left):max(0, left + width)] = True
    elif option == "gap":
        try:
            start, end = (float(v) for v in value.split(":"))
        except ValueError:
            raise ConfigError(f"--gap {value}: expected START:END in seconds, e.g. 0.20:0.35") from None
        rate = info.sample_rate
        first, stop = max(0, round(start * rate)), min(spatial[-1], round(end * rate))
        if end <= start:
            raise ConfigError(f"--gap {value}: END must be after START")
        fill[..., first:stop] = True
    elif option == "slab":
        parts = value.split(":")
        axis = VOLUME_AXES.get(parts[0].lower()) if len(parts) == 3 else None
        try:
            start, stop = int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            axis = None
        if axis is None:
            raise ConfigError(f"--slab {value}: expected AXIS:START:STOP with AXIS one of d, h, w, e.g. d:4:8")
        index = [slice(None)] * 3
        index[axis] = slice(max(0, start), max(0, stop))
        fill[tuple(index)] = True
    name = f"--{option} {value}"
    if not bool(fill.any()):
        raise ConfigError(f"{name}: nothing to fill in '{input_path}' (shape {tuple(x.shape)})")
    if bool(fill.all()):
        raise ConfigError(f"{name}: covers all of '{input_path}', nothing is known to complete from")
    return fill[None].expand(x.shape)


def _read_mask(path: Path, modality: str, spatial: tuple[int, ...]) -> "torch.Tensor":
    import numpy as np
    import torch

    if not path.is_file():
        raise ConfigError(f"--mask: '{path}' not found")
    try:
        if modality == "image":
            if path.suffix.lower() != ".png":
                raise ConfigError(f"--mask: '{path}' is not a PNG; image masks are PNGs, white = fill")
            from PIL import Image

            fill = np.asarray(Image.open(path).convert("L")) >= 128
        else:
            if path.suffix.lower() != ".npy":
                raise ConfigError(f"--mask: '{path}' is not a .npy array; volume masks are .npy, nonzero = fill")
            fill = np.load(path, allow_pickle=False)
            if fill.ndim == len(spatial) + 1 and fill.shape[0] == 1:
                fill = fill[0]
            fill = fill != 0
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--mask: cannot read '{path}': {exc}") from None
    if tuple(fill.shape) != spatial:
        raise ConfigError(f"--mask: '{path}' has shape {tuple(fill.shape)}, the input has {spatial}")
    return torch.from_numpy(np.ascontiguousarray(fill))
