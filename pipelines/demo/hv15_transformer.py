"""A tiny random-weight HunyuanVideo 1.5 transformer and writers of the three layouts users have."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import HunyuanVideo15Transformer3DModel
from safetensors.torch import save_file

from ..hunyuan_video_15.transformer_keys import diffusers_to_authors
from ..hunyuan_video_15.transformer_loading import rope_axes_for
from .tiny import to_scaled_fp8

TINY_HEADS = 2
TINY_HEAD_DIM = 24
LATENT_CHANNELS = 32  # the real VAE's: the latent format is part of the model
LAYOUTS = ("comfy", "authors_file", "authors_folder", "diffusers")


def tiny_transformer15(text_dim: int, byt5_dim: int, image_dim: int, meanflow: bool = False, seed: int = 0,
                       layers: int = 2, sr: bool = False) -> HunyuanVideo15Transformer3DModel:
    """Two heads of 24, `layers` double blocks, one refiner block; random but seeded weights. `sr`: the
    super-resolution DiT's 98 input channels (latent, first frame + mask, LQ latent + ones)."""
    torch.manual_seed(seed)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=(3 if sr else 2) * LATENT_CHANNELS + (2 if sr else 1),
        out_channels=LATENT_CHANNELS,
        num_attention_heads=TINY_HEADS,
        attention_head_dim=TINY_HEAD_DIM,
        num_layers=layers,
        num_refiner_layers=1,
        text_embed_dim=text_dim,
        text_embed_2_dim=byt5_dim,
        image_embed_dim=image_dim,
        rope_axes_dim=rope_axes_for(TINY_HEAD_DIM),
        use_meanflow=meanflow,
    )
    # Random init leaves AdaLN-zero projections at zero; give every weight a visible value.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def save_transformer15(model: HunyuanVideo15Transformer3DModel, path: str | Path, layout: str = "comfy",
                       variant: str = "720p_t2v", fp8: bool = False, prefix: str = "") -> Path:
    """Write `model` as users have it: `comfy` (one file, fused qkv, optionally fp8 with per-tensor scales),
    `authors_file` (one file, split q/k/v), `authors_folder` (their `config.json` naming the variant + weights),
    `diffusers` (save_pretrained)."""
    path = Path(path)
    if layout == "diffusers":
        model.save_pretrained(path, safe_serialization=True)
        return path
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    state = diffusers_to_authors({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                                 fused=layout == "comfy")
    metadata = None
    if fp8:
        state = to_scaled_fp8(state, quantize=lambda key, value: key.endswith(".weight") and value.ndim == 2
                              and key.startswith("double_blocks."))
        metadata = {"format": "pt"}
    state = {prefix + k: v.contiguous() for k, v in state.items()}
    target = path
    if layout == "authors_folder":
        path.mkdir(parents=True, exist_ok=True)
        resolution, task = variant.split("_")[:2]
        config = {"_class_name": "HunyuanVideo_1_5_DiffusionTransformer", "ideal_resolution": resolution,
                  "ideal_task": task, "use_meanflow": model.config.use_meanflow,
                  "attn_mode": "flex-block-attn" if variant.endswith("sparse") else "flash"}
        (path / "config.json").write_text(json.dumps(config))
        target = path / "diffusion_pytorch_model.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target), metadata=metadata)
    return path
