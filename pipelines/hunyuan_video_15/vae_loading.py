"""Loading the HunyuanVideo 1.5 VAE from every layout users have, offline, and encoding the I2V first frame.

Three layouts circulate:
- one file in the authors' names (`encoder.down.{i}.block.{j}...`, `decoder.mid.attn_1.q...`), which is
  also ComfyUI's `hunyuanvideo15_vae_fp16.safetensors` (sometimes under a `vae.`/`first_stage_model.` prefix);
- one file already in diffusers' names (`encoder.down_blocks.{i}.resnets.{j}...`);
- a diffusers folder, or a pipeline folder's `vae/`.
diffusers has no single-file loader for this VAE, so the authors' names are mapped here. Unlike the 13B
VAE, both layouts number the decoder levels the same way and keep the attention's 1x1x1 convolutions.

A wrong file (the 13B VAE, a transformer, a text encoder) is refused from its safetensors header,
before any weight is read. The widths are read from the tensor shapes, so a tiny test VAE loads
through the same code; the compression ratios and the scaling factor are this model's constants.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import (
    PICKLE_SUFFIXES,
    CheckpointError,
    cast_state_dict,
    describe_mismatch,
    load_state_dict,
    read_safetensors_header,
    strip_prefix,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKLHunyuanVideo15

VAE_SCALING = 1.03682  # latents the transformer sees = VAE latents x this (authors, diffusers, ComfyUI)
LATENT_CHANNELS = 32
SPATIAL_COMPRESSION = 16
TEMPORAL_COMPRESSION = 4
CLASS_NAME = "AutoencoderKLHunyuanVideo15"
VAE_PREFIXES = ("vae.", "first_stage_model.")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VAE_DTYPES = ("auto", *DTYPES)
EXPECTED = ("the HunyuanVideo 1.5 VAE (e.g. hunyuanvideo15_vae_fp16.safetensors, in the authors'/ComfyUI or "
            "diffusers key names, or a diffusers folder)")
_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}

# (authors' name, diffusers' name) prefixes, read in both directions; the first that matches a key applies.
_NAME_PAIRS = (
    ("encoder.down.{i}.block.{j}.", "encoder.down_blocks.{i}.resnets.{j}."),
    ("encoder.down.{i}.downsample.", "encoder.down_blocks.{i}.downsamplers.0."),
    ("decoder.up.{i}.block.{j}.", "decoder.up_blocks.{i}.resnets.{j}."),
    ("decoder.up.{i}.upsample.", "decoder.up_blocks.{i}.upsamplers.0."),
    ("{part}.mid.block_1.", "{part}.mid_block.resnets.0."),
    ("{part}.mid.block_2.", "{part}.mid_block.resnets.1."),
    ("{part}.mid.attn_1.{qkv}.", "{part}.mid_block.attentions.0.to_{qkv}."),
    ("{part}.mid.attn_1.", "{part}.mid_block.attentions.0."),  # norm. and proj_out. keep their names
)
_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "part": "encoder|decoder", "qkv": "q|k|v"}


def _prefix_pattern(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, allowed in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{allowed})")
    return re.compile(pattern)


_TO_DIFFUSERS = tuple((_prefix_pattern(authors), diffusers) for authors, diffusers in _NAME_PAIRS)
_TO_AUTHORS = tuple((_prefix_pattern(diffusers), authors) for authors, diffusers in _NAME_PAIRS)


def _rename(state: Mapping, rules) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, target in rules:
            if match := pattern.match(key):
                key = target.format(**match.groupdict()) + key[match.end():]
                break
        out[key] = value
    return out


def authors_to_diffusers_vae(state: Mapping) -> dict:
    """The authors' (= ComfyUI's) names -> diffusers' names; values are passed through (tensors or shapes)."""
    return _rename(state, _TO_DIFFUSERS)


def diffusers_to_authors_vae(state: Mapping) -> dict:
    """The inverse of `authors_to_diffusers_vae` (used to write test files in the authors' layout)."""
    return _rename(state, _TO_AUTHORS)


# ----------------------------------------------------------------------------- what a file holds

def _what_else(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """None when `shapes` (prefix stripped) are a HunyuanVideo 1.5 VAE's, else what they are instead."""
    latent = shapes.get("decoder.conv_in.conv.weight")  # [width, latent channels, 3, 3, 3] in both layouts
    channels = latent[1] if latent is not None and len(latent) == 5 else None
    if channels == LATENT_CHANNELS and "post_quant_conv.weight" not in shapes:
        return None
    if channels == 16:
        return "the HunyuanVideo 13B VAE (16 latent channels; HunyuanVideo 1.5's has 32)"
    kind = guess_checkpoint_kind(shapes)
    return kind if channels is None else f"{kind} with {channels} latent channels (HunyuanVideo 1.5's VAE has 32)"


def derive_vae_config(shapes: Mapping[str, tuple[int, ...]], name: str = "VAE") -> dict:
    """AutoencoderKLHunyuanVideo15 config from tensor shapes in any layout (prefix and names normalised
    first); a CheckpointError naming `name` and what it holds when they are not this VAE's."""
    shapes = strip_prefix(dict(shapes), VAE_PREFIXES)
    problem = _what_else(shapes)
    if problem is not None:
        raise CheckpointError(f"{name}: expected {EXPECTED}, but it holds {problem}")
    shapes = authors_to_diffusers_vae(shapes)
    widths = []
    while (shape := shapes.get(f"encoder.down_blocks.{len(widths)}.resnets.0.conv2.conv.weight")) is not None:
        widths.append(int(shape[0]))
    required = ("encoder.conv_in.conv.weight", "decoder.conv_out.conv.weight")
    missing = "encoder.down_blocks.0.resnets.0.conv2.conv.weight" if not widths else next(
        (k for k in required if k not in shapes), None)
    if missing:
        raise CheckpointError(f"{name}: looks like a HunyuanVideo 1.5 VAE but lacks tensor {missing!r}")
    return {
        "in_channels": int(shapes["encoder.conv_in.conv.weight"][1]),
        "out_channels": int(shapes["decoder.conv_out.conv.weight"][0]),
        "latent_channels": LATENT_CHANNELS,
        "block_out_channels": tuple(widths),
        "layers_per_block": len({k.split(".")[4] for k in shapes if k.startswith("encoder.down_blocks.0.resnets.")}),
        "spatial_compression_ratio": SPATIAL_COMPRESSION,
        "temporal_compression_ratio": TEMPORAL_COMPRESSION,
        "scaling_factor": VAE_SCALING,
    }


# ----------------------------------------------------------------------------- loading

def _stored_dtype(dtypes) -> torch.dtype:
    """The most common float dtype a file stores (fp8 or none: bf16)."""
    counts = Counter(d for d in dtypes if d in DTYPES.values())
    return counts.most_common(1)[0][0] if counts else torch.bfloat16


def _torch_dtype(dtype: str | torch.dtype, stored) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in VAE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(VAE_DTYPES)}; got {dtype!r}")
    return _stored_dtype(stored) if dtype == "auto" else DTYPES[dtype]


def vae_from_state_dict(state: Mapping[str, torch.Tensor], dtype: str | torch.dtype = "auto", device="cpu",
                        name: str = "VAE") -> AutoencoderKLHunyuanVideo15:
    """The VAE from tensors in either file layout (`meta` tensors work too: shape checks without weights)."""
    config = derive_vae_config({k: tuple(v.shape) for k, v in state.items()}, name)
    state = authors_to_diffusers_vae(strip_prefix(dict(state), VAE_PREFIXES))
    torch_dtype = _torch_dtype(dtype, (v.dtype for v in state.values()))
    from diffusers import AutoencoderKLHunyuanVideo15

    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo15(**config)
    details = describe_mismatch(model.state_dict(), state)
    if details:
        widths = config["block_out_channels"]
        raise CheckpointError(f"{name}: an unknown HunyuanVideo 1.5 VAE layout for widths {widths}: tensors {details}")
    model.load_state_dict(cast_state_dict(state, torch_dtype), strict=True, assign=True)
    return model.to(device=device).eval()


def _vae_folder(path: Path) -> Path | None:
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    return None


def load_vae_folder(path: str | Path, dtype: str | torch.dtype = "auto", device="cpu") -> AutoencoderKLHunyuanVideo15:
    path = Path(path)
    folder = _vae_folder(path)
    if folder is None:
        raise CheckpointError(f"{path}: a folder without a VAE config.json (or vae/config.json); expected {EXPECTED}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable ({e})") from e
    if config.get("_class_name") != CLASS_NAME:
        held = config.get("_class_name", "model of unknown class")
        raise CheckpointError(f"{folder}: holds a {held}, expected {EXPECTED}")
    stored = [_SAFETENSORS_DTYPES.get(t["dtype"]) for f in sorted(folder.glob("*.safetensors"))
              for t in read_safetensors_header(f).values()]
    from diffusers import AutoencoderKLHunyuanVideo15

    try:
        model = AutoencoderKLHunyuanVideo15.from_pretrained(
            folder, torch_dtype=_torch_dtype(dtype, stored), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: the diffusers VAE does not load ({e})") from e
    return model.to(device=device).eval()


def load_vae(path: str | Path, dtype: str | torch.dtype = "auto", device="cpu") -> AutoencoderKLHunyuanVideo15:
    """The HunyuanVideo 1.5 VAE from a diffusers folder or one file in either key layout.

    `dtype`: "auto" (as stored; the authors decode in fp16), "fp16", "bf16", "fp32" or a torch dtype."""
    path = Path(path)
    if path.is_dir():
        return load_vae_folder(path, dtype, device)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder; expected {EXPECTED}")
    if path.suffix.lower() not in PICKLE_SUFFIXES:  # the header alone refuses a wrong file
        derive_vae_config({k: tuple(v["shape"]) for k, v in read_safetensors_header(path).items()}, path.name)
    return vae_from_state_dict(load_state_dict(path), dtype, device, name=path.name)


# ----------------------------------------------------------------------------- the I2V condition

@torch.no_grad()
def encode_first_frame(vae: AutoencoderKLHunyuanVideo15, image: torch.Tensor) -> torch.Tensor:
    """The I2V condition latent: `image` [B, 3, H, W] in -1..1 (H, W multiples of 16) -> [B, 32, 1, H/16, W/16],
    the posterior's mode times the scaling factor, in the VAE's dtype and on its device.

    As the authors' `get_image_condition_latents` (untiled, whatever the decode tiling) and diffusers'
    `HunyuanVideo15ImageToVideoPipeline._get_image_latents`: a one-frame video through the encoder."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W], got shape {tuple(image.shape)}")
    if image.shape[-2] % SPATIAL_COMPRESSION or image.shape[-1] % SPATIAL_COMPRESSION:
        size = tuple(image.shape[-2:])
        raise ValueError(f"image height and width must be multiples of {SPATIAL_COMPRESSION}, got {size}")
    parameter = next(vae.parameters())
    frame = image.to(device=parameter.device, dtype=parameter.dtype).unsqueeze(2)
    return vae.encode(frame).latent_dist.mode() * VAE_SCALING
