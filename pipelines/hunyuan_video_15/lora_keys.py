"""Where a LoRA file's modules land in the HunyuanVideo 1.5 model (diffusers' `HunyuanVideo15Transformer3DModel`).

musubi's files name the authors' split `img_attn_q/k/v` and need no split. ComfyUI's (musubi's converter, Comfy-Org's
repackaged LoRAs) fuse them into `img_attn_qkv` with a block-diagonal up and alpha x 3 (SPEC-lora §1b): this family's
checkpoint converter splits the up's rows onto `attn.to_q/k/v` exactly as it splits fused weights, and the shared
scale alpha x 3 / 3r stays alpha / r. ComfyUI's `img_mod_lin` / `img_mlp_0` spellings are understood; diffusers-named
files are taken as they are. The name tables are the converter's own, not restated.
"""

from __future__ import annotations

from pathlib import Path

from ..lora.formats import ModuleNames, read_modules, to_targets, unchanged
from ..lora.lowrank import LoraWeights
from .transformer_keys import (
    _BLOCK_PREFIX,
    _DOUBLE_BLOCK,
    _FINAL_MODULATION,
    _REFINER_BLOCK,
    _TOP_LEVEL,
    convert_tensor,
)

FAMILY = "hunyuan_video_15"
NAMES = ModuleNames(
    blocks={
        "double_blocks": [*_DOUBLE_BLOCK, "img_attn_qkv", "txt_attn_qkv"],
        "txt_in.individual_token_refiner.blocks": [*_REFINER_BLOCK, "self_attn_qkv"],
    },
    top=[*_TOP_LEVEL, _FINAL_MODULATION],
    diffusers_roots={name.split(".")[0] for name in (*_TOP_LEVEL.values(), *(t for t, _ in _BLOCK_PREFIX.values()), "norm_out")},
)


def read_lora(path: str | Path) -> LoraWeights:
    """A LoRA file of any convention as the 1.5 model's modules; keys that name none of them listed unmatched."""
    return to_targets(read_modules(path), FAMILY, _resolve)


def _resolve(stem: str):
    found = NAMES.find(stem)
    if found is None:
        return None
    name, authors = found
    return name, (convert_tensor if authors else unchanged)
