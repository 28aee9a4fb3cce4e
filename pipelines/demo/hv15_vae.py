"""A tiny random-weight HunyuanVideo 1.5 VAE and writers of its three file layouts, for the tests.

The widths are the smallest the architecture allows with the real 32 latent channels (the last width is a
multiple of 2 x 32, every down/upsampling regroups channels evenly), with the real depth: five levels,
two layers per block, 16x spatial and 4x temporal compression, causal convolutions and the mid-block
attention. Built on the CPU in well under a second, deterministically for a seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo15
from safetensors.torch import save_file

from ..hunyuan_video_15.vae_loading import (
    LATENT_CHANNELS,
    SPATIAL_COMPRESSION,
    TEMPORAL_COMPRESSION,
    VAE_SCALING,
    diffusers_to_authors_vae,
)

TINY_VAE15_WIDTHS = (8, 16, 32, 64, 64)
VAE15_LAYOUTS = ("comfy", "diffusers", "diffusers_folder")


def tiny_vae15(seed: int = 0) -> AutoencoderKLHunyuanVideo15:
    """Random weights for `seed`, in fp32, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLHunyuanVideo15(
            latent_channels=LATENT_CHANNELS,
            block_out_channels=TINY_VAE15_WIDTHS,
            layers_per_block=2,
            spatial_compression_ratio=SPATIAL_COMPRESSION,
            temporal_compression_ratio=TEMPORAL_COMPRESSION,
            scaling_factor=VAE_SCALING,
        )
    return vae.eval()


def save_vae15(vae: AutoencoderKLHunyuanVideo15, path: str | Path, layout: str = "comfy") -> Path:
    """`comfy`: one .safetensors in the authors' names (ComfyUI's file); `diffusers`: one .safetensors in
    diffusers' names; `diffusers_folder`: `save_pretrained` into the folder `path` (e.g. a pipeline's `vae/`)."""
    path = Path(path)
    if layout not in VAE15_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(VAE15_LAYOUTS)}, got {layout!r}")
    if layout == "diffusers_folder":
        vae.save_pretrained(path, safe_serialization=True)
        return path
    state = {k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}
    if layout == "comfy":
        state = diffusers_to_authors_vae(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
