"""Decoding node: latent to IMAGE frames and a VIDEO."""

from __future__ import annotations

from ...pipelines.video.decoding import DROP_FRAMES_KEY, TilingOptions, decode_latents
from .. import host
from ..previews import StageProgress
from ..types import VAE
from ..validation import validate


class HYVSDecode:
    DESCRIPTION = "Decodes a HunyuanVideo latent to frames and a video, tiled in space and time to fit in memory."
    CATEGORY = "HunyuanVideo Suite/decode"
    RETURN_TYPES = ("IMAGE", "VIDEO")
    RETURN_NAMES = ("frames", "video")
    OUTPUT_TOOLTIPS = ("All frames as an image batch.", "The frames as a video at the chosen fps (connect to Save Video).")
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "The HunyuanVideo VAE."}),
                "samples": ("LATENT", {"tooltip": "A HunyuanVideo latent, e.g. from the T2V sampler."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frame rate of the video output; HunyuanVideo is trained at 24."}),
                "spatial_tiling": ("BOOLEAN", {"default": True, "tooltip": "Decode in overlapping tiles; needed for 720p on most GPUs."}),
                "tile_size": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 8, "tooltip": "Tile size in pixels."}),
                "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 512, "step": 8, "tooltip": "Overlap of neighbouring tiles in pixels (hides seams)."}),
                "temporal_tiling": ("BOOLEAN", {"default": True, "tooltip": "Decode a few frames at a time; long clips need it."}),
                "tile_frames": ("INT", {"default": 16, "min": 8, "max": 256, "step": 4, "tooltip": "Frames per temporal tile."}),
                "frame_overlap": ("INT", {"default": 4, "min": 0, "max": 128, "step": 4, "tooltip": "Overlap of neighbouring temporal tiles in frames."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, tile_size=None, tile_overlap=None, tile_frames=None, frame_overlap=None):
        values = {"tile_size": tile_size, "tile_overlap": tile_overlap, "tile_frames": tile_frames,
                  "frame_overlap": frame_overlap}
        return validate(cls, values, lambda: TilingOptions(True, tile_size, tile_overlap, True, tile_frames, frame_overlap).validate())

    def decode(self, vae, samples, fps, spatial_tiling, tile_size, tile_overlap, temporal_tiling, tile_frames, frame_overlap,
               unique_id=None):
        tiling = TilingOptions(spatial_tiling, tile_size, tile_overlap, temporal_tiling, tile_frames, frame_overlap)
        tiling.validate()
        latents = samples["samples"]
        host.check_interrupt()
        on_chunk = StageProgress(unique_id, "decoding", "chunk")  # its size is known once decoding starts

        with host.vae_on_compute_device(vae, tuple(latents.shape), tiling, node_id=unique_id) as fitted:
            frames = decode_latents(vae, latents, fitted, on_chunk)
        frames = frames[:, samples.get(DROP_FRAMES_KEY, 0):]  # I2V v1's first frames are not part of the video
        images = frames.reshape(-1, *frames.shape[2:])
        return (images, host.video_from_frames(images, fps))


NODE_CLASS_MAPPINGS = {"HYVS_Decode": HYVSDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_Decode": "HunyuanVideo Suite: Decode"}
