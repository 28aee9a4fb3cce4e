"""HunyuanCustom reference-to-video nodes: the reference conditioning and the Custom sampler."""

from __future__ import annotations

from ...pipelines.hunyuan_video_13b.custom import (
    CFG_BATCHING,
    CUSTOM_NEGATIVE_PROMPT,
    CUSTOM_SIZES,
    CustomRequest,
    check_size,
    generate_custom,
    prepare_custom,
    require_custom,
)
from ...pipelines.hunyuan_video_13b.custom_prompt import DEFAULT_SUBJECT, check_subject
from ...pipelines.hunyuan_video_13b.image_prompt import require_vision
from ...pipelines.hunyuan_video_13b.t2v import MAX_SEED, VAE_TEMPORAL
from .. import host
from ..previews import SamplingProgress, preview_mode
from ..shared import multigpu
from ..types import CUSTOM_CONDITIONING, TEXT_ENCODERS, TRANSFORMER, VAE
from ..validation import validate
from .inputs import riflex_input

CATEGORY = "HunyuanVideo Suite/custom"
SIZES_TOOLTIP = "The authors' sizes (width x height): " + ", ".join(f"{w}x{h}" for w, h in CUSTOM_SIZES) + "."


class HYVSCustomConditioning:
    DESCRIPTION = (
        "HunyuanCustom reference-to-video conditioning, as the authors' code does it: the reference padded white to the "
        "video size and VAE-encoded, the prompt read with the reference's LLaVA image tokens ('The <subject> looks like "
        "<image>'), the negative prompt with an all-white image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CUSTOM_CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Reference and prompts for the HunyuanVideo Suite Custom sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoders": (TEXT_ENCODERS, {"tooltip": "Text encoders with the LLaVA vision tower (Load LLaVA Vision)."}),
                "vae": (VAE, {"tooltip": "The HunyuanVideo VAE; it encodes the reference."}),
                "image": ("IMAGE", {"tooltip": "The reference: one picture of the subject, best on a plain white background. Only the first image of a batch is used."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the subject does in the video."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": CUSTOM_NEGATIVE_PROMPT, "tooltip": "The authors' negative prompt by default; read with an all-white image."}),
                "subject": ("STRING", {"default": DEFAULT_SUBJECT, "tooltip": "One word for what the reference shows (person, man, woman, dog, object...): the prompt gets 'The <subject> looks like <image>'. The authors' default is object."}),
                "width": ("INT", {"default": 1280, "min": 16, "max": 2048, "step": 16, "tooltip": "Video width, a multiple of 16. " + SIZES_TOOLTIP}),
                "height": ("INT", {"default": 720, "min": 16, "max": 2048, "step": 16, "tooltip": "Video height, a multiple of 16. " + SIZES_TOOLTIP}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, subject=None):
        values = {"width": width, "height": height, "subject": subject}

        def rules():
            check_size(width, height)
            check_subject(subject)

        return validate(cls, values, rules)

    def encode(self, text_encoders, vae, image, prompt, negative_prompt, subject, width, height):
        require_vision(text_encoders)
        check_size(width, height)
        check_subject(subject)
        with host.text_encoders_on_compute_device(text_encoders) as device, host.on_compute_device(vae):
            conditioning = prepare_custom(text_encoders, vae, image, prompt, negative_prompt, subject, width, height, device)
        return (conditioning,)


class HYVSCustomSampler:
    DESCRIPTION = (
        "HunyuanCustom sampling with the authors' defaults: real CFG 7.5 with the reference in both branches, no "
        "guidance embedding, shift 13, 30 steps, 129 frames, their 30-step cache. Needs the Custom transformer."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent; decode it with the HunyuanVideo Suite decoder.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "The HunyuanCustom transformer (hunyuan_video_custom_720p_fp8_scaled.safetensors)."}),
                "conditioning": (CUSTOM_CONDITIONING, {"tooltip": "From the Custom conditioning node."}),
                "num_frames": ("INT", {"default": 129, "min": 1, "max": 257, "step": 4, "tooltip": "Frames, 4k+1; the authors use 129 (about 5 s at 25 fps)."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Denoising steps; the authors use 30."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance (two passes a step); the authors use 7.5. 1.0 turns it off."}),
                "flow_shift": ("FLOAT", {"default": 13.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "Shift of the flow-matching schedule; the authors use 13."}),
                "ip_cfg_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "0 is off. Above 0: a third pass pushing towards the reference, weighted from this value down to 1 over the steps (the authors' ip_cfg_scale)."}),
                "step_cache": ("BOOLEAN", {"default": True, "tooltip": "The authors' cache at exactly 30 steps: on 8 of the steps only the last block runs. No effect at other step counts."}),
                "cfg_batching": (list(CFG_BATCHING), {"default": "auto", "tooltip": "Run the guidance passes as one batch: faster, more memory. auto: batched when the GPU has room."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Seed of the noise and of the reference's VAE sample."}),
            },
            "optional": {"riflex": riflex_input()},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, num_frames=None, ip_cfg_scale=None, cfg=None):
        values = {"num_frames": num_frames, "ip_cfg_scale": ip_cfg_scale, "cfg": cfg}
        return validate(cls, values, lambda: CustomRequest(num_frames=num_frames, ip_cfg_scale=ip_cfg_scale, cfg=cfg).validate())

    def sample(self, transformer, conditioning, num_frames, steps, cfg, flow_shift, ip_cfg_scale, step_cache, cfg_batching,
               seed, riflex="auto", unique_id=None):
        cfg_batching = multigpu.cfg_batching(transformer, cfg_batching)
        request = CustomRequest(num_frames=num_frames, steps=steps, cfg=cfg, flow_shift=flow_shift, ip_cfg_scale=ip_cfg_scale,
                                step_cache=step_cache, cfg_batching=cfg_batching, seed=seed, riflex=riflex)
        request.validate()
        require_custom(transformer)
        progress = SamplingProgress(steps, unique_id, "hunyuan_video_13b", preview_mode(transformer))
        # The reference adds one latent frame of tokens: planned as 4 more video frames.
        size = (conditioning.width, conditioning.height, num_frames + VAE_TEMPORAL, 1)
        latents = multigpu.sample(transformer, progress, size, generate_custom, conditioning, request, node_id=unique_id,
                                  batched_cfg=request.cfg > 1 and request.cfg_batching == "batched")
        return ({"samples": latents.cpu()},)


NODE_CLASS_MAPPINGS = {
    "HYVS_CustomConditioning": HYVSCustomConditioning,
    "HYVS_CustomSampler": HYVSCustomSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_CustomConditioning": "HunyuanVideo Suite: Custom Ref2V Conditioning",
    "HYVS_CustomSampler": "HunyuanVideo Suite: Custom Sampler",
}
