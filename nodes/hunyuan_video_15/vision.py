"""The HunyuanVideo 1.5 vision loader: the SigLIP encoder whose image tokens condition I2V."""

from __future__ import annotations

import torch

from ...pipelines.hunyuan_video_15.vision_loading import load_vision
from .. import host
from ..types import HV15_VISION

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class HYVSHV15VisionLoader:
    DESCRIPTION = ("Loads the SigLIP vision encoder (patch 14 at 384 px, 729 image tokens of 1152) that HunyuanVideo "
                   "1.5's image-to-video reads the first frame with, from ComfyUI's clip_vision file or a diffusers "
                   "image_encoder/. A LLaVA/CLIP vision tower is refused.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_VISION,)
    RETURN_NAMES = ("vision",)
    OUTPUT_TOOLTIPS = ("The SigLIP vision encoder, kept off the GPU until it reads an image.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vision": (host.model_choices("clip_vision", with_diffusers=True), {
                    "tooltip": "sigclip_vision_patch14_384.safetensors from models/clip_vision, or a HunyuanVideo 1.5 "
                    "I2V folder in models/diffusers (its image_encoder/ is used)."}),
                "dtype": (list(DTYPES), {"default": "fp16", "tooltip": "Precision it runs in (the authors use fp16)."}),
            }
        }

    def load(self, vision, dtype):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        return (load_vision(host.resolve_choice("clip_vision", vision), DTYPES[dtype], host.offload_device()),)


NODE_CLASS_MAPPINGS = {"HYVS_HV15VisionLoader": HYVSHV15VisionLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_HV15VisionLoader": "HunyuanVideo Suite: HV1.5 Vision Loader"}
