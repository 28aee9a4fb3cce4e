"""A tiny random-weight HunyuanVideo transformer: the real architecture at toy width, for tests and the demo."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import HunyuanVideoTransformer3DModel
from safetensors.torch import save_file

from ..hunyuan_video_13b.transformer_keys import diffusers_to_authors
from ..hunyuan_video_13b.transformer_loading import IMAGE_CONDITION_TYPE, rope_axes_for
from .tiny import to_scaled_fp8

TINY_HEADS = 2
TINY_HEAD_DIM = 10


def tiny_transformer(
    text_dim: int, pooled_dim: int, latent_channels: int = 16, variant: str = "t2v", seed: int = 0
) -> HunyuanVideoTransformer3DModel:
    """Two heads of 10, one double and one single block, one refiner block; random but seeded weights."""
    in_channels = 2 * latent_channels + 1 if variant == "i2v_v1" else latent_channels
    torch.manual_seed(seed)
    model = HunyuanVideoTransformer3DModel(
        in_channels=in_channels,
        out_channels=latent_channels,
        num_attention_heads=TINY_HEADS,
        attention_head_dim=TINY_HEAD_DIM,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=4.0,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=variant in ("t2v", "i2v_v2"),
        text_embed_dim=text_dim,
        pooled_projection_dim=pooled_dim,
        rope_axes_dim=rope_axes_for(TINY_HEAD_DIM),
        image_condition_type=IMAGE_CONDITION_TYPE[variant],
    )
    # Random init leaves some projections at zero (AdaLN-zero); give every weight a visible value.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def save_transformer(
    model: HunyuanVideoTransformer3DModel, path: str | Path, layout: str = "authors", prefix: str = "", fp8: bool = False
) -> Path:
    """Write `model` as the users' files are: the authors' single file (optionally prefixed, or fp8 with
    per-tensor scales), or a diffusers folder."""
    path = Path(path)
    if layout == "diffusers":
        model.save_pretrained(path, safe_serialization=True)
        return path
    if layout != "authors":
        raise ValueError(f"layout must be 'authors' or 'diffusers', got {layout!r}")
    state = diffusers_to_authors({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})
    metadata = None
    if fp8:
        state = to_scaled_fp8(state, quantize=lambda key, value: key.endswith(".weight") and value.ndim == 2)
        metadata = {"format": "pt"}
    state = {prefix + k: v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path
