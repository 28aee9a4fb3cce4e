"""HunyuanVideo 1.5 transformer key layouts and their conversion to diffusers' names.

Three layouts circulate (SPEC-hv15 §2.2-2.3): the authors' (`double_blocks.N.img_attn_q/k/v`, split),
ComfyUI's repackaged single files (the same names with fused `img_attn_qkv`/`txt_attn_qkv`), and
diffusers' (`transformer_blocks.N.attn.to_q`). diffusers ships no single-file loader for 1.5, and its
converter script is not part of the package, so the rename is restated here from that script (with the
final layer's shift/scale halves swapped as it does). Fused tensors are split with `chunk(3)`, which
keeps fp8 weights fp8 (one scale per fused tensor serves its three parts).
"""

from __future__ import annotations

import re

import torch

_DOUBLE_BLOCK = {
    "img_mod.linear": "norm1.linear",
    "txt_mod.linear": "norm1_context.linear",
    "img_attn_q": "attn.to_q",
    "img_attn_k": "attn.to_k",
    "img_attn_v": "attn.to_v",
    "img_attn_q_norm": "attn.norm_q",
    "img_attn_k_norm": "attn.norm_k",
    "img_attn_proj": "attn.to_out.0",
    "txt_attn_q": "attn.add_q_proj",
    "txt_attn_k": "attn.add_k_proj",
    "txt_attn_v": "attn.add_v_proj",
    "txt_attn_q_norm": "attn.norm_added_q",
    "txt_attn_k_norm": "attn.norm_added_k",
    "txt_attn_proj": "attn.to_add_out",
    "img_mlp.fc1": "ff.net.0.proj",
    "img_mlp.fc2": "ff.net.2",
    "txt_mlp.fc1": "ff_context.net.0.proj",
    "txt_mlp.fc2": "ff_context.net.2",
}
_REFINER_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "self_attn_proj": "attn.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm_out.linear",
}
_FUSED = {
    "img_attn_qkv": ("img_attn_q", "img_attn_k", "img_attn_v"),
    "txt_attn_qkv": ("txt_attn_q", "txt_attn_k", "txt_attn_v"),
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
}
_TOP_LEVEL = {
    "img_in.proj": "x_embedder.proj",
    "time_in.mlp.0": "time_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_embed.timestep_embedder.linear_2",
    "time_r_in.mlp.0": "time_embed.timestep_embedder_r.linear_1",
    "time_r_in.mlp.2": "time_embed.timestep_embedder_r.linear_2",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "byt5_in.layernorm": "context_embedder_2.norm",
    "byt5_in.fc1": "context_embedder_2.linear_1",
    "byt5_in.fc2": "context_embedder_2.linear_2",
    "byt5_in.fc3": "context_embedder_2.linear_3",
    "vision_in.proj.0": "image_embedder.norm_in",
    "vision_in.proj.1": "image_embedder.linear_1",
    "vision_in.proj.3": "image_embedder.linear_2",
    "vision_in.proj.4": "image_embedder.norm_out",
    "cond_type_embedding": "cond_type_embed",
    "final_layer.linear": "proj_out",
}
_FINAL_MODULATION = "final_layer.adaLN_modulation.1"
_BLOCK_KEY = re.compile(r"^(double_blocks|txt_in\.individual_token_refiner\.blocks)\.(\d+)\.(.+)\.(weight|bias)$")
_BLOCK_PREFIX = {
    "double_blocks": ("transformer_blocks", _DOUBLE_BLOCK),
    "txt_in.individual_token_refiner.blocks": ("context_embedder.token_refiner.refiner_blocks", _REFINER_BLOCK),
}
LAYOUTS = ("authors", "comfy", "diffusers")


class UnknownKeyError(KeyError):
    """A key of the authors'/ComfyUI layout that this converter does not know."""


def layout_of(keys) -> str | None:
    """"authors" (split q/k/v), "comfy" (fused qkv), "diffusers", or None for anything else."""
    keys = set(keys)
    if "double_blocks.0.img_attn_qkv.weight" in keys:
        return "comfy"
    if "double_blocks.0.img_attn_q.weight" in keys:
        return "authors"
    if "x_embedder.proj.weight" in keys and "cond_type_embed.weight" in keys:
        return "diffusers"
    return None


def convert_tensor(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One tensor of the authors' or ComfyUI's layout as diffusers' tensor(s) (streamed loading)."""
    match = _BLOCK_KEY.match(key)
    if match:
        return _convert_block_key(*match.groups(), value)
    stem, param = key.rsplit(".", 1)
    if stem == _FINAL_MODULATION:
        # The authors order the final modulation (shift, scale); diffusers' AdaLayerNormContinuous wants (scale, shift).
        shift, scale = value.chunk(2, dim=0)
        return {f"norm_out.linear.{param}": torch.cat([scale, shift], dim=0)}
    if stem not in _TOP_LEVEL:
        raise UnknownKeyError(key)
    return {f"{_TOP_LEVEL[stem]}.{param}": value}


def _convert_block_key(group: str, index: str, name: str, param: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    target_prefix, renames = _BLOCK_PREFIX[group]
    prefix = f"{target_prefix}.{index}."
    if name in _FUSED:
        parts = zip(_FUSED[name], value.chunk(3, dim=0))
        return {f"{prefix}{renames.get(part_name, part_name)}.{param}": part for part_name, part in parts}
    if name in renames:
        return {f"{prefix}{renames[name]}.{param}": value}
    raise UnknownKeyError(f"{group}.{index}.{name}.{param}")


def diffusers_to_authors(state: dict[str, torch.Tensor], fused: bool) -> dict[str, torch.Tensor]:
    """The inverse rename (tests and the demo write files in the authors' or, `fused`, ComfyUI's layout)."""
    top = {v: k for k, v in _TOP_LEVEL.items()}
    blocks = {target: (group, {v: k for k, v in renames.items()}) for group, (target, renames) in _BLOCK_PREFIX.items()}
    out: dict[str, torch.Tensor] = {}
    fuse: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        stem, param = key.rsplit(".", 1)
        if stem == "norm_out.linear":
            scale, shift = value.chunk(2, dim=0)
            out[f"{_FINAL_MODULATION}.{param}"] = torch.cat([shift, scale], dim=0)
        elif stem in top:
            out[f"{top[stem]}.{param}"] = value
        else:
            block_prefix = next(p for p in blocks if stem.startswith(p + "."))
            group, renames = blocks[block_prefix]
            index, name = stem[len(block_prefix) + 1 :].split(".", 1)
            authors_name = renames.get(name, name)
            fused_name = next((f for f, parts in _FUSED.items() if authors_name in parts), None)
            must_fuse = fused_name == "self_attn_qkv" or (fused and fused_name is not None)
            if must_fuse:
                fuse.setdefault(f"{group}.{index}.{fused_name}.{param}", {})[authors_name] = value
            else:
                out[f"{group}.{index}.{authors_name}.{param}"] = value
    for key, parts in fuse.items():
        names = _FUSED[key.rsplit(".", 2)[-2]]
        out[key] = torch.cat([parts[n] for n in names], dim=0)
    return out
