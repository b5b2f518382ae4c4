"""``diffkit sample RUN --input FILE …``: inpainting and continuation from files, for every modality.

The engine's side is :mod:`diffkit.inpaint`; this module reads the input file, turns the region
options into a mask and writes the result in the input's form. On the command line a region names
what to FILL (a mask PNG's white pixels, a ``.npy`` mask's nonzero elements, a box, a gap, a slab);
the engine's ``mask`` is its complement (True = known).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
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
# The options of `sample` that only mean something with --input (argparse's names).
INPUT_ONLY = ("mask", "box", "gap", "extend", "slab", "resample", "jump_length", "resample_below", "reconstruction",
              "overlap")
# Sample formats a WAV file can hold that keep every sample of a file read in them.
WAV_SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
INPUT_KINDS = {"image": "a PNG image", "audio": "a WAV or FLAC file", "volume": "a .npy volume"}
VOLUME_AXES = {"d": 0, "h": 1, "w": 2}
# --extend makes at most this many windows in one call (each a full sampling run): a typo such as 1e9
# is refused at once instead of sampling for days.
MAX_EXTEND_WINDOWS = 1000


def finite_number(text: str) -> float:
    """argparse type: a finite float (nan and inf are usage errors naming the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The inpainting options of ``diffkit sample``."""
    g = parser.add_argument_group(
        "inpainting and continuation",
        "With --input, fill a region of FILE (or continue it) instead of sampling from scratch. FILE is read as "
        "the run's dataset reads its files (bit depth, channels, size, sample rate, normalisation; a change is "
        "noted) and the rest of it is kept exactly: audio in the file's sample format, volumes in the file's "
        "units. Images: --mask PNG (white = fill) or --box, or --extend PIXELS to the right; "
        "audio: --gap or --extend SECONDS; volumes: --mask NPY (nonzero = fill) or --slab. --num gives that "
        "many completions.")
    g.add_argument("--input", type=Path, metavar="FILE", help="the file to complete: PNG, WAV/FLAC or .npy (the run's modality)")
    g.add_argument("--mask", type=Path, metavar="FILE", help="the region to fill: a PNG (white) for images, a .npy (nonzero) for volumes")
    g.add_argument("--box", metavar="TOP,LEFT,HEIGHT,WIDTH", help="images: fill this rectangle (pixels)")
    g.add_argument("--gap", metavar="START:END", help="audio: fill this time range (seconds), e.g. 0.20:0.35")
    g.add_argument("--extend", type=finite_number, metavar="AMOUNT",
                   help="continue past the end: seconds for audio, pixels (to the right) for images")
    g.add_argument("--slab", metavar="AXIS:START:STOP", help="volumes: fill slices START..STOP-1 along d, h or w, e.g. d:4:8")
    g.add_argument("--resample", type=int, help="RePaint resamplings per segment (default: the sampler's)")
    g.add_argument("--jump-length", type=int, help="RePaint segment length in steps (default: the sampler's)")
    g.add_argument("--resample-below", type=float, metavar="RATIO",
                   help="RePaint: resample only where the noise-to-signal ratio σ_t/α_t is at most this (default: the sampler's)")
    g.add_argument("--reconstruction", type=finite_number, metavar="WEIGHT",
                   help="reconstruction guidance toward the known part (default off; a backward pass per call; "
                        "e.g. 50 with --resample 1: see the README)")
    g.add_argument("--overlap", type=finite_number, help="--extend: known part of each window (seconds or pixels; default half a window)")


def inpaint_command(
    args: argparse.Namespace, diffusion: Any, info: Any, *, sampler: str, steps: Optional[int], eta: float,
    guidance_scale: float, out: Path, stem: str, data: Any = None, options: Optional[dict[str, Any]] = None,
) -> int:
    """Read ``args.input``, fill the region the options name, write the result into ``out`` and print the
    paths written; returns the command's exit status. ``options`` go to the sampler (e.g. its churn)."""
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

    if guidance_scale != 1.0 and args.guidance is not None and diffusion.conditioner is None:
        raise ConfigError(f"--guidance {args.guidance:g}: this model has no conditioner; guidance needs a "
                          "class-conditional run")
    device = diffusion.alphas_cumprod.device
    given_file = read_input(args.input, info, data)
    for note in given_file.notes:
        print(f"diffkit: note: {note}", file=sys.stderr)
    x = given_file.x.to(device)  # (C, *spatial)
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
    options = dict(options or {}, sampler=sampler, steps=steps, y=y, guidance_scale=guidance_scale,
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
            windows = -(-amount // (window - overlap))
            if windows > MAX_EXTEND_WINDOWS:
                raise ConfigError(f"--extend {args.extend:g}: {windows} windows of sampling, more than the "
                                  f"{MAX_EXTEND_WINDOWS} one call makes; extend in several calls, each from the last one's output")
            length = x.shape[-1]
            check_out(out)
            result = inpaint.extend(diffusion, x[None].expand(num, *x.shape), length + amount, overlap=overlap,
                                    **options)
            filled = (length, length + amount)
        else:
            fill = region(option, getattr(args, option), x, info, args.input, data, given_file.size)
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
            check_out(out)
            out_piece = diffusion.sample(num, known=piece[None], mask=known_mask[None], **options)
            result = x[None].repeat(num, *([1] * x.ndim))
            result[..., start:start + diffusion.input_shape[-1]] = out_piece
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None

    for path in _write(given_file, result, fill if option != "extend" else None, filled if modality == "audio" else None,
                       info, Path(out), stem):
        print(path)
    return 0


def check_out(out: Path) -> None:
    """Check that the output folder takes files before any sampling (one line if not)."""
    from .files import probe_writable

    try:
        probe_writable(out)
    except FileExistsError:
        raise ConfigError(f"out: '{out}' is a file; choose a folder") from None
    except OSError as exc:
        raise ConfigError(f"out: cannot write into '{out}': {exc.strerror or exc}") from None


def _write(given: InputFile, result, fill, filled, info, out: Path, stem: str) -> list[Path]:
    """The result in the input's form; images also show the input (its hole mid-grey) first. Audio keeps the
    file's sample format when the run read it unchanged; volumes are written in the file's units, the known
    voxels exactly as stored."""
    import numpy as np
    import torch

    from .data import VolumeFolder, save_image_grid, save_spectrogram_png, save_volume_slices_png, save_wav
    from .files import atomic_path

    x = given.x
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
        # Kept samples are written back exactly when the file's format holds them (16/24/32-bit, float).
        subtype = given.subtype if given.subtype in WAV_SUBTYPES and given.raw is not None else "PCM_16"
        waves = result.detach().cpu()
        if given.raw is not None:
            raw = torch.from_numpy(given.raw)
            keep = ~fill.cpu() if fill is not None else torch.arange(waves.shape[-1]) < raw.shape[-1]
            waves = torch.where(keep, torch.nn.functional.pad(raw, (0, waves.shape[-1] - raw.shape[-1])), waves.double())
        paths = [save_wav(wave, out / f"{stem}_{i:04d}.wav", rate, subtype=subtype) for i, wave in enumerate(waves)]
        return paths + [save_spectrogram_png(result, out / f"{stem}_spectrogram.png", rate, marks=[filled])]
    dtype = given.raw.dtype if given.raw.dtype.kind == "f" else np.dtype(np.float32)
    paths = []
    for i, volume in enumerate(result):
        made = VolumeFolder.denormalize(volume.detach().cpu(), given.bounds).numpy()
        kept = np.where(fill.cpu().numpy(), made, given.raw).astype(dtype)
        with atomic_path(out / f"{stem}_{i:04d}.npy") as tmp:
            np.save(tmp, kept)
        paths.append(out / f"{stem}_{i:04d}.npy")
    return paths + [save_volume_slices_png(result, out / f"{stem}_slices.png")]


# What each folder dataset's reader takes from the run's own data options (a built-in set uses the defaults).
READER_OPTIONS = {"image": ("resize",), "audio": (), "volume": ("normalize",)}
FOLDER_DATASETS = {"image": "image_folder", "audio": "audio_folder", "volume": "volume_folder"}


@dataclass
class InputFile:
    """An ``--input`` file as the run reads it: ``x`` (C, *spatial) in [-1, 1], and what writing it back needs."""

    x: "torch.Tensor"
    subtype: Optional[str] = None  # audio: the file's sample format, kept when the run reads it unchanged
    raw: Any = None  # the samples / voxels as stored (audio read unchanged by the run; volumes), kept exactly where known
    bounds: Any = None  # volumes: the normalisation's (lo, hi), to write the fill in the file's units
    notes: list[str] = field(default_factory=list)  # how the file was changed on reading, printed to the user
    size: Optional[tuple[int, int]] = None  # images: the file's own (H, W), which a mask may also have


def _reader(info: Any, data: Any, **fixed: Any) -> Any:
    """The folder dataset's reader for this run's modality, with the run's own options where it had them."""
    from .data import AudioFolder, ImageFolder, VolumeFolder

    modality = info.modality
    folder_run = getattr(data, "dataset", None) == FOLDER_DATASETS[modality]
    options = dict(data.options or {}) if folder_run else {}
    kept = {k: options[k] for k in READER_OPTIONS[modality] if k in options}
    shape = tuple(info.example_shape)
    if modality == "image":
        return ImageFolder.reader(**{"size": shape[1:], "channels": shape[0], "convert": True, **kept, **fixed})
    if modality == "audio":
        return AudioFolder.reader(**{"sample_rate": info.sample_rate, "length": 1, "channels": shape[0], **kept, **fixed})
    # A built-in set's volumes are already in [-1, 1]: read as they are, not stretched to it.
    default = {} if folder_run else {"normalize": "none"}
    return VolumeFolder.reader(**{"shape": shape[1:], "channels": shape[0], **default, **kept, **fixed})


def read_input(path: Path, info: Any, data: Any = None) -> InputFile:
    """The file as the run's dataset would read it (decoding, checks, channels, size, sample rate,
    normalisation), refused in one line where that dataset would refuse it."""
    from .data import DataError

    if not path.is_file():
        raise ConfigError(f"--input: '{path}' not found")
    suffix = path.suffix.lower()
    accepted = {"image": (".png",), "audio": (".wav", ".flac"), "volume": (".npy",)}[info.modality]
    if suffix not in accepted:
        raise ConfigError(f"--input: '{path}' is not {INPUT_KINDS[info.modality]}, which this {info.modality} run needs")
    reader = _reader(info, data)
    try:
        if info.modality == "image":
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
            result = InputFile(reader.read(path), size=(height, width))
            if (height, width) != tuple(info.example_shape[1:]):
                result.notes.append(f"'{path}' is {height}x{width} pixels (HxW); read at the run's "
                                    f"{info.example_shape[1]}x{info.example_shape[2]} (resize={reader.resize!r})")
            return result
        if info.modality == "audio":
            import soundfile as sf

            header = sf.info(str(path))
            result = InputFile(reader.read(path), subtype=header.subtype)
            if header.samplerate != info.sample_rate:
                result.notes.append(f"'{path}' is {header.samplerate} Hz; read and written at the run's {info.sample_rate} Hz")
            if header.channels != info.example_shape[0]:
                result.notes.append(f"'{path}' has {header.channels} channels; mixed down to the run's mono")
            if not result.notes:  # the samples as stored (float64 holds 32-bit PCM exactly; float32 does not)
                result.raw = sf.read(str(path), dtype="float64", always_2d=True)[0].T
            return result
        raw = reader.array(path)
        x, bounds = reader.normalized(path, raw)
        return InputFile(x, raw=raw, bounds=bounds)
    except DataError as exc:
        raise ConfigError(f"--input: {exc}") from None


def region(option: str, value: Any, x: "torch.Tensor", info: Any, input_path: Path, data: Any = None,
           input_size: Optional[tuple[int, int]] = None) -> "torch.Tensor":
    """The region to fill as a boolean tensor shaped like ``x`` (C, *spatial), checked to be neither empty nor all."""
    import torch

    spatial = tuple(x.shape[1:])
    fill = torch.zeros(spatial, dtype=torch.bool)
    if option == "mask":
        fill = _read_mask(value, info, spatial, input_path, data, input_size or spatial)
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
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ConfigError(f"--gap {value}: expected finite times in seconds, e.g. 0.20:0.35")
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


def _read_mask(path: Path, info: Any, spatial: tuple[int, ...], input_path: Path, data: Any,
               input_size: tuple[int, ...]) -> "torch.Tensor":
    import numpy as np
    import torch

    from .data import DataError

    if not path.is_file():
        raise ConfigError(f"--mask: '{path}' not found")
    try:
        if info.modality == "image":
            if path.suffix.lower() != ".png":
                raise ConfigError(f"--mask: '{path}' is not a PNG; image masks are PNGs, white = fill")
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
            # The input's own size (the mask is then resized with it) or the size the run reads it at.
            sizes = [tuple(input_size)] + ([spatial] if spatial != tuple(input_size) else [])
            if (height, width) not in sizes:
                raise ConfigError(f"--mask: '{path}' is {height}x{width} pixels (HxW); expected "
                                  + " or ".join(f"{h}x{w}" for h, w in sizes) + f", the size of '{input_path}'"
                                  + (" or the run's" if len(sizes) > 1 else ""))
            # Read like the input, at its own bit depth (a 16-bit mask is not clipped to 8 bits): white = fill.
            return _reader(info, data, channels=1).read(path)[0] >= 0
        if path.suffix.lower() != ".npy":
            raise ConfigError(f"--mask: '{path}' is not a .npy array; volume masks are .npy, nonzero = fill")
        from .data.volumes import load_npy

        fill = load_npy(path)
        if fill.dtype.kind not in "biuf":
            raise ConfigError(f"--mask: '{path}' has dtype {fill.dtype}; expected numbers (nonzero = fill)")
        if fill.dtype.kind == "f" and not np.isfinite(fill).all():
            raise ConfigError(f"--mask: '{path}' holds NaN or infinite values; expected 0 (keep) or nonzero (fill)")
        if fill.ndim == len(spatial) + 1 and fill.shape[0] == 1:
            fill = fill[0]
        fill = fill != 0
    except ConfigError:
        raise
    except DataError as exc:
        raise ConfigError(f"--mask: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"--mask: cannot read '{path}': {exc}") from None
    if tuple(fill.shape) != spatial:
        raise ConfigError(f"--mask: '{path}' has shape {tuple(fill.shape)}, the input has {spatial}")
    return torch.from_numpy(np.ascontiguousarray(fill))
