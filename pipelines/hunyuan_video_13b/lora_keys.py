"""Where a LoRA file's modules land in the 13B model (diffusers' `HunyuanVideoTransformer3DModel`).

The authors' names, in any spelling (`lora_unet_` underscores, ComfyUI's `img_attn.qkv` / `img_mod.lin` /
`img_mlp.0`), go through this family's checkpoint converter, so a LoRA on a fused layer splits exactly as the
weights do: `img_attn_qkv` -> `attn.to_q/k/v`, `txt_attn_qkv` -> `attn.add_q/k/v_proj`, the single blocks' `linear1`
-> `attn.to_q/k/v` + `proj_mlp` (rows H, H, H, rest), the final modulation's halves swapped. diffusers-named files
(F4) are taken as they are. The name tables are the converter's own, not restated.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from ..lora.formats import LoraFile, ModuleNames, read_modules, to_targets, unchanged
from ..lora.lowrank import LoraWeights
from .transformer_keys import (
    _BLOCK_PREFIX,
    _DOUBLE_BLOCK,
    _REFINER_BLOCK,
    _SINGLE_BLOCK,
    _TOP_LEVEL,
    convert_authors_tensor,
)

FAMILY = "hunyuan_video_13b"
NAMES = ModuleNames(
    blocks={
        "double_blocks": [*_DOUBLE_BLOCK, "img_attn_qkv", "txt_attn_qkv"],
        "single_blocks": [*_SINGLE_BLOCK, "linear1"],
        "txt_in.individual_token_refiner.blocks": [*_REFINER_BLOCK, "self_attn_qkv"],
    },
    top=[*_TOP_LEVEL, "final_layer.adaLN_modulation.1"],
    diffusers_roots={name.split(".")[0] for name in (*_TOP_LEVEL.values(), *(t for t, _ in _BLOCK_PREFIX.values()), "norm_out")},
)
# Modules whose input is the model width, which the split of `linear1` needs (the file says it; diffusers
# hard-codes 3072).
_WIDTH_FROM = re.compile(r"^(double_blocks\.\d+\.(img|txt)_(attn_qkv|mod\.linear)|single_blocks\.\d+\.(linear1|modulation\.linear))$")


def read_lora(path: str | Path) -> LoraWeights:
    """A LoRA file of any convention as the 13B model's modules; keys that name none of them listed unmatched."""
    file = read_modules(path)
    return to_targets(file, FAMILY, partial(_resolve, width=_width(file)))


def _resolve(stem: str, width: int | None):
    found = NAMES.find(stem)
    if found is None:
        return None
    name, authors = found
    if not authors:
        return name, unchanged
    if width is None and name.endswith(".linear1"):
        return None  # a bias-only linear1 in a file that never shows the width: cannot be split
    return name, partial(convert_authors_tensor, hidden=width)


def _width(file: LoraFile) -> int | None:
    for module in file.modules:
        found = NAMES.find(module.stem)
        full = module.low.down if module.low.down is not None else module.low.weight
        if found and found[1] and _WIDTH_FROM.match(found[0]) and full is not None and full.ndim == 2:
            return full.shape[1]
    return None
