"""Pretrained models in diffusers' folder layout, in and out, without diffusers.

A diffusers ``UNet2DModel`` of the DDPM family (``DownBlock2D`` / ``AttnDownBlock2D`` levels, the
mirror-image ``UpBlock2D`` / ``AttnUpBlock2D``, ``UNetMidBlock2D``, sinusoidal timestep embedding:
the published google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256 models) is the same
network as diffkit's ``unet2d`` under other names; its ``scheduler_config.json`` gives the β schedule,
the objective, the DDPM sampler's variance and the x0 clipping. This module reads both files (JSON and
safetensors: diffusers itself is not needed) into a :class:`Pretrained`, builds the engine from it, and
writes a compatible diffkit ``unet2d`` back out. Anything else is refused with one line naming it.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_weights, save_weights
from .diffusion import GaussianDiffusion
from .layers import AttentionBlock, Downsample
from .registry import create_backbone
from .schedules import SCHEDULES, cosine_beta_schedule

PathLike = Union[str, Path]

MODEL_CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"  # sharded weights
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"  # refused: diffkit does not unpickle
SCHEDULER_CONFIG = "scheduler_config.json"
# A pipeline folder keeps each component in a subfolder of its own.
UNET_SUBFOLDER, SCHEDULER_SUBFOLDER = "unet", "scheduler"
# The diffusers release whose format export_diffusers writes (and the tests compare against).
DIFFUSERS_VERSION = "0.42.1"

# UNet2DModel's defaults (diffusers 0.42.1), for keys an older config.json leaves out.
_UNET2D_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0,
    "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}
# Keys whose only representable value is fixed (a tuple: any of these).
_UNET2D_FIXED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1, "downsample_type": "conv", "upsample_type": "conv", "act_fn": ("silu", "swish"),
    "resnet_time_scale_shift": "default", "class_embed_type": None, "num_class_embeds": None,
}
_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type → has attention
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
# diffusers' downsample_padding ↔ unet's downsample_padding (diffkit.layers.DOWNSAMPLE_PADDINGS)
_PADDINGS = {1: "symmetric", 0: "same"}

# DDPMScheduler's defaults, for keys (or a whole scheduler_config.json) that are absent.
_SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "rescale_betas_zero_snr": False,
}
OBJECTIVES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}  # prediction_type → objective
VARIANCES = {"fixed_small": "posterior", "fixed_small_log": "posterior", "fixed_large": "beta", "fixed_large_log": "beta"}

# diffusers' ResnetBlock2D child → diffkit's ResBlock child
_RESNET_NAMES = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "emb_proj", "norm2": "norm2",
                 "conv2": "conv2", "conv_shortcut": "skip"}
# Attention projections, today's names first and the names of older checkpoints (still read by diffusers).
_ATTENTION_NAMES = {"norm": ("group_norm",), "q": ("to_q", "query"), "k": ("to_k", "key"), "v": ("to_v", "value"),
                    "proj": ("to_out.0", "proj_attn")}


class PretrainedError(ValueError):
    """A model folder diffkit cannot read or a model it cannot write; the message names the file and key."""


@dataclass
class Pretrained:
    """A diffusers model folder in diffkit's terms."""

    backbone: str  # plugin name: "unet2d"
    options: dict[str, Any]  # the backbone's options, plain JSON values: a config's [model] options
    state_dict: dict[str, torch.Tensor]  # float32 weights under diffkit's parameter names
    diffusion: dict[str, Any]  # GaussianDiffusion keywords: betas (list of floats), objective, variance, threshold, …
    input_shape: tuple[int, ...]  # (C, H, W) from sample_size
    # The [diffusion] config section (timesteps, schedule, objective, …) when the β schedule is one of
    # diffkit's named schedules, else None (then only the explicit betas describe it).
    diffusion_config: Optional[dict[str, Any]] = None

    def build_backbone(self) -> nn.Module:
        """The ``unet2d`` holding these weights."""
        with torch.device("meta"):
            model = create_backbone(self.backbone, **self.options)
        model.load_state_dict(self.state_dict, assign=True)
        return model

    def build(self) -> GaussianDiffusion:
        """The engine around the backbone, in eval mode, ready to sample."""
        diffusion = dict(self.diffusion)
        betas = torch.tensor(diffusion.pop("betas"), dtype=torch.float64)
        return GaussianDiffusion(self.build_backbone(), self.input_shape, betas, **diffusion).eval()


# --- reading -------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"'{path}' cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"'{path}' does not hold a JSON object")
    return data


def _model_folder(path: Path) -> Optional[Path]:
    """The folder holding the model's config.json: ``path`` itself or its ``unet/`` (pipeline layout)."""
    for folder in (path / UNET_SUBFOLDER, path):
        config = folder / MODEL_CONFIG
        if config.is_file():
            try:
                if "_class_name" in json.loads(config.read_text()):
                    return folder
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
                return None
    return None


def is_diffusers_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder in diffusers' layout: a model's ``config.json`` (with diffusers'
    ``_class_name``) in it or in its ``unet/`` subfolder."""
    path = Path(path)
    return path.is_dir() and _model_folder(path) is not None


def _folders(path: PathLike) -> tuple[Path, Optional[Path]]:
    """(model folder, scheduler_config.json or None)."""
    path = Path(path)
    if not path.is_dir():
        raise PretrainedError(f"'{path}' is not a folder")
    model = _model_folder(path)
    if model is None:
        raise PretrainedError(f"'{path}' is not in diffusers' layout: no {MODEL_CONFIG} with a '_class_name' in it "
                              f"or in '{UNET_SUBFOLDER}/'")
    for candidate in (path / SCHEDULER_SUBFOLDER / SCHEDULER_CONFIG, path / SCHEDULER_CONFIG, model / SCHEDULER_CONFIG):
        if candidate.is_file():
            return model, candidate
    return model, None


def _check_unet_config(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """config.json merged over UNet2DModel's defaults; whatever unet2d cannot represent is refused."""
    name = config.get("_class_name")
    if name != "UNet2DModel":
        raise PretrainedError(f"{where}: _class_name {name!r} cannot be read; diffkit imports 'UNet2DModel' "
                              "(into its unet2d)")
    unknown = sorted(k for k in config if not k.startswith("_") and k not in _UNET2D_DEFAULTS)
    if unknown:
        raise PretrainedError(f"{where}: unknown UNet2DModel key {unknown[0]!r} (diffkit reads the keys of "
                              f"diffusers {DIFFUSERS_VERSION})")
    c = {**_UNET2D_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key, accepted in _UNET2D_FIXED.items():
        choices = accepted if isinstance(accepted, tuple) else (accepted,)
        if c[key] not in choices:
            raise PretrainedError(f"{where}: {key}={c[key]!r} cannot be represented by diffkit's unet2d "
                                  f"(it needs {' or '.join(repr(a) for a in choices)})")
    ch0 = c["block_out_channels"][0]
    if c["time_embedding_dim"] not in (None, 4 * ch0):
        raise PretrainedError(f"{where}: time_embedding_dim={c['time_embedding_dim']} cannot be represented by "
                              f"diffkit's unet2d (it needs 4 × block_out_channels[0] = {4 * ch0})")
    if c["attn_norm_num_groups"] not in (None, c["norm_num_groups"]):
        raise PretrainedError(f"{where}: attn_norm_num_groups={c['attn_norm_num_groups']} cannot be represented by "
                              f"diffkit's unet2d (it needs null or norm_num_groups={c['norm_num_groups']})")
    if c["downsample_padding"] not in _PADDINGS:
        raise PretrainedError(f"{where}: downsample_padding={c['downsample_padding']} cannot be represented by "
                              f"diffkit's unet2d (it needs {' or '.join(map(str, _PADDINGS))})")
    if not isinstance(c["norm_num_groups"], int):
        raise PretrainedError(f"{where}: norm_num_groups={c['norm_num_groups']!r} must be an integer")
    return c


def _attention_levels(c: dict[str, Any], where: Path) -> list[int]:
    downs, ups, widths = list(c["down_block_types"]), list(c["up_block_types"]), list(c["block_out_channels"])
    if not len(downs) == len(ups) == len(widths):
        raise PretrainedError(f"{where}: down_block_types, up_block_types and block_out_channels differ in length "
                              f"({len(downs)}, {len(ups)}, {len(widths)})")
    levels = []
    for level, (down, up) in enumerate(zip(downs, reversed(ups))):
        # diffusers reads "UNetResDownBlock2D" as "DownBlock2D" (and likewise up).
        down, up = down.removeprefix("UNetRes"), up.removeprefix("UNetRes")
        if down not in _DOWN_BLOCKS:
            raise PretrainedError(f"{where}: down block type {down!r} (level {level}) cannot be represented by "
                                  f"diffkit's unet2d (it has {', '.join(_DOWN_BLOCKS)})")
        if up not in _UP_BLOCKS:
            raise PretrainedError(f"{where}: up block type {up!r} (level {level}) cannot be represented by "
                                  f"diffkit's unet2d (it has {', '.join(_UP_BLOCKS)})")
        if _DOWN_BLOCKS[down] != _UP_BLOCKS[up]:
            raise PretrainedError(f"{where}: level {level} pairs {down!r} with {up!r}; diffkit's unet2d has attention "
                                  "on both paths of a level or on neither")
        if _DOWN_BLOCKS[down]:
            levels.append(level)
    return levels


def _backbone_options(c: dict[str, Any], where: Path) -> dict[str, Any]:
    """unet2d options equivalent to a checked UNet2DModel config (plain JSON values)."""
    widths = [int(w) for w in c["block_out_channels"]]
    attention_levels = _attention_levels(c, where)
    options: dict[str, Any] = {
        "in_channels": int(c["in_channels"]),
        "out_channels": int(c["out_channels"]),
        "channels": widths,
        "num_res_blocks": int(c["layers_per_block"]),
        "attention_levels": attention_levels,
        "dropout": float(c["dropout"]),
        "mid_attention": bool(c["add_attention"]),
        "norm_groups": int(c["norm_num_groups"]),
        "norm_eps": float(c["norm_eps"]),
        "flip_sin_to_cos": bool(c["flip_sin_to_cos"]),
        "freq_shift": c["freq_shift"],
        "downsample_padding": _PADDINGS[c["downsample_padding"]],
    }
    head_dim = c["attention_head_dim"]
    attended = [widths[i] for i in attention_levels] + ([widths[-1]] if c["add_attention"] else [])
    if head_dim is not None:
        bad = [w for w in attended if w % head_dim]
        if bad:
            raise PretrainedError(f"{where}: attention_head_dim={head_dim} does not divide the attention width(s) "
                                  f"{bad}; diffkit's unet2d splits every width into whole heads")
        if attended:
            options["attention_head_dim"] = int(head_dim)
    # With attention_head_dim null, diffusers gives each attention block one head: diffkit's default.
    return options


def _input_shape(c: dict[str, Any], where: Path) -> tuple[int, ...]:
    size = c["sample_size"]
    if size is None:
        raise PretrainedError(f"{where}: sample_size is null; diffkit needs the image size to sample")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    multiple = 2 ** (len(c["block_out_channels"]) - 1)
    if h % multiple or w % multiple:
        raise PretrainedError(f"{where}: sample_size {size} is not a multiple of {multiple} (2 ** (levels - 1))")
    return int(c["in_channels"]), int(h), int(w)


def _betas(s: dict[str, Any], where: Any) -> torch.Tensor:
    """β exactly as diffusers' schedulers compute it (float32), held in float64."""
    T, start, end, name = int(s["num_train_timesteps"]), s["beta_start"], s["beta_end"], s["beta_schedule"]
    if s["trained_betas"] is not None:
        betas = torch.tensor(s["trained_betas"], dtype=torch.float32)
    elif name == "linear":
        betas = torch.linspace(start, end, T, dtype=torch.float32)
    elif name == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
    elif name == "squaredcos_cap_v2":
        # Nichol & Dhariwal's cosine ᾱ, β = 1 - ᾱ(t+1)/ᾱ(t) capped at 0.999, computed in Python floats.
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)],
                             dtype=torch.float32)
    elif name == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (end - start) + start
    else:
        raise PretrainedError(f"{where}: beta_schedule {name!r} cannot be read (diffkit reads linear, scaled_linear, "
                              "squaredcos_cap_v2, sigmoid and trained_betas)")
    return betas.to(torch.float64)


def _diffusion_options(s: dict[str, Any], where: Any) -> dict[str, Any]:
    """GaussianDiffusion keywords for a scheduler config (merged over DDPMScheduler's defaults)."""
    if s["rescale_betas_zero_snr"]:
        raise PretrainedError(f"{where}: rescale_betas_zero_snr=true gives β_T = 1, which diffkit's engine refuses")
    if s["prediction_type"] not in OBJECTIVES:
        raise PretrainedError(f"{where}: prediction_type {s['prediction_type']!r} cannot be represented "
                              f"(diffkit has {', '.join(OBJECTIVES)})")
    if s["variance_type"] not in VARIANCES:
        raise PretrainedError(f"{where}: variance_type {s['variance_type']!r} cannot be represented (diffkit has "
                              f"{', '.join(VARIANCES)}; a learned variance needs twice the output channels)")
    options: dict[str, Any] = {
        "betas": _betas(s, where).tolist(),
        "objective": OBJECTIVES[s["prediction_type"]],
        "variance": VARIANCES[s["variance_type"]],
        "threshold": "none",
    }
    if s["thresholding"]:  # wins over clip_sample in diffusers
        # diffusers bounds Imagen's s to [1, sample_max_value]: at 1 that is clipping, unbounded it is
        # diffkit's "dynamic"; a bound in between has no diffkit equivalent.
        if s["sample_max_value"] == 1.0:
            options["threshold"] = "clip"
        elif s["sample_max_value"] == math.inf:
            options.update(threshold="dynamic", threshold_percentile=float(s["dynamic_thresholding_ratio"]))
        else:
            raise PretrainedError(f"{where}: thresholding with sample_max_value={s['sample_max_value']} cannot be "
                                  "represented (diffkit's dynamic threshold needs 1 (clipping) or Infinity)")
    elif s["clip_sample"]:
        if s["clip_sample_range"] != 1.0:
            raise PretrainedError(f"{where}: clip_sample_range={s['clip_sample_range']} cannot be represented "
                                  "(diffkit clips x0 to [-1, 1])")
        options["threshold"] = "clip"
    return options


def _diffusion_config(diffusion: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The [diffusion] config section for these options, if diffkit's named schedules give the same β."""
    betas = torch.tensor(diffusion["betas"], dtype=torch.float64)
    T = len(betas)
    for name, schedule in SCHEDULES.items():
        try:
            ours = schedule(T)
        except ValueError:
            continue
        # float32 rounding of diffusers' β is all that may differ.
        if torch.allclose(ours, betas, rtol=1e-6, atol=0):
            extra = {k: v for k, v in diffusion.items() if k != "betas"}
            return {"timesteps": T, "schedule": name, **extra}
    return None


def _module_pairs(options: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(diffusers module, diffkit module, kind) for every module with weights, in both models' order.

    kind: "same" (same parameter names), "resnet" or "attention" (renamed or fused parameters).
    """
    levels = len(options["channels"])
    n = options["num_res_blocks"]
    attention = set(options["attention_levels"])
    yield "conv_in", "conv_in", "same"
    yield "time_embedding.linear_1", "time_embed.0", "same"
    yield "time_embedding.linear_2", "time_embed.2", "same"

    def block(theirs: str, j: int, ours: str, with_attention: bool) -> Iterator[tuple[str, str, str]]:
        if with_attention:
            yield f"{theirs}.resnets.{j}", f"{ours}.blocks.0", "resnet"
            yield f"{theirs}.attentions.{j}", f"{ours}.blocks.1", "attention"
        else:
            yield f"{theirs}.resnets.{j}", ours, "resnet"

    k = 0
    for level in range(levels):
        for j in range(n):
            yield from block(f"down_blocks.{level}", j, f"down.{k}", level in attention)
            k += 1
        if level != levels - 1:
            yield f"down_blocks.{level}.downsamplers.0.conv", f"down.{k}.conv", "same"
            k += 1
    mid_attention = options["mid_attention"]
    yield "mid_block.resnets.0", "mid.0", "resnet"
    if mid_attention:
        yield "mid_block.attentions.0", "mid.1", "attention"
    yield "mid_block.resnets.1", f"mid.{2 if mid_attention else 1}", "resnet"
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(n + 1):
            yield from block(f"up_blocks.{i}", j, f"up.{k}", level in attention)
            k += 1
        if level != 0:
            yield f"up_blocks.{i}.upsamplers.0.conv", f"up.{k}.conv", "same"
            k += 1
    yield "conv_norm_out", "norm_out", "same"
    yield "conv_out", "conv_out", "same"


def _take(weights: dict[str, torch.Tensor], used: set[str], key: str, where: Any) -> torch.Tensor:
    if key not in weights:
        raise PretrainedError(f"{where}: tensor {key!r} is missing")
    used.add(key)
    return weights[key]


def _attention_key(weights: dict[str, torch.Tensor], prefix: str, role: str) -> str:
    names = _ATTENTION_NAMES[role]
    return next((f"{prefix}.{n}" for n in names if f"{prefix}.{n}.weight" in weights), f"{prefix}.{names[0]}")


def _to_diffkit(weights: dict[str, torch.Tensor], options: dict[str, Any], where: Any) -> dict[str, torch.Tensor]:
    """diffusers' UNet2DModel state dict → unet2d's; every tensor must be used exactly once."""
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for theirs, ours, kind in _module_pairs(options):
        if kind == "same":
            for p in ("weight", "bias"):
                out[f"{ours}.{p}"] = _take(weights, used, f"{theirs}.{p}", where)
        elif kind == "resnet":
            for a, b in _RESNET_NAMES.items():
                if a == "conv_shortcut" and f"{theirs}.{a}.weight" not in weights:
                    continue  # equal widths: no 1×1 skip convolution
                for p in ("weight", "bias"):
                    out[f"{ours}.{b}.{p}"] = _take(weights, used, f"{theirs}.{a}.{p}", where)
        else:
            for p in ("weight", "bias"):
                out[f"{ours}.norm.{p}"] = _take(weights, used, f"{_attention_key(weights, theirs, 'norm')}.{p}", where)
                qkv = torch.cat([_take(weights, used, f"{_attention_key(weights, theirs, r)}.{p}", where)
                                 for r in "qkv"])
                proj = _take(weights, used, f"{_attention_key(weights, theirs, 'proj')}.{p}", where)
                # Linear layers over positions are 1×1 convolutions over the image.
                spatial = (1, 1) if p == "weight" else ()
                out[f"{ours}.qkv.{p}"] = qkv.reshape(*qkv.shape, *spatial)
                out[f"{ours}.proj.{p}"] = proj.reshape(*proj.shape, *spatial)
    unused = sorted(set(weights) - used)
    if unused:
        raise PretrainedError(f"{where}: tensor {unused[0]!r} has no place in diffkit's unet2d "
                              f"({len(unused)} unused)")
    return out


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a model folder: one safetensors file, or the shards its index lists."""
    single, index = folder / WEIGHTS, folder / WEIGHTS_INDEX
    if not single.is_file() and not index.is_file() and (folder / PICKLED_WEIGHTS).is_file():
        raise PretrainedError(f"'{folder}' holds only {PICKLED_WEIGHTS} (a pickle); diffkit reads only {WEIGHTS}: "
                              "re-save the model with diffusers' save_pretrained(..., safe_serialization=True)")
    try:
        if single.is_file() or not index.is_file():
            return load_weights(single)
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(set(_read_json(index).get("weight_map", {}).values())):
            weights.update(load_weights(folder / shard))
        return weights
    except CheckpointError as exc:
        raise PretrainedError(str(exc)) from None


def _reference(options: dict[str, Any]) -> nn.Module:
    """The unet2d these options build, without allocating its weights."""
    with torch.device("meta"):
        return create_backbone("unet2d", **options)


def _first_misfit(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> Optional[str]:
    for key in sorted(set(theirs) | set(ours)):
        if key not in ours or key not in theirs or theirs[key].shape != ours[key].shape:
            shapes = [tuple(sd[key].shape) if key in sd else "absent" for sd in (theirs, ours)]
            return f"tensor {key!r} is {shapes[0]} there and {shapes[1]} here"
    return None


def _check_model(model: nn.Module, options: dict[str, Any], source: Any) -> None:
    """``model`` is a unet2d with the architecture ``options`` describe; else one line naming the difference."""
    if getattr(model, "name", None) != "unet2d" or not hasattr(model, "options"):
        raise PretrainedError(f"{source} holds a unet2d; the model is a {type(model).__name__}")
    # A conditioned model keeps its own condition projection: the folder's model has none.
    reference = _reference({**options, "cond_dim": model.cond_dim})
    misfit = _first_misfit(reference.state_dict(), model.state_dict())
    if misfit:
        raise PretrainedError(f"{source} does not fit the model: {misfit}; build the unet2d with "
                              "diffusers_backbone_options()")

    # What the weights do not show: the conventions of the layers.
    def describe(m: nn.Module) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [("flip_sin_to_cos", m.flip_sin_to_cos), ("freq_shift", m.freq_shift)]
        for name, sub in m.named_modules():
            if isinstance(sub, nn.GroupNorm):
                items.append((f"{name} (norm_groups, norm_eps)", (sub.num_groups, sub.eps)))
            elif isinstance(sub, AttentionBlock):
                items.append((f"{name} (attention heads)", sub.heads))
            elif isinstance(sub, Downsample):
                items.append((f"{name} (downsample_padding)", sub.pad))
        return items

    for (what, want), (_, have) in zip(describe(reference), describe(model)):
        if want != have:
            raise PretrainedError(f"{source} does not fit the model: {what} is {want} there and {have} here; "
                                  "build the unet2d with diffusers_backbone_options()")


def read_diffusers(path: PathLike) -> Pretrained:
    """Read a diffusers UNet2DModel folder (flat, or a pipeline's ``unet/`` + ``scheduler/``).

    Without a scheduler config, DDPMScheduler's defaults apply (linear β from 1e-4 to 0.02 over 1000
    steps, ε prediction, σ² = β̃, x0 clipped): those of the published DDPM models. Of a scheduler
    config only what defines the model is read (β, prediction type, variance, clipping); its sampling
    settings (timestep_spacing, steps_offset, …) are not, since diffkit's samplers choose their own steps.
    """
    model_folder, scheduler_file = _folders(path)
    where = model_folder / MODEL_CONFIG
    c = _check_unet_config(_read_json(where), where)
    options = _backbone_options(c, where)
    input_shape = _input_shape(c, where)
    state_dict = _to_diffkit(_read_weights(model_folder), options, model_folder)

    raw = _read_json(scheduler_file) if scheduler_file is not None else {}
    s = {**_SCHEDULER_DEFAULTS, **{k: v for k, v in raw.items() if k in _SCHEDULER_DEFAULTS}}
    foreign = sorted(k for k in raw if not k.startswith("_") and k not in _SCHEDULER_DEFAULTS)
    if foreign and "beta_schedule" not in raw and raw.get("trained_betas") is None:
        # Not a DDPM-style scheduler (e.g. a continuous-σ one): there is no β to read.
        raise PretrainedError(f"{scheduler_file}: {raw.get('_class_name', 'this scheduler')} has no beta_schedule; "
                              "diffkit reads the discrete β schedules of DDPM-style schedulers")
    diffusion = _diffusion_options(s, scheduler_file or "DDPMScheduler defaults")
    misfit = _first_misfit(_reference(options).state_dict(), state_dict)
    if misfit:
        raise PretrainedError(f"{model_folder}: the weights do not fit the unet2d its {MODEL_CONFIG} describes: {misfit}")
    return Pretrained("unet2d", options, state_dict, diffusion, input_shape, _diffusion_config(diffusion))


def diffusers_backbone_options(path: PathLike) -> dict[str, Any]:
    """The unet2d options (a config's ``[model] options``) of a diffusers folder; reads only config.json."""
    model_folder, _ = _folders(path)
    where = model_folder / MODEL_CONFIG
    return _backbone_options(_check_unet_config(_read_json(where), where), where)


def load_diffusers(path: PathLike) -> GaussianDiffusion:
    """The engine for a diffusers UNet2DModel folder, in eval mode, ready to ``.sample()`` with any sampler."""
    return read_diffusers(path).build()


def load_diffusers_weights(model: nn.Module, path: PathLike) -> None:
    """Load a diffusers folder's weights into an already built unet2d (e.g. to fine-tune it).

    The model must have the folder's architecture and layer conventions (build it with
    :func:`diffusers_backbone_options`; ``dropout`` and ``gradient_checkpointing`` may differ, and a
    ``cond_dim`` adds a condition projection that keeps its own initial weights, to fine-tune an
    unconditional model into a conditional one); otherwise one line names the first difference.
    """
    pretrained = read_diffusers(path)
    _check_model(model, pretrained.options, f"diffusers folder '{path}'")
    missing, unexpected = model.load_state_dict(pretrained.state_dict, strict=False)
    assert not unexpected and all(k.startswith("cond_embed.") for k in missing), (missing, unexpected)


# --- writing -------------------------------------------------------------------------------------


def _refuse(option: str, value: Any, why: str) -> PretrainedError:
    return PretrainedError(f"export_diffusers: unet2d option {option}={value!r} cannot be written as a "
                           f"UNet2DModel: {why}")


def _unet_config(model: nn.Module, sample_size: Optional[list[int]]) -> dict[str, Any]:
    if getattr(model, "name", None) != "unet2d" or not hasattr(model, "options"):
        raise PretrainedError(f"export_diffusers: the backbone is a {type(model).__name__}, not a diffkit unet2d")
    o = dict(model.options)
    # The defaults of the UNet's own constructor (not of the per-rank subclass, which takes **options).
    init = next(cls.__init__ for cls in type(model).__mro__ if "channels" in inspect.signature(cls.__init__).parameters)
    defaults = {k: p.default for k, p in inspect.signature(init).parameters.items()
                if p.default is not inspect.Parameter.empty}
    handled = {"dims", "in_channels", "out_channels", "channels", "num_res_blocks", "attention_levels",
               "attention_heads", "attention_head_dim", "dropout", "gradient_checkpointing", "mid_attention",
               "norm_groups", "norm_eps", "flip_sin_to_cos", "freq_shift", "downsample_padding",
               "downsample_factors", "cond_dim"}
    for key, value in o.items():
        if key not in handled and key in defaults and value != defaults[key]:
            raise _refuse(key, value, "diffusers has no such option")
    if o.get("cond_dim"):
        raise _refuse("cond_dim", o["cond_dim"], "a conditioned UNet2DModel is not in the DDPM family")
    if any(f != 2 for f in model.downsample_factors):
        raise _refuse("downsample_factors", o["downsample_factors"], "diffusers downsamples by 2")

    norms = {(m.num_groups, m.eps) for m in model.modules() if isinstance(m, nn.GroupNorm)}
    if len(norms) != 1:
        groups = sorted({g for g, _ in norms})
        raise _refuse("norm_groups", o["norm_groups"], f"diffusers has one group count, this model has {groups} "
                      "(set norm_groups)")
    (groups, eps), = norms
    attention = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    head_dims = {m.qkv.in_channels // m.heads for m in attention}
    if all(m.heads == 1 for m in attention):
        head_dim = None  # diffusers: one head of the block's width
    elif len(head_dims) == 1:
        head_dim = head_dims.pop()
    else:
        raise _refuse("attention_heads", o["attention_heads"], f"diffusers has one head width, this model has "
                      f"{sorted(head_dims)} (set attention_head_dim)")
    padding = {v: k for k, v in _PADDINGS.items()}[o["downsample_padding"]]
    widths = [int(w) for w in o["channels"]]
    attn = set(o["attention_levels"])
    downs = ["AttnDownBlock2D" if level in attn else "DownBlock2D" for level in range(len(widths))]
    ups = ["AttnUpBlock2D" if level in attn else "UpBlock2D" for level in reversed(range(len(widths)))]
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        **_UNET2D_DEFAULTS,
        "sample_size": sample_size,
        "in_channels": int(model.in_channels),
        "out_channels": int(model.out_channels),
        "freq_shift": model.freq_shift,
        "flip_sin_to_cos": bool(model.flip_sin_to_cos),
        "down_block_types": downs,
        "up_block_types": ups,
        "block_out_channels": widths,
        "layers_per_block": int(o["num_res_blocks"]),
        "downsample_padding": padding,
        "dropout": float(o["dropout"]),
        "attention_head_dim": head_dim,
        "norm_num_groups": int(groups),
        "norm_eps": float(eps),
        "add_attention": bool(o["mid_attention"]),
    }


def _scheduler_config(diffusion: GaussianDiffusion) -> dict[str, Any]:
    betas = diffusion.betas.detach().cpu().to(torch.float64)
    T = len(betas)
    schedule: dict[str, Any] = {"beta_schedule": "linear", "beta_start": float(betas[0]), "beta_end": float(betas[-1]),
                                "trained_betas": None}
    line = torch.linspace(float(betas[0]), float(betas[-1]), T, dtype=torch.float64)
    root = torch.linspace(float(betas[0].sqrt()), float(betas[-1].sqrt()), T, dtype=torch.float64)

    def same(other: torch.Tensor) -> bool:
        return torch.allclose(betas, other, rtol=1e-9, atol=0)

    if same(root**2) and not same(line):
        schedule["beta_schedule"] = "scaled_linear"
    elif same(cosine_beta_schedule(T)):
        schedule.update(beta_schedule="squaredcos_cap_v2", beta_start=_SCHEDULER_DEFAULTS["beta_start"],
                        beta_end=_SCHEDULER_DEFAULTS["beta_end"])
    elif not same(line):  # diffusers then uses these β as they are
        schedule["trained_betas"] = betas.tolist()
    prediction = {v: k for k, v in OBJECTIVES.items()}[diffusion.objective]
    variance = {"posterior": "fixed_small", "beta": "fixed_large"}[diffusion.variance]
    return {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        **_SCHEDULER_DEFAULTS,
        "num_train_timesteps": T,
        **schedule,
        "variance_type": variance,
        "clip_sample": diffusion.threshold == "clip",
        "prediction_type": prediction,
        "thresholding": diffusion.threshold == "dynamic",
        "dynamic_thresholding_ratio": float(diffusion.threshold_percentile),
        # No upper bound on Imagen's s, as diffkit's "dynamic" (json writes it as Infinity, which diffusers reads).
        "sample_max_value": math.inf if diffusion.threshold == "dynamic" else 1.0,
    }


def _linear(t: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution's weight as a linear layer's (a bias stays as it is)."""
    return t.reshape(t.shape[0], -1) if t.ndim > 1 else t


def _to_diffusers(model: nn.Module) -> dict[str, torch.Tensor]:
    """unet2d's state dict → diffusers' UNet2DModel's (attention under today's names)."""
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return ours[key]

    for theirs, mine, kind in _module_pairs(model.options):
        for p in ("weight", "bias"):
            if kind == "same":
                out[f"{theirs}.{p}"] = take(f"{mine}.{p}")
            elif kind == "resnet":
                for a, b in _RESNET_NAMES.items():
                    if f"{mine}.{b}.{p}" in ours:
                        out[f"{theirs}.{a}.{p}"] = take(f"{mine}.{b}.{p}")
            else:
                out[f"{theirs}.group_norm.{p}"] = take(f"{mine}.norm.{p}")
                # 1×1 convolutions back to linear layers: drop the spatial dims, split q, k, v (as copies:
                # safetensors refuses tensors that share memory).
                q, k, v = (t.clone() for t in _linear(take(f"{mine}.qkv.{p}")).chunk(3))
                out[f"{theirs}.to_q.{p}"], out[f"{theirs}.to_k.{p}"], out[f"{theirs}.to_v.{p}"] = q, k, v
                out[f"{theirs}.to_out.0.{p}"] = _linear(take(f"{mine}.proj.{p}"))
    unused = sorted(set(ours) - used)
    if unused:
        raise PretrainedError(f"export_diffusers: tensor {unused[0]!r} has no place in a UNet2DModel")
    return out


def export_diffusers(
    model: Union[GaussianDiffusion, nn.Module], folder: PathLike, *, sample_size: Optional[int] = None
) -> Path:
    """Write a unet2d (or the engine around one) as a diffusers UNet2DModel folder.

    Writes ``config.json`` and ``diffusion_pytorch_model.safetensors``, and for an engine also
    ``scheduler_config.json`` (a DDPMScheduler with its β, objective, variance and x0 clipping).
    ``sample_size`` defaults to the engine's input size; a unet2d whose options diffusers cannot express
    is refused with one line naming the option. Returns ``folder``.
    """
    diffusion = model if isinstance(model, GaussianDiffusion) else None
    backbone = diffusion.model if diffusion is not None else model
    if diffusion is not None and diffusion.conditioner is not None:
        raise PretrainedError("export_diffusers: a conditioned engine (conditioner set) is not in the DDPM family")
    if diffusion is not None and diffusion.data_std != 1.0:
        raise PretrainedError(f"export_diffusers: diffusion data_std={diffusion.data_std:g} cannot be written as a "
                              "DDPMScheduler: diffusers has no such option (its network sees x_t unscaled)")
    size: Optional[list[int]] = None
    if sample_size is not None:
        size = [int(sample_size)] * 2
    elif diffusion is not None:
        size = [int(d) for d in diffusion.input_shape[1:]]
    config = _unet_config(backbone, size)
    if size is not None and size[0] == size[1]:
        config["sample_size"] = size[0]
    tensors = _to_diffusers(backbone)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_weights(tensors, folder / WEIGHTS)
    if diffusion is not None:
        (folder / SCHEDULER_CONFIG).write_text(json.dumps(_scheduler_config(diffusion), indent=2) + "\n")
    return folder
