"""Image-to-video nodes: the LLaVA vision loader, I2V conditioning and the I2V sampler."""

from __future__ import annotations

from ...pipelines.hunyuan_video_13b.i2v import (
    DEFAULT_INTERLEAVE,
    MAX_INTERLEAVE,
    MODE_SHIFT,
    MODES,
    RESOLUTION_BASES,
    I2VRequest,
    check_pairing,
    check_single_image,
    choose_size,
    generate_i2v,
    prepare_i2v,
)
from ...pipelines.hunyuan_video_13b.image_prompt import I2V_NEGATIVE_PROMPT
from ...pipelines.hunyuan_video_13b.t2v import MAX_SEED
from ...pipelines.hunyuan_video_13b.vision_loading import load_vision
from .. import host
from ..previews import SamplingProgress, preview_mode
from ..shared import multigpu
from ..types import I2V_CONDITIONING, TEXT_ENCODERS, TRANSFORMER, VAE
from ..validation import validate
from .inputs import riflex_input

CATEGORY = "HunyuanVideo Suite/image-to-video"
VARIANT_CHOICES = {"v2 (token replace)": "i2v_v2", "v1 (concat)": "i2v_v1"}
RESOLUTION_CHOICES = [*reversed(list(RESOLUTION_BASES)), "custom"]


class HYVSLoadLlavaVision:
    DESCRIPTION = (
        "Adds the LLaVA vision tower and projector (ComfyUI's clip_vision/llava_llama3_vision.safetensors) to the "
        "text encoders, so they can read the image of an image-to-video or HunyuanCustom prompt."
    )
    CATEGORY = "HunyuanVideo Suite/loaders"
    RETURN_TYPES = (TEXT_ENCODERS,)
    RETURN_NAMES = ("text_encoders",)
    OUTPUT_TOOLTIPS = ("The same text encoders, now with the vision tower.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoders": (TEXT_ENCODERS, {"tooltip": "From the text encoder loader."}),
                "vision": (
                    host.model_files("clip_vision"),
                    {"tooltip": "llava_llama3_vision.safetensors from models/clip_vision."},
                ),
            }
        }

    def load(self, text_encoders, vision):
        path = host.resolve_choice("clip_vision", vision)
        dtype = next(text_encoders.llm.parameters()).dtype
        tower = load_vision(path, dtype=dtype, device=host.offload_device())
        width = text_encoders.llm.get_input_embeddings().weight.shape[1]
        if tower.projector.linear_2.out_features != width:
            raise ValueError(
                f"vision {vision!r} projects to width {tower.projector.linear_2.out_features} but the text encoder is "
                f"{width} wide: they do not belong together"
            )
        return (text_encoders.with_vision(tower),)


class HYVSI2VConditioning:
    DESCRIPTION = (
        "Image-to-video conditioning as the authors do it: the image fitted to the nearest size bucket (or your size), "
        "its first-frame latent, and the prompt read together with the image by LLaVA (black image for the negative)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (I2V_CONDITIONING, "INT", "INT")
    RETURN_NAMES = ("conditioning", "width", "height")
    OUTPUT_TOOLTIPS = ("For the I2V sampler.", "The video width chosen.", "The video height chosen.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The first frame of the video (one picture)."}),
                "vae": (VAE, {"tooltip": "The HunyuanVideo VAE; encodes the first-frame latent."}),
                "text_encoders": (TEXT_ENCODERS, {"tooltip": "Text encoders with the LLaVA vision tower (Load LLaVA Vision)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What happens in the video."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": I2V_NEGATIVE_PROMPT, "tooltip": "Used only when the sampler's cfg is above 1; the default is the authors', and an empty box uses it too, as their code does."}),
                "variant": (list(VARIANT_CHOICES), {"default": "v2 (token replace)", "tooltip": "Which I2V transformer will sample it: v2 is the default release (hunyuan_video_v2_replace_image_to_video), v1 the first (hunyuan_video_image_to_video)."}),
                "resolution": (RESOLUTION_CHOICES, {"default": "720p", "tooltip": "The authors' size buckets: the one closest to the image's aspect ratio is used. custom: width and height below."}),
                "width": ("INT", {"default": 1280, "min": 16, "max": 2048, "step": 16, "tooltip": "Video width for resolution 'custom' (a multiple of 16)."}),
                "height": ("INT", {"default": 720, "min": 16, "max": 2048, "step": 16, "tooltip": "Video height for resolution 'custom' (a multiple of 16)."}),
                "image_interleave": ("INT", {"default": 0, "min": 0, "max": MAX_INTERLEAVE, "tooltip": f"Keep every n-th of LLaVA's 576 image tokens, 1 to {MAX_INTERLEAVE} as the authors allow (1 keeps all); 0: the variant's default (2 for v1, 4 for v2)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, resolution=None, width=None, height=None):
        values = {"width": width, "height": height}
        if resolution != "custom":
            return validate(cls, values, lambda: None)
        return validate(cls, values, lambda: choose_size(None, "custom", width, height))

    def encode(self, image, vae, text_encoders, prompt, negative_prompt, variant, resolution, width, height,
               image_interleave, unique_id=None):
        check_single_image(image)
        chosen = VARIANT_CHOICES[variant]
        size = choose_size(image, resolution, width, height)
        interleave = image_interleave or DEFAULT_INTERLEAVE[chosen]
        kept = "every image token" if interleave == 1 else f"1 in {interleave} image tokens"
        host.send_progress_text(
            f"{resolution} size: {size[0]}x{size[1]} (image {image.shape[2]}x{image.shape[1]}), {variant}, {kept}",
            unique_id,
        )
        with host.text_encoders_on_compute_device(text_encoders) as device, host.on_compute_device(vae):
            conditioning = prepare_i2v(
                text_encoders, vae, image, prompt, variant=chosen, resolution=resolution, width=width, height=height,
                negative_prompt=negative_prompt, interleave=image_interleave, device=device,
            )
        return (conditioning, conditioning.width, conditioning.height)


class HYVSI2VSampler:
    DESCRIPTION = (
        "Image-to-video sampling for I2V v1 (concat) and v2 (token replace): stability mode (a trace of the image in "
        "the start latents, shift 7) or dynamic mode (pure noise, shift 17), embedded guidance for v2, optional true CFG."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent; the HunyuanVideo Suite decoder gives num_frames frames for v2 and num_frames - 4 "
                       "for v1 (the authors drop v1's first 4).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "An I2V v1 or v2 transformer; it must match the conditioning's variant."}),
                "conditioning": (I2V_CONDITIONING, {"tooltip": "From the I2V conditioning node."}),
                "num_frames": ("INT", {"default": 129, "min": 1, "max": 257, "step": 4, "tooltip": "Frames sampled, 4k+1 (129 = about 5 s at 24 fps). v2 gives this many; v1 gives 4 fewer (129 -> 125), as the authors' v1 drops its first 4 decoded frames."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200, "tooltip": "Denoising steps; the authors use 50."}),
                "mode": (list(MODES), {"default": "stability", "tooltip": "stability: closer to the image, less motion; dynamic: more motion, starts from pure noise."}),
                "flow_shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": f"Shift of the schedule; 0: the mode's ({MODE_SHIFT['stability']:g} stability, {MODE_SHIFT['dynamic']:g} dynamic)."}),
                "embedded_guidance": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "v2's distilled guidance (6.0, the authors' value); v1 has none and ignores it."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "True classifier-free guidance with the negative prompt; 1.0 is off, above 1 doubles the time."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Noise seed; the same seed gives the same video on the same device."}),
            },
            "optional": {"riflex": riflex_input()},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, num_frames=None, steps=None, flow_shift=None):
        values = {"num_frames": num_frames, "steps": steps, "flow_shift": flow_shift}
        return validate(cls, values, lambda: I2VRequest(num_frames=num_frames, steps=steps).validate())

    def sample(self, transformer, conditioning, num_frames, steps, mode, flow_shift, embedded_guidance, cfg, seed,
               riflex="auto", unique_id=None):
        request = I2VRequest(num_frames=num_frames, steps=steps, mode=mode, flow_shift=flow_shift or None,
                             embedded_guidance=embedded_guidance, true_cfg=cfg, seed=seed, riflex=riflex,
                             cfg_batching=multigpu.own_cfg_batching(transformer))
        request.validate()
        check_pairing(transformer.variant, conditioning)
        progress = SamplingProgress(steps, unique_id, "hunyuan_video_13b", preview_mode(transformer))
        latent = multigpu.sample(transformer, progress, (conditioning.width, conditioning.height, num_frames, 1),
                                 generate_i2v, conditioning, request, node_id=unique_id,
                                 batched_cfg=request.true_cfg > 1 and request.cfg_batching == "batched")
        return ({**latent, "samples": latent["samples"].cpu()},)


NODE_CLASS_MAPPINGS = {
    "HYVS_LoadLlavaVision": HYVSLoadLlavaVision,
    "HYVS_I2VConditioning": HYVSI2VConditioning,
    "HYVS_I2VSampler": HYVSI2VSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_LoadLlavaVision": "HunyuanVideo Suite: Load LLaVA Vision",
    "HYVS_I2VConditioning": "HunyuanVideo Suite: I2V Conditioning",
    "HYVS_I2VSampler": "HunyuanVideo Suite: I2V Sampler",
}
