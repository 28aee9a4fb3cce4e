"""The authors' transformer key layout, and its conversion to diffusers' names.

diffusers ships a converter for this layout (`convert_hunyuan_video_transformer_to_diffusers`),
but it hard-codes the 13B width (3072) when splitting the single-block `linear1` weights, so
every other width fails. This one reads the width from the tensors, which lets the tiny test
models and any future size load through the same path.
"""

from __future__ import annotations

import re

import torch

# Renames inside one block, applied to the part of the key after the block index.
_DOUBLE_BLOCK = {
    "img_mod.linear": "norm1.linear",
    "txt_mod.linear": "norm1_context.linear",
    "img_attn_q_norm": "attn.norm_q",
    "img_attn_k_norm": "attn.norm_k",
    "txt_attn_q_norm": "attn.norm_added_q",
    "txt_attn_k_norm": "attn.norm_added_k",
    "img_attn_proj": "attn.to_out.0",
    "txt_attn_proj": "attn.to_add_out",
    "img_mlp.fc1": "ff.net.0.proj",
    "img_mlp.fc2": "ff.net.2",
    "txt_mlp.fc1": "ff_context.net.0.proj",
    "txt_mlp.fc2": "ff_context.net.2",
}
_SINGLE_BLOCK = {
    "linear2": "proj_out",
    "q_norm": "attn.norm_q",
    "k_norm": "attn.norm_k",
    "modulation.linear": "norm.linear",
}
_REFINER_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "self_attn_proj": "attn.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm_out.linear",
}
_TOP_LEVEL = {
    "img_in.proj": "x_embedder.proj",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_QKV_TARGETS = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
}
_BLOCK_KEY = re.compile(r"^(double_blocks|single_blocks|txt_in\.individual_token_refiner\.blocks)\.(\d+)\.(.+)\.(weight|bias)$")
_BLOCK_PREFIX = {
    "double_blocks": ("transformer_blocks", _DOUBLE_BLOCK),
    "single_blocks": ("single_transformer_blocks", _SINGLE_BLOCK),
    "txt_in.individual_token_refiner.blocks": ("context_embedder.token_refiner.refiner_blocks", _REFINER_BLOCK),
}


class UnknownKeyError(KeyError):
    """A key of the authors' layout that this converter does not know."""


def authors_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and split the authors' weights into diffusers' `HunyuanVideoTransformer3DModel` names."""
    hidden = state["img_in.proj.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out.update(convert_authors_tensor(key, value, hidden))
    return out


def convert_authors_tensor(key: str, value: torch.Tensor, hidden: int) -> dict[str, torch.Tensor]:
    """One tensor of the authors' layout as diffusers' tensor(s); `hidden` is the model width
    (`img_in.proj.weight.shape[0]`). Lets a loader stream a file tensor by tensor."""
    out: dict[str, torch.Tensor] = {}
    match = _BLOCK_KEY.match(key)
    if match:
        _convert_block_key(match, value, hidden, out)
    elif key.startswith("final_layer.adaLN_modulation.1."):
        # The authors order the final modulation (shift, scale); diffusers' AdaLayerNormContinuous wants (scale, shift).
        shift, scale = value.chunk(2, dim=0)
        out["norm_out.linear." + key.rsplit(".", 1)[1]] = torch.cat([scale, shift], dim=0)
    else:
        stem, param = key.rsplit(".", 1)
        if stem not in _TOP_LEVEL:
            raise UnknownKeyError(key)
        out[f"{_TOP_LEVEL[stem]}.{param}"] = value
    return out


def _convert_block_key(match: re.Match, value: torch.Tensor, hidden: int, out: dict) -> None:
    group, index, name, param = match.groups()
    target_prefix, renames = _BLOCK_PREFIX[group]
    prefix = f"{target_prefix}.{index}."
    if name in _QKV_TARGETS:
        for target, part in zip(_QKV_TARGETS[name], value.chunk(3, dim=0)):
            out[f"{prefix}{target}.{param}"] = part
    elif group == "single_blocks" and name == "linear1":
        q, k, v, mlp = torch.split(value, (hidden, hidden, hidden, value.shape[0] - 3 * hidden), dim=0)
        for target, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
            out[f"{prefix}{target}.{param}"] = part
    elif name in renames:
        out[f"{prefix}{renames[name]}.{param}"] = value
    else:
        raise UnknownKeyError(f"{group}.{index}.{name}.{param}")


def diffusers_to_authors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse rename: diffusers weights in the authors' layout (used to write test checkpoints)."""
    inverse_top = {v: k for k, v in _TOP_LEVEL.items()}
    blocks = {target: (group, {v: k for k, v in renames.items()}) for group, (target, renames) in _BLOCK_PREFIX.items()}
    qkv = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stem, param = key.rsplit(".", 1)
        if stem == "norm_out.linear":
            scale, shift = value.chunk(2, dim=0)
            out[f"final_layer.adaLN_modulation.1.{param}"] = torch.cat([shift, scale], dim=0)
            continue
        if stem in inverse_top:
            out[f"{inverse_top[stem]}.{param}"] = value
            continue
        block_prefix = next(p for p in blocks if stem.startswith(p + "."))
        group, renames = blocks[block_prefix]
        index, name = stem[len(block_prefix) + 1:].split(".", 1)
        if name in renames:
            out[f"{group}.{index}.{renames[name]}.{param}"] = value
        else:
            qkv.setdefault((group, index, param), {})[name] = value
    for (group, index, param), parts in qkv.items():
        if group == "single_blocks":
            fused = [parts["attn.to_q"], parts["attn.to_k"], parts["attn.to_v"], parts["proj_mlp"]]
            out[f"{group}.{index}.linear1.{param}"] = torch.cat(fused, dim=0)
            continue
        for source, targets in _QKV_TARGETS.items():
            if targets[0] in parts and (group == "txt_in.individual_token_refiner.blocks") == (source == "self_attn_qkv"):
                out[f"{group}.{index}.{source}.{param}"] = torch.cat([parts[t] for t in targets], dim=0)
    return out
