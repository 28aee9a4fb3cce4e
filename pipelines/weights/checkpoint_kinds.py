"""Naming what a weight file holds, from its tensor names alone, for error messages.

When a user picks the wrong file (a VAE in the transformer slot, CLIP as the LLM), the
loaders say what they were given as well as what they expected. The guess needs only the
key names, so it works from a safetensors header without reading any weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_KINDS: tuple[tuple[str, re.Pattern], ...] = (
    ("a HunyuanVideo transformer", re.compile(r"(^|\.)(double_blocks|single_blocks|txt_in|img_in)\.")),
    ("a diffusers HunyuanVideo transformer", re.compile(r"(^|\.)(transformer_blocks|single_transformer_blocks|context_embedder)\.")),
    ("a HunyuanVideo VAE (authors'/diffusers layout)", re.compile(r"(^|\.)(encoder\.down_blocks|decoder\.up_blocks)\.")),
    ("a VAE in ComfyUI's layout", re.compile(r"(^|\.)(encoder\.down|decoder\.up)\.\d+\.block\.")),
    ("a LLaVA vision tower", re.compile(r"(^|\.)(vision_tower|vision_model|multi_modal_projector)\.")),
    ("a Llama language model", re.compile(r"(^|\.)layers\.\d+\.self_attn\.o_proj\.|(^|\.)embed_tokens\.")),
    # Among the decoder-only LLMs only Qwen2 (Qwen2.5-VL's language model) has q/k/v biases; CLIP and SigLIP
    # have them too, but under `encoder.layers`.
    ("a Qwen2.5 language model", re.compile(r"(^|\.)(?<!encoder\.)layers\.\d+\.self_attn\.[qkv]_proj\.bias$")),
    ("a CLIP text encoder", re.compile(r"(^|\.)(encoder\.layers\.\d+\.self_attn\.out_proj|token_embedding)\.")),
    ("a T5 text encoder", re.compile(r"(^|\.)(encoder\.block\.\d+\.layer|shared)\.")),
)


# Kinds that one distinctive tensor name decides, before the counts: the HunyuanVideo 1.5 VAE shares its
# block names with ComfyUI's layout of other VAEs but alone normalises with RMS `gamma`s in the mid block.
_MARKED: tuple[tuple[str, re.Pattern], ...] = (
    ("a HunyuanVideo 1.5 VAE", re.compile(r"(^|\.)(encoder|decoder)\.(mid|mid_block)\.\S*norm1\.gamma$")),
    ("a SigLIP vision encoder", re.compile(r"(^|\.)head\.probe$")),  # SigLIP's pooling head, when a file keeps it
)


def guess_checkpoint_kind(keys: Iterable[str]) -> str:
    """A short phrase such as "a CLIP text encoder", or "an unrecognised set of N tensors"."""
    keys = list(keys)
    for name, pattern in _MARKED:
        if any(pattern.search(k) for k in keys):
            return name
    counts = {name: sum(1 for k in keys if pattern.search(k)) for name, pattern in _KINDS}
    best = max(counts, key=counts.get) if counts else None
    if best is None or counts[best] == 0:
        example = ", ".join(sorted(keys)[:3])
        return f"an unrecognised set of {len(keys)} tensors (e.g. {example})" if keys else "no tensors at all"
    return best
