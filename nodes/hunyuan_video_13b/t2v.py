"""Text encoding and sampling nodes."""

from __future__ import annotations

from ...pipelines.hunyuan_video_13b.prompt_encoding import T2V_TEMPLATE, encode_prompt
from ...pipelines.hunyuan_video_13b.t2v import MAX_SEED, T2VRequest, generate_t2v
from ...pipelines.prompt_cache import PROMPTS
from .. import host
from ..previews import SamplingProgress, preview_mode
from ..shared import multigpu
from ..types import TEXT_EMBEDS, TEXT_ENCODERS, TRANSFORMER
from ..validation import validate
from .inputs import riflex_input

CATEGORY = "HunyuanVideo Suite/sampling"


class HYVSTextEncode:
    DESCRIPTION = "Encodes a prompt with the Llama-3 template (cropped) and the pooled CLIP-L vector, as the authors do."
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT_EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, for a sampler's positive or negative input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoders": (TEXT_ENCODERS, {"tooltip": "From the text encoder loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows; at most 256 tokens are used."}),
            }
        }

    def encode(self, text_encoders, prompt):
        def run():
            with host.text_encoders_on_compute_device(text_encoders) as device:
                return encode_prompt(text_encoders, prompt, device=device).to("cpu")

        return (PROMPTS.get_or_encode(text_encoders, ("t2v", T2V_TEMPLATE, prompt), run),)


class HYVST2VSampler:
    DESCRIPTION = (
        "Text-to-video sampling: flow matching with the authors' shift, embedded guidance (one pass a step) "
        "and optional true CFG with a negative prompt (two passes a step)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent; decode it with the HunyuanVideo Suite decoder or core VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "A T2V transformer from the loader (HunyuanCustom has its own sampler)."}),
                "positive": (TEXT_EMBEDS, {"tooltip": "The encoded prompt."}),
                "width": ("INT", {"default": 960, "min": 16, "max": 2048, "step": 16, "tooltip": "Width in pixels, a multiple of 16. 540p buckets: 960x544, 544x960, 832x624, 624x832, 720x720."}),
                "height": ("INT", {"default": 544, "min": 16, "max": 2048, "step": 16, "tooltip": "Height in pixels, a multiple of 16. 720p buckets: 1280x720, 720x1280, 1104x832, 832x1104, 960x960."}),
                "num_frames": ("INT", {"default": 129, "min": 1, "max": 257, "step": 4, "tooltip": "Frames, 4k+1 (129 = about 5 s at 24 fps)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200, "tooltip": "Denoising steps; the authors use 50."}),
                "embedded_guidance": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Guidance the T2V model was distilled with; 6.0 is the authors' value. Costs nothing extra."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "True classifier-free guidance; 1.0 is off. Above 1 it needs a negative prompt and doubles the time."}),
                "flow_shift": ("FLOAT", {"default": 7.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "Shift of the flow-matching schedule; the authors use 7 for T2V (17 for very short step counts)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Noise seed; the same seed gives the same video on the same device."}),
            },
            "optional": {
                "negative": (TEXT_EMBEDS, {"tooltip": "Encoded negative prompt, used only when cfg is above 1."}),
                "riflex": riflex_input(),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, num_frames=None):
        values = {"width": width, "height": height, "num_frames": num_frames}
        return validate(cls, values, lambda: T2VRequest(width=width, height=height, num_frames=num_frames).validate())

    def sample(self, transformer, positive, width, height, num_frames, steps, embedded_guidance, cfg, flow_shift, seed,
               negative=None, riflex="auto", unique_id=None):
        request = T2VRequest(
            width=width, height=height, num_frames=num_frames, steps=steps, embedded_guidance=embedded_guidance,
            true_cfg=cfg, flow_shift=flow_shift, seed=seed, riflex=riflex,
            cfg_batching=multigpu.own_cfg_batching(transformer),
        )
        request.validate()
        progress = SamplingProgress(steps, unique_id, "hunyuan_video_13b", preview_mode(transformer))
        latents = multigpu.sample(transformer, progress, (width, height, num_frames, 1), generate_t2v, positive,
                                  request, negative=negative, node_id=unique_id,
                                  batched_cfg=request.true_cfg > 1 and request.cfg_batching == "batched")
        return ({"samples": latents.cpu()},)


NODE_CLASS_MAPPINGS = {"HYVS_TextEncode": HYVSTextEncode, "HYVS_T2VSampler": HYVST2VSampler}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_TextEncode": "HunyuanVideo Suite: Text Encode",
    "HYVS_T2VSampler": "HunyuanVideo Suite: T2V Sampler",
}
