"""Loading the HunyuanVideo VAE from every layout users have, with no network access.

Three layouts circulate:
- a diffusers folder (`vae/` of a pipeline folder, or any folder with the VAE's `config.json`);
- a single file in the authors' key layout, which is exactly diffusers' `AutoencoderKLHunyuanVideo`
  naming (`encoder.down_blocks.0.resnets.0...`);
- a single file in ComfyUI's own VAE naming (`encoder.down.0.block.0...`, reversed decoder levels,
  1x1x1 convolutions for attention), which we map to diffusers' names here because diffusers
  has no single-file loader for this VAE.

The architecture is read from the tensor shapes, so a tiny test VAE loads as well as the real
one; what shapes cannot tell (scaling factor, compression ratios) ships in `configs/`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import CheckpointError, cast_state_dict, describe_mismatch, load_state_dict, strip_prefix

if TYPE_CHECKING:
    from diffusers import AutoencoderKLHunyuanVideo

CONFIG_FILE = Path(__file__).parent / "configs" / "hunyuan_video_vae.json"
VAE_PREFIXES = ("vae.", "first_stage_model.", "model.")
EXPECTED = "a HunyuanVideo VAE (.safetensors in the authors' or ComfyUI's key layout, or a diffusers folder)"

# ComfyUI's VAE names and diffusers' names, as (comfy, diffusers) templates read in both directions.
# {i}, {j}: block indices; {level}: a decoder level, numbered from opposite ends in the two layouts.
_NAME_PAIRS = (
    ("encoder.down.{i}.block.{j}.", "encoder.down_blocks.{i}.resnets.{j}."),
    ("encoder.down.{i}.downsample.", "encoder.down_blocks.{i}.downsamplers.0."),
    ("decoder.up.{level}.block.{j}.", "decoder.up_blocks.{level}.resnets.{j}."),
    ("decoder.up.{level}.upsample.", "decoder.up_blocks.{level}.upsamplers.0."),
    ("{part}.mid.block_1.", "{part}.mid_block.resnets.0."),
    ("{part}.mid.block_2.", "{part}.mid_block.resnets.1."),
    ("{part}.mid.attn_1.norm.", "{part}.mid_block.attentions.0.group_norm."),
    ("{part}.mid.attn_1.{qkv}.", "{part}.mid_block.attentions.0.to_{qkv}."),
    ("{part}.mid.attn_1.proj_out.", "{part}.mid_block.attentions.0.to_out.0."),
    ("{part}.norm_out.", "{part}.conv_norm_out."),
    (".nin_shortcut.", ".conv_shortcut."),
)
_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "level": r"\d+", "part": "encoder|decoder", "qkv": "q|k|v"}


def _template_pattern(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, allowed in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{allowed})")
    return re.compile(pattern if template.startswith(".") else "^" + pattern)


_COMFY_TO_DIFFUSERS = tuple((_template_pattern(comfy), diffusers) for comfy, diffusers in _NAME_PAIRS)
_DIFFUSERS_TO_COMFY = tuple((_template_pattern(diffusers), comfy) for comfy, diffusers in _NAME_PAIRS)
_ATTENTION_WEIGHT = re.compile(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$|\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def vae_constants() -> dict:
    """The shipped constants (scaling factor, compression ratios, activation, default group count)."""
    return {k: v for k, v in json.loads(CONFIG_FILE.read_text()).items() if not k.startswith("_")}


# ----------------------------------------------------------------------------- layouts

def detect_vae_layout(keys) -> str:
    """Which naming a VAE state dict uses: "authors" (= diffusers), "comfy", or "unknown"."""
    keys = list(keys)
    if any(k.startswith("encoder.down_blocks.") for k in keys) and any(k.startswith("decoder.up_blocks.") for k in keys):
        return "authors"
    if any(k.startswith("encoder.down.") for k in keys) and any(k.startswith("decoder.up.") for k in keys):
        return "comfy"
    return "unknown"


def _rename_all(state: Mapping[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    """Apply `rules` to every key. Decoder levels are numbered from opposite ends in the two
    layouts (ComfyUI's `up.0` is diffusers' last up block), so `{level}` is mirrored."""
    levels = 1 + max((int(m["level"]) for k in state for pattern, _ in rules
                      if "level" in pattern.groupindex and (m := pattern.search(k))), default=-1)
    out = {}
    for key, value in state.items():
        for pattern, target in rules:
            match = pattern.search(key)
            if match:
                names = match.groupdict()
                if "level" in names:
                    names["level"] = str(levels - 1 - int(names["level"]))
                key = key[: match.start()] + target.format(**names) + key[match.end():]
        out[key] = value
    return out


def comfy_to_diffusers_vae(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's VAE names -> diffusers names; its 1x1x1 attention convolutions become linear weights."""
    out = _rename_all(state, _COMFY_TO_DIFFUSERS)
    return {k: (v.reshape(v.shape[0], v.shape[1]) if _ATTENTION_WEIGHT.search(k) and v.dim() > 2 else v)
            for k, v in out.items()}


def diffusers_to_comfy_vae(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `comfy_to_diffusers_vae` (used to write test files in ComfyUI's layout)."""
    out = _rename_all(state, _DIFFUSERS_TO_COMFY)
    return {k: (v.reshape(*v.shape, 1, 1, 1) if _ATTENTION_WEIGHT.search(k) and v.dim() == 2 else v)
            for k, v in out.items()}


# ----------------------------------------------------------------------------- config from shapes

def norm_groups_for(widths: list[int], default: int) -> int:
    """The shipped group count (32) where it divides every width, as in every real checkpoint;
    for narrower test models the largest count up to it that does (GroupNorm needs a divisor)."""
    common = math.gcd(*widths)
    return max(g for g in range(1, default + 1) if common % g == 0)


def derive_vae_config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """AutoencoderKLHunyuanVideo config from tensor shapes in diffusers naming (name -> shape)."""
    constants = vae_constants()
    widths = []
    while (shape := shapes.get(f"encoder.down_blocks.{len(widths)}.resnets.0.conv2.conv.weight")) is not None:
        widths.append(int(shape[0]))
    required = ("encoder.conv_in.conv.weight", "decoder.conv_out.conv.weight", "post_quant_conv.weight")
    if not widths or any(k not in shapes for k in required):
        raise KeyError("encoder.down_blocks.0.resnets.0.conv2.conv.weight" if not widths else
                       next(k for k in required if k not in shapes))
    layers = len({k.split(".")[4] for k in shapes if k.startswith("encoder.down_blocks.0.resnets.")})
    return {
        "in_channels": int(shapes["encoder.conv_in.conv.weight"][1]),
        "out_channels": int(shapes["decoder.conv_out.conv.weight"][0]),
        "latent_channels": int(shapes["post_quant_conv.weight"][0]),
        "down_block_types": (constants["down_block_type"],) * len(widths),
        "up_block_types": (constants["up_block_type"],) * len(widths),
        "block_out_channels": tuple(widths),
        "layers_per_block": layers,
        "act_fn": constants["act_fn"],
        "norm_num_groups": norm_groups_for(widths, constants["norm_num_groups"]),
        "scaling_factor": constants["scaling_factor"],
        "spatial_compression_ratio": constants["spatial_compression_ratio"],
        "temporal_compression_ratio": constants["temporal_compression_ratio"],
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in shapes,
    }


# ----------------------------------------------------------------------------- loading

def vae_from_state_dict(
    state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16, device="cpu", name: str = "VAE"
) -> AutoencoderKLHunyuanVideo:
    """Build the VAE from tensors in either single-file layout; `name` is used in error messages.

    Works with `meta` tensors too (shape checks without weights)."""
    state = strip_prefix(dict(state), VAE_PREFIXES)
    layout = detect_vae_layout(state)
    if layout == "unknown":
        raise CheckpointError(f"{name}: expected {EXPECTED}, but it holds {guess_checkpoint_kind(state)}")
    if layout == "comfy":
        state = comfy_to_diffusers_vae(state)
    try:
        config = derive_vae_config({k: tuple(v.shape) for k, v in state.items()})
    except KeyError as e:
        raise CheckpointError(f"{name}: looks like a VAE but lacks tensor {e.args[0]!r}; expected {EXPECTED}") from e
    from diffusers import AutoencoderKLHunyuanVideo

    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo(**config)
    _check_tensors(model.state_dict(), state, name, config)
    model.load_state_dict(cast_state_dict(state, dtype), strict=True, assign=True)
    return model.to(device=device).eval()


def _check_tensors(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name: str, config) -> None:
    details = describe_mismatch(expected, state)
    if details:
        widths = config["block_out_channels"]
        raise CheckpointError(f"{name}: an unknown VAE layout for widths {widths}: tensors {details}; expected {EXPECTED}")


def _vae_folder(path: Path) -> Path | None:
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    return None


def load_vae_folder(path: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu") -> AutoencoderKLHunyuanVideo:
    path = Path(path)
    folder = _vae_folder(path)
    if folder is None:
        raise CheckpointError(f"{path}: a folder without a VAE config.json (or vae/config.json); expected {EXPECTED}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable ({e})") from e
    if config.get("_class_name") != "AutoencoderKLHunyuanVideo":
        raise CheckpointError(
            f"{folder}: holds a {config.get('_class_name', 'model of unknown class')}, expected {EXPECTED}"
        )
    from diffusers import AutoencoderKLHunyuanVideo

    try:
        model = AutoencoderKLHunyuanVideo.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: the diffusers VAE does not load ({e})") from e
    return model.to(device=device).eval()


def load_vae(path: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu") -> AutoencoderKLHunyuanVideo:
    """The HunyuanVideo VAE from a diffusers folder or a single file in either key layout."""
    path = Path(path)
    if path.is_dir():
        return load_vae_folder(path, dtype, device)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder; expected {EXPECTED}")
    return vae_from_state_dict(load_state_dict(path), dtype, device, name=path.name)
