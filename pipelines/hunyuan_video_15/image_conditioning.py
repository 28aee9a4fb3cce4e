"""I2V image conditioning: the picture fitted to the authors' bucket, its VAE latent and its SigLIP tokens.

Both come from the same crop: the authors resize with LANCZOS to cover the bucket and centre-crop, once
with torchvision for the VAE (`get_image_condition_latents`) and once with PIL for SigLIP
(`resize_and_center_crop`); the two round their sizes and offsets alike, so one `fit_image` serves both.
"""

from __future__ import annotations

import torch

from .sampling import ImageCondition15
from .sizes import fit_image, nearest_bucket
from .vae_loading import encode_first_frame
from .vision_loading import encode_image


def check_single_image(image) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError("image must be an IMAGE [B, H, W, 3]")
    if image.shape[0] != 1:
        raise ValueError(f"image must be one picture, got a batch of {image.shape[0]}: pick one (e.g. with core "
                         "'Image From Batch')")


@torch.no_grad()
def prepare_image(vae, vision, image: torch.Tensor, resolution: str) -> ImageCondition15:
    """ComfyUI IMAGE `[1, H, W, 3]` (0..1) -> the I2V inputs at the bucket of `resolution` ("480p"/"720p")
    nearest the picture's shape; the VAE and SigLIP run where they are (move them to the GPU first)."""
    check_single_image(image)
    height, width = nearest_bucket(image.shape[1], image.shape[2], resolution)
    fitted = fit_image(image[..., :3], width, height)
    latent = encode_first_frame(vae, fitted.permute(0, 3, 1, 2) * 2.0 - 1.0)
    tokens = encode_image(vision, fitted)
    return ImageCondition15(latent=latent.float().cpu(), siglip=tokens.float().cpu(), width=width, height=height,
                            resolution=resolution)
