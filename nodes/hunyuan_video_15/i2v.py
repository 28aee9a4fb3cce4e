"""The HunyuanVideo 1.5 image conditioning node (the first frame of an I2V video)."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.image_conditioning import check_single_image, prepare_image
from ...pipelines.hunyuan_video_15.sizes import BASE_RESOLUTIONS
from .. import host
from ..types import HV15_IMAGE_CONDITIONING, HV15_VAE, HV15_VISION

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"


class HYVSHV15ImageConditioning:
    DESCRIPTION = ("The first frame of a HunyuanVideo 1.5 image-to-video: the picture fitted (LANCZOS, centre crop) to "
                   "the authors' size bucket nearest its shape, encoded by the VAE and by SigLIP, as the authors do.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_IMAGE_CONDITIONING, "INT", "INT")
    RETURN_NAMES = ("image_conditioning", "width", "height")
    OUTPUT_TOOLTIPS = ("For the HV1.5 sampler's image_conditioning input.", "The video width (the bucket's).",
                       "The video height (the bucket's).")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (HV15_VAE, {"tooltip": "The HunyuanVideo 1.5 VAE."}),
                "vision": (HV15_VISION, {"tooltip": "The SigLIP image encoder (sigclip_vision_patch14_384)."}),
                "image": ("IMAGE", {"tooltip": "The first frame: one picture, any size (it is fitted to a bucket)."}),
                "resolution": (list(BASE_RESOLUTIONS), {"default": "720p", "tooltip": "The transformer's resolution: "
                               "480p or 720p, as its file name says; the sampler refuses a mismatch."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def encode(self, vae, vision, image, resolution, unique_id=None):
        check_single_image(image)
        with host.on_compute_device(vae, vision):
            condition = prepare_image(vae, vision, image, resolution)
        host.send_progress_text(f"{resolution} bucket {condition.width}x{condition.height} for an image of "
                                f"{image.shape[2]}x{image.shape[1]}", unique_id)
        return (condition, condition.width, condition.height)


NODE_CLASS_MAPPINGS = {"HYVS_HV15ImageConditioning": HYVSHV15ImageConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_HV15ImageConditioning": "HunyuanVideo Suite: HV1.5 Image Conditioning"}
