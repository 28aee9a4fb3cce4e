"""HunyuanVideo 1.5's super-resolution stage: the latent upsampler loader and the SR node (480p -> 720p,
720p -> 1080p) with the authors' recipe."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.image_conditioning import check_single_image
from ...pipelines.hunyuan_video_15.sampling import MAX_SEED, VAE_SPATIAL, VAE_TEMPORAL
from ...pipelines.hunyuan_video_15.super_resolution import (
    DEFAULT_NOISE_AUGMENTATION,
    SRRequest,
    check_sr_job,
    generate_sr,
    prepare_sr_image,
    sr_request,
    sr_size,
)
from ...pipelines.hunyuan_video_15.upsampler import load_upsampler
from .. import host
from ..previews import SamplingProgress, preview_mode
from ..shared import multigpu
from ..types import HV15_EMBEDS, HV15_TRANSFORMER, HV15_UPSAMPLER, HV15_VAE, HV15_VISION
from ..validation import validate

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
UPSAMPLER_FOLDER = "latent_upscale_models"  # ComfyUI's (0.3.71 and newer; registered by the pack on older ones)


class HYVSHV15UpsamplerLoader:
    DESCRIPTION = ("Loads a HunyuanVideo 1.5 latent upsampler for the super-resolution stage: the 720p one (480p -> "
                   "720p) or the 1080p one (720p -> 1080p), from ComfyUI's hunyuanvideo15_latent_upsampler_720p/1080p "
                   "file or the authors' upsampler/720p_sr_distilled or 1080p_sr_distilled folder. fp32, kept off the "
                   "GPU until the HV1.5 Super-Resolution node runs.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_UPSAMPLER,)
    RETURN_NAMES = ("upsampler",)
    OUTPUT_TOOLTIPS = ("The latent upsampler; its resolution (720p or 1080p) must be the SR transformer's.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "upsampler": (host.model_choices(UPSAMPLER_FOLDER, with_diffusers=False, with_saved_folders=True), {
                    "tooltip": "hunyuanvideo15_latent_upsampler_720p or _1080p.safetensors from "
                    "models/latent_upscale_models, or the authors' upsampler/<720p_sr_distilled|1080p_sr_distilled> "
                    "folder (config.json + weights) placed there. 720p or 1080p is read from the weights."}),
            }
        }

    def load(self, upsampler):
        return (load_upsampler(host.resolve_choice(UPSAMPLER_FOLDER, upsampler), device=host.offload_device()),)


class HYVSHV15SuperResolution:
    DESCRIPTION = ("HunyuanVideo 1.5's super-resolution stage as the authors run it: the base video's latent resized "
                   "to the 720p (from 480p) or 1080p (from 720p) bucket of the closest aspect ratio, refined by the "
                   "latent upsampler, noised (0.7), then sampled again by the SR transformer with the prompt (CFG 1, "
                   "shift 2, 6 steps to 720p, 8 to 1080p). Decode the result with HV1.5 Decode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent at the higher resolution (32 channels); decode it with HV1.5 Decode.",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (HV15_TRANSFORMER, {"tooltip": "The super-resolution DiT, from the HV1.5 transformer "
                                "loader: hunyuanvideo1.5_720p_sr_distilled (480p -> 720p) or _1080p_sr_distilled "
                                "(720p -> 1080p). A T2V or I2V transformer is refused."}),
                "upsampler": (HV15_UPSAMPLER, {"tooltip": "From the HV1.5 Latent Upsampler Loader, of the SR "
                              "transformer's resolution (the 720p one with the 720p SR DiT, the 1080p one with the "
                              "1080p)."}),
                "positive": (HV15_EMBEDS, {"tooltip": "The base stage's prompt, from HV1.5 Text Encode. The authors "
                             "run this stage at CFG 1, so it takes no negative prompt."}),
                "latent": ("LATENT", {"tooltip": "The base video's latent, from the HV1.5 Sampler. The output is the "
                           "SR resolution's bucket with the closest aspect ratio, as the authors map it: 848x480 -> "
                           "1280x720 (720p), 1280x720 -> 1904x1072 (1080p)."}),
                "noise_augmentation": ("FLOAT", {"default": DEFAULT_NOISE_AUGMENTATION, "min": 0.0, "max": 1.0,
                                       "step": 0.01, "tooltip": "Noise mixed into the upscaled base latent before the "
                                       "SR transformer reads it, (1 - s) x latent + s x noise; the authors use 0.7. "
                                       "As theirs, the transformer stops seeing that latent from the first step "
                                       "below t = 1000 x s (700)."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": "Denoising steps; 0: the SR "
                          "variant's (6 to 720p, 8 to 1080p)."}),
                "flow_shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                               "tooltip": "Shift of the schedule; 0: the SR variant's (2.0)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": "Seed of the fresh noise and of the augmentation noise (both drawn from one CPU "
                         "generator); the same seed gives the same video on the same device."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Image-to-video: the same first frame the base stage used (one "
                          "picture); it is encoded again at the output size. Needs vae and vision. Leave it empty "
                          "for text-to-video."}),
                "vae": (HV15_VAE, {"tooltip": "The HV1.5 VAE, to encode image (used only with image)."}),
                "vision": (HV15_VISION, {"tooltip": "The SigLIP encoder from the HV1.5 Vision Loader, to read image "
                           "(used only with image)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, noise_augmentation=None, steps=None, flow_shift=None):
        values = {"noise_augmentation": noise_augmentation, "steps": steps, "flow_shift": flow_shift}

        def rules():
            SRRequest(steps=steps or 1, flow_shift=flow_shift or 1.0, noise_augmentation=noise_augmentation).validate()

        return validate(cls, values, rules)

    def upscale(self, transformer, upsampler, positive, latent, noise_augmentation, steps, flow_shift, seed,
                image=None, vae=None, vision=None, unique_id=None):
        latents = latent["samples"]
        if image is not None:
            missing = [name for name, value in (("vae", vae), ("vision", vision)) if value is None]
            if missing:
                raise ValueError(f"image needs {' and '.join(missing)} too: connect the HV1.5 VAE Loader to vae and "
                                 "the HV1.5 Vision Loader to vision (or disconnect image for text-to-video)")
            check_single_image(image)
        resolution = check_sr_job(transformer, upsampler, latents, None)
        request = sr_request(transformer.variant, steps, flow_shift, noise_augmentation, seed)
        request.validate()
        batch, _, frames, low_h, low_w = latents.shape
        width, height = sr_size(low_w * VAE_SPATIAL, low_h * VAE_SPATIAL, resolution)
        num_frames = (frames - 1) * VAE_TEMPORAL + 1
        host.send_progress_text(f"{transformer.variant.title}: {low_w * VAE_SPATIAL}x{low_h * VAE_SPATIAL} -> "
                                f"{width}x{height}, {num_frames} frames, {request.steps} steps, shift "
                                f"{request.flow_shift:g}, noise {request.noise_augmentation:g}", unique_id)
        condition = None
        if image is not None:
            with host.on_compute_device(vae, vision):
                condition = prepare_sr_image(vae, vision, image, width, height, resolution)
        host.check_interrupt()
        progress = SamplingProgress(request.steps, unique_id, "hunyuan_video_15", preview_mode(transformer), stage="super-resolution")
        out = multigpu.sample(transformer, progress, (width, height, num_frames, batch), generate_sr, upsampler,
                              positive, latents, request, condition, node_id=unique_id,
                              modules=(upsampler,))  # small; it runs once, before the first step
        return ({"samples": out.cpu()},)


NODE_CLASS_MAPPINGS = {
    "HYVS_HV15UpsamplerLoader": HYVSHV15UpsamplerLoader,
    "HYVS_HV15SuperResolution": HYVSHV15SuperResolution,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_HV15UpsamplerLoader": "HunyuanVideo Suite: HV1.5 Latent Upsampler Loader",
    "HYVS_HV15SuperResolution": "HunyuanVideo Suite: HV1.5 Super-Resolution",
}
