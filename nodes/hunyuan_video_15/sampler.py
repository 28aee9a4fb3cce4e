"""The HunyuanVideo 1.5 sampler node: T2V, or I2V with image conditioning, with the loaded variant's recipe."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.sampling import (
    MAX_SEED,
    Request15,
    batch_cfg_fits,
    check_job,
    generate,
    recipe_request,
)
from ...pipelines.hunyuan_video_15.sizes import ASPECT_RATIOS, size_for_aspect
from .. import host
from ..previews import SamplingProgress, preview_mode
from ..shared import multigpu
from ..types import HV15_EMBEDS, HV15_IMAGE_CONDITIONING, HV15_TRANSFORMER
from ..validation import validate

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
CFG_BATCHING = ("auto", "batched", "sequential")


class HYVSHV15Sampler:
    DESCRIPTION = ("HunyuanVideo 1.5 sampling with the loaded variant's recipe (CFG, shift, steps; 0 keeps it): T2V at "
                   "the authors' bucket for the aspect ratio, or I2V from image conditioning at the image's bucket.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent (32 channels); decode it with the HV1.5 Decode node.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (HV15_TRANSFORMER, {"tooltip": "From the HV1.5 transformer loader; its variant sets the recipe."}),
                "positive": (HV15_EMBEDS, {"tooltip": "The prompt, from HV1.5 Text Encode."}),
                "negative": (HV15_EMBEDS, {"tooltip": "The negative prompt, from HV1.5 Text Encode (used when cfg is above 1)."}),
                "aspect_ratio": ([*ASPECT_RATIOS, "custom"], {"default": "16:9", "tooltip": "T2V: the authors' bucket "
                                 "closest to this ratio at the model's resolution (16:9 is 848x480 at 480p, 1280x720 at 720p). "
                                 "custom: width and height below. I2V ignores it: the image's bucket is used."}),
                "width": ("INT", {"default": 848, "min": 16, "max": 2048, "step": 16, "tooltip": "Width for aspect_ratio 'custom' (a multiple of 16)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 2048, "step": 16, "tooltip": "Height for aspect_ratio 'custom' (a multiple of 16)."}),
                "num_frames": ("INT", {"default": 121, "min": 1, "max": 241, "step": 4, "tooltip": "Frames, 4k+1; 121 (about 5 s at 24 fps) is what the authors trained and recommend."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 200, "tooltip": "Denoising steps; 0: the variant's (50; 12 for the step-distilled model, which also runs well at 8)."}),
                "cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance; 0: the variant's (6, or 1 = off for the CFG- and step-distilled models). Above 1 it runs the negative prompt too."}),
                "flow_shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Shift of the schedule; 0: the variant's (480p 5, 720p T2V 9, 720p I2V 7, step-distilled 7)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Noise seed; the same seed gives the same video on the same device."}),
                "cfg_batching": (list(CFG_BATCHING), {"default": "auto", "tooltip": "With cfg above 1: batched runs both branches in one call, as the authors (faster); sequential one after the other (half the activation memory); auto batches when every block fits on the GPU."}),
            },
            "optional": {
                "image_conditioning": (HV15_IMAGE_CONDITIONING, {"tooltip": "I2V: the first frame, from HV1.5 Image Conditioning. Needed by I2V variants, refused by T2V ones."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, num_frames=None, steps=None, cfg=None, flow_shift=None):
        values = {"width": width, "height": height, "num_frames": num_frames, "steps": steps, "cfg": cfg,
                  "flow_shift": flow_shift}

        def rules():
            if 0 < cfg < 1:
                raise ValueError(f"cfg must be 0 (the variant's), 1 (off) or more, got {cfg}")
            Request15(width=width, height=height, num_frames=num_frames, steps=steps or 1, cfg=cfg or 1.0,
                      flow_shift=flow_shift or 1.0).validate()

        return validate(cls, values, rules)

    def sample(self, transformer, positive, negative, aspect_ratio, width, height, num_frames, steps, cfg, flow_shift,
               seed, cfg_batching, image_conditioning=None, unique_id=None):
        variant = transformer.variant
        check_job(variant, image_conditioning)
        if image_conditioning is not None:
            if image_conditioning.resolution != variant.resolution:
                raise ValueError(f"image_conditioning was made for {image_conditioning.resolution}, the transformer is "
                                 f"{variant.title}: set the conditioning's resolution to {variant.resolution}")
            width, height = image_conditioning.width, image_conditioning.height
        elif aspect_ratio != "custom":
            width, height = size_for_aspect(aspect_ratio, variant.resolution)
        request = recipe_request(variant, width, height, num_frames, steps, cfg, flow_shift, seed)
        request.validate()
        device = host.torch_device()
        cfg_batching = multigpu.cfg_batching(transformer, cfg_batching)
        request.batch_cfg = cfg_batching == "batched" or (cfg_batching == "auto" and batch_cfg_fits(transformer, request, device))
        calls = 2 if request.batch_cfg and request.cfg > 1 else 1
        host.send_progress_text(f"{variant.title}: {width}x{height}, {request.num_frames} frames, {request.steps} steps, "
                                f"cfg {request.cfg:g}, shift {request.flow_shift:g}", unique_id)
        progress = SamplingProgress(request.steps, unique_id, "hunyuan_video_15", preview_mode(transformer))
        latents = multigpu.sample(transformer, progress, (width, height, request.num_frames, calls), generate, positive,
                                  negative if request.cfg > 1 else None, request, image_conditioning, node_id=unique_id,
                                  batched_cfg=calls == 2)
        return ({"samples": latents.cpu()},)


NODE_CLASS_MAPPINGS = {"HYVS_HV15Sampler": HYVSHV15Sampler}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_HV15Sampler": "HunyuanVideo Suite: HV1.5 Sampler"}
