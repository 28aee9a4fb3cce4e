"""Tiny random-weight HunyuanVideo 1.5 latent upsamplers (720p and 1080p) and writers of both file layouts, for tests.

They keep the real 32 latent channels in and out and the real structure (the 1080p one with two levels, the
second narrower so a resnet shortcut convolution exists, and a channel-repeat skip of 2), with widths of a few
channels, so they build and run on the CPU in milliseconds. The norms' gammas are randomised too, since a
freshly built model has them at one and would hide a mistake in the norm.

Layouts: `comfy`, one .safetensors in the authors' tensor names, as ComfyUI's
`hunyuanvideo15_latent_upsampler_{720p,1080p}.safetensors`; `folder`, the authors' `upsampler/<version>/`
folder (a diffusers `save_pretrained` of their class: config.json + diffusion_pytorch_model.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..hunyuan_video_15.upsampler import AUTHORS_CLASSES, Upsampler720p, Upsampler1080p
from ..hunyuan_video_15.vae_loading import LATENT_CHANNELS

UPSAMPLER_LAYOUTS = ("comfy", "folder")
TINY_720P = {"in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "hidden_channels": 8, "num_blocks": 2}
TINY_1080P = {"z_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
              "block_out_channels": (2 * LATENT_CHANNELS, LATENT_CHANNELS), "num_res_blocks": 1}


def tiny_upsampler(kind: str, seed: int = 0) -> torch.nn.Module:
    """A random 720p or 1080p upsampler in fp32, eval mode, deterministic for `seed`, global RNG left alone."""
    if kind not in AUTHORS_CLASSES:
        raise ValueError(f"kind must be one of {', '.join(AUTHORS_CLASSES)}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Upsampler720p(**TINY_720P) if kind == "720p" else Upsampler1080p(**TINY_1080P)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("gamma"):
                    param.uniform_(0.5, 1.5)
    return model.eval()


def _authors_config(model: torch.nn.Module) -> dict:
    """The config.json the authors' `from_pretrained` reads for `model` (their constructor's arguments)."""
    if model.kind == "720p":
        config = {"in_channels": model.in_conv.conv.in_channels, "out_channels": model.out_conv.conv.out_channels,
                  "hidden_channels": model.in_conv.conv.out_channels, "num_blocks": len(model.blocks),
                  "global_residual": model.global_residual}
    else:
        config = {"z_channels": model.conv_in.conv.in_channels, "out_channels": model.conv_out.conv.out_channels,
                  "block_out_channels": [level.block[0].conv1.conv.out_channels for level in model.up],
                  "num_res_blocks": len(model.up[0].block) - 1, "is_residual": False}
    return {"_class_name": AUTHORS_CLASSES[model.kind], **config}


def save_upsampler(model: torch.nn.Module, path: str | Path, layout: str = "comfy") -> Path:
    """`comfy`: the single file `path`; `folder`: the folder `path` (e.g. `upsampler/720p_sr_distilled`)."""
    if layout not in UPSAMPLER_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(UPSAMPLER_LAYOUTS)}, got {layout!r}")
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if layout == "folder":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(_authors_config(model), indent=2))
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
