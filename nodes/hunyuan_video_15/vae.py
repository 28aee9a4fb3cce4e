"""HunyuanVideo 1.5 VAE nodes: the loader and the decode to IMAGE frames and a VIDEO."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.decoding import TilingOptions15, decode_latents
from ...pipelines.hunyuan_video_15.vae_loading import VAE_DTYPES, load_vae
from .. import host
from ..previews import StageProgress
from ..types import HV15_VAE
from ..validation import validate

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"


class HYVSHV15VAELoader:
    DESCRIPTION = ("Loads the HunyuanVideo 1.5 VAE (32 latent channels, 16x spatial and 4x temporal compression) from "
                   "ComfyUI's hunyuanvideo15_vae_fp16.safetensors, a file in diffusers' names, or a diffusers folder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The HunyuanVideo 1.5 VAE, kept off the GPU until it encodes or decodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = host.model_choices("vae", with_diffusers=True)
        return {
            "required": {
                "vae": (choices, {"tooltip": "hunyuanvideo15_vae_fp16.safetensors from models/vae, or a HunyuanVideo "
                                  "1.5 folder in models/diffusers (its vae/ is used). A 13B VAE is refused."}),
                "dtype": (list(VAE_DTYPES), {"default": "auto", "tooltip": "Precision for encoding and decoding. auto: "
                                             "as stored (fp16 for ComfyUI's file, as the authors decode); fp32 is "
                                             "slowest and most exact."}),
            }
        }

    def load(self, vae, dtype):
        return (load_vae(host.resolve_choice("vae", vae), dtype=dtype, device=host.offload_device()),)


class HYVSHV15Decode:
    DESCRIPTION = ("Decodes a HunyuanVideo 1.5 latent to frames and a video. Spatial tiles as the authors' (seams "
                   "blended); temporal chunks give exactly the frames of one pass while the GPU memory stays flat as "
                   "clips get longer. Progress per tile and chunk; Cancel stops between them.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "VIDEO")
    RETURN_NAMES = ("frames", "video")
    OUTPUT_TOOLTIPS = ("All frames as an image batch.",
                       "The frames as a video at the chosen fps (connect to Save Video).")
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (HV15_VAE, {"tooltip": "The HunyuanVideo 1.5 VAE."}),
                "samples": ("LATENT", {"tooltip": "A HunyuanVideo 1.5 latent (32 channels), e.g. from a 1.5 sampler."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Frame rate of the video output; HunyuanVideo 1.5 is made for 24."}),
                "spatial_tiling": ("BOOLEAN", {"default": True, "tooltip": "Decode in overlapping tiles, as the "
                                               "authors; needed for 480p and up on most GPUs."}),
                "tile_size": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 16,
                                      "tooltip": "Tile size in pixels (the authors: 256; 128 on GPUs up to 21 GB)."}),
                "tile_overlap": ("INT", {"default": 32, "min": 0, "max": 512, "step": 16,
                                         "tooltip": "Overlap of neighbouring tiles in pixels, blended to hide seams "
                                         "(the authors: 32)."}),
                "temporal_tiling": ("BOOLEAN", {"default": True, "tooltip": "Decode a few frames at a time, carrying "
                                                "the causal decoder's state over: the same frames, far less memory."}),
                "tile_frames": ("INT", {"default": 16, "min": 4, "max": 256, "step": 4,
                                        "tooltip": "Frames per temporal chunk; more is a little faster and needs more "
                                        "memory."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, tile_size=None, tile_overlap=None, tile_frames=None):
        values = {"tile_size": tile_size, "tile_overlap": tile_overlap, "tile_frames": tile_frames}
        tiling = TilingOptions15(True, tile_size, tile_overlap, True, tile_frames)
        return validate(cls, values, tiling.validate)

    def decode(self, vae, samples, fps, spatial_tiling, tile_size, tile_overlap, temporal_tiling, tile_frames,
               unique_id=None):
        tiling = TilingOptions15(spatial_tiling, tile_size, tile_overlap, temporal_tiling, tile_frames)
        tiling.validate()
        host.check_interrupt()
        on_tile = StageProgress(unique_id, "decoding", "tile")  # its size is known once decoding starts

        with host.on_compute_device(vae):
            frames = decode_latents(vae, samples["samples"], tiling, on_tile)
        images = frames.reshape(-1, *frames.shape[2:])
        return (images, host.video_from_frames(images, fps))


NODE_CLASS_MAPPINGS = {"HYVS_HV15VAELoader": HYVSHV15VAELoader, "HYVS_HV15Decode": HYVSHV15Decode}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_HV15VAELoader": "HunyuanVideo Suite: HV1.5 VAE Loader",
    "HYVS_HV15Decode": "HunyuanVideo Suite: HV1.5 Decode",
}
