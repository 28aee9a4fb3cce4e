"""Image-to-video: the authors' size buckets, the first-frame latent, the text+image prompt, and sampling.

Two released variants (SPEC §2). v1 `latent_concat` sees, at every step, the noisy latent with the
image latent (first frame, zeros after) and a first-frame mask stacked on as channels (33 in all);
as the authors, it samples the latent frames of `num_frames` and its first 4 decoded frames are
dropped (129 asked, 125 out). v2 `token_replace` keeps the first latent frame equal to the image
latent at every step, and the transformer gives those tokens the timestep of a clean frame. Both
start in one of two modes: "stability" (0.999 noise + 0.001 image latent, shift 7) or "dynamic"
(pure noise, shift 17). Above 192 frames the temporal RoPE gets the authors' RIFLEx fix (`rope`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..denoise.flow_matching import (
    LatentConditioning,
    PreviewCallback,
    SamplingSettings,
    StepCallback,
    denoise,
    initial_noise,
)
from ..lora.run import loras_for_run, with_lora_summary
from ..speed.options import open_speed
from ..video.decoding import DROP_FRAMES_KEY
from .image_prompt import I2V_NEGATIVE_PROMPT, encode_i2v_prompt, require_vision, to_uint8_images
from .lora_keys import FAMILY
from .prompt_encoding import TextEmbeds
from .rope import check_riflex, riflex_rope
from .t2v import (
    SIZE_MULTIPLE,
    VAE_SPATIAL,
    VAE_TEMPORAL,
    branches_batched,
    check_cfg_batching,
    check_sampling,
    same_length,
)
from .transformer_loading import VARIANT_TITLES
from .vae_loading import vae_constants

I2V_VARIANTS = ("i2v_v1", "i2v_v2")
RESOLUTION_BASES = {"360p": 480, "540p": 720, "720p": 960}  # the authors' bucket base sizes
BUCKET_STEP = 32
BUCKET_MAX_RATIO = 4.0
DEFAULT_INTERLEAVE = {"i2v_v1": 2, "i2v_v2": 4}
MAX_INTERLEAVE = 5  # the authors thin the image tokens only for 1..5 (at 6 or more they keep all, as 1 does)
MODES = ("stability", "dynamic")
MODE_SHIFT = {"stability": 7.0, "dynamic": 17.0}
STABILITY_NOISE = 0.999
V1_DROPPED_FRAMES = 4


# ----------------------------------------------------------------------------- sizes

def bucket_sizes(resolution: str) -> list[tuple[int, int]]:
    """The authors' (height, width) buckets of a resolution class: every grid of 32-px patches with about
    (base/32)^2 patches and an aspect ratio of at most 4."""
    if resolution not in RESOLUTION_BASES:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTION_BASES)}, got {resolution!r}")
    patches = round((RESOLUTION_BASES[resolution] / BUCKET_STEP) ** 2)
    sizes, long_side, short_side = [], patches, 1
    while long_side > 0:
        if max(long_side, short_side) / min(long_side, short_side) <= BUCKET_MAX_RATIO:
            sizes.append((long_side * BUCKET_STEP, short_side * BUCKET_STEP))
        if (short_side + 1) * long_side <= patches:
            short_side += 1
        else:
            long_side -= 1
    return sizes


def nearest_bucket(height: int, width: int, resolution: str) -> tuple[int, int]:
    """(height, width) of the authors' bucket for an image (HunyuanVideo-I2V `get_closest_ratio`).

    One-sided, as theirs: a portrait or square image takes the closest of the buckets whose height/width
    is at most its own, a landscape image the closest of those whose ratio is above its own; ratios
    rounded to 5 decimals, the first bucket on ties.
    """
    buckets = bucket_sizes(resolution)
    aspect = height / width
    ratios = [round(h / w, 5) for h, w in buckets]
    allowed = [i for i, ratio in enumerate(ratios) if (ratio <= aspect if aspect >= 1 else ratio > aspect)]
    return buckets[min(allowed, key=lambda i: abs(ratios[i] - aspect))]


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE `[1, H, W, 3]` scaled to cover `width` x `height` and centre-cropped to it, as the authors'
    torchvision transform does for their buckets: 8-bit pixels, PIL bilinear, the limiting side scaled to
    its target and the other truncated to whole pixels (their Resize of the shorter side to the bucket's
    shorter side is exactly this, as every bucket they choose lies on the image's side of square), the
    crop offset rounded as their CenterCrop. A "custom" size is covered the same way, never padded."""
    from PIL import Image

    _, h, w, _ = image.shape
    if (h, w) == (height, width):
        return image
    new_w, new_h = (int(height * w / h), height) if height / h >= width / w else (width, int(width * h / w))
    resized = Image.fromarray(to_uint8_images(image)[0]).resize((new_w, new_h), Image.BILINEAR)
    pixels = torch.tensor(np.asarray(resized), dtype=torch.float32) / 255
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    return pixels[top: top + height, left: left + width].unsqueeze(0)


def choose_size(image: torch.Tensor, resolution: str, width: int = 0, height: int = 0) -> tuple[int, int]:
    """(width, height): the nearest bucket of `resolution`, or the explicit size for resolution "custom"."""
    if resolution == "custom":
        for name, value in (("width", width), ("height", height)):
            if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
                raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE} for resolution 'custom', got {value}")
        return width, height
    h, w = nearest_bucket(image.shape[1], image.shape[2], resolution)
    return w, h


def check_single_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError("image must be an IMAGE [B, H, W, 3]")
    if image.shape[0] != 1:
        raise ValueError(
            f"image must be one picture, got a batch of {image.shape[0]}: pick one (e.g. with core 'Image From Batch')"
        )
    if min(image.shape[1:3]) < 2:
        raise ValueError(f"image is {image.shape[2]}x{image.shape[1]} pixels, too small to condition a video")


# ----------------------------------------------------------------------------- conditioning

@dataclass
class I2VConditioning:
    """What the sampler needs from the image: prompts, the first-frame latent (the transformer's
    scaled latent space), the video size and the variant it was made for."""

    variant: str
    positive: TextEmbeds
    negative: TextEmbeds | None
    image_latent: torch.Tensor  # [1, C, 1, height/8, width/8]
    width: int
    height: int


@torch.no_grad()
def encode_image_latent(vae, image: torch.Tensor, device) -> torch.Tensor:
    """IMAGE `[1, H, W, 3]` (already at the video size) -> the scaled first-frame latent `[1, C, 1, h, w]`
    (the posterior's mode, as the authors and diffusers take it)."""
    pixels = image[..., :3].permute(0, 3, 1, 2).unsqueeze(2) * 2.0 - 1.0
    posterior = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
    return (posterior.mode() * vae.config.scaling_factor).float()


@torch.no_grad()
def prepare_i2v(encoders, vae, image: torch.Tensor, prompt: str, variant: str = "i2v_v2", resolution: str = "720p",
                width: int = 0, height: int = 0, negative_prompt: str | None = I2V_NEGATIVE_PROMPT,
                interleave: int = 0, device="cpu") -> I2VConditioning:
    """Everything the I2V sampler needs from one picture; checks come first, before any model runs."""
    if variant not in I2V_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(I2V_VARIANTS)}, got {variant!r}")
    check_single_image(image)
    if not 0 <= interleave <= MAX_INTERLEAVE:
        raise ValueError(f"image_interleave must be 0 (the variant's default) or 1 to {MAX_INTERLEAVE}, got {interleave}")
    require_vision(encoders)
    image = image[..., :3].float()
    width, height = choose_size(image, resolution, width, height)
    interleave = interleave or DEFAULT_INTERLEAVE[variant]
    positive = encode_i2v_prompt(encoders, prompt, image, interleave, device)
    negative = None
    if negative_prompt is not None:
        negative_prompt = negative_prompt if negative_prompt.strip() else I2V_NEGATIVE_PROMPT  # as the authors
        black = torch.zeros(1, height, width, 3)
        negative = encode_i2v_prompt(encoders, negative_prompt, black, interleave, device)
    latent = encode_image_latent(vae, fit_image(image, width, height), device)
    return I2VConditioning(variant, positive.to("cpu"), negative.to("cpu") if negative else None, latent.cpu(), width, height)


class ConcatConditioning(LatentConditioning):
    """v1: the image latent (first frame, zeros after) and a first-frame mask as extra input channels."""

    def __init__(self, image_latent: torch.Tensor, frames: int):
        extra = torch.zeros(*image_latent.shape[:2], frames, *image_latent.shape[3:], device=image_latent.device)
        extra[:, :, :1] = image_latent
        mask = torch.zeros(image_latent.shape[0], 1, frames, *image_latent.shape[3:], device=image_latent.device)
        mask[:, :, :1] = 1.0
        self.channels = torch.cat([extra, mask], dim=1)

    def model_input(self, latents):
        return torch.cat([latents, self.channels.to(latents.dtype)], dim=1)


class TokenReplaceConditioning(LatentConditioning):
    """v2: the first latent frame is the image latent in the model input and after every step."""

    def __init__(self, image_latent: torch.Tensor):
        self.image_latent = image_latent

    def model_input(self, latents):
        return self.fix(latents)

    def fix(self, latents):
        return torch.cat([self.image_latent.to(latents.dtype), latents[:, :, 1:]], dim=2)


# ----------------------------------------------------------------------------- sampling

@dataclass
class I2VRequest:
    num_frames: int = 129
    steps: int = 50
    mode: str = "stability"
    flow_shift: float | None = None  # None: the mode's shift (7 stability, 17 dynamic)
    embedded_guidance: float = 6.0
    true_cfg: float = 1.0
    seed: int = 0
    riflex: str = "auto"  # see rope.RIFLEX_CHOICES
    cfg_batching: str = "sequential"  # see t2v.branches_batched

    def validate(self) -> None:
        """Raise ValueError naming the first bad input and what is allowed."""
        check_sampling(self.num_frames, self.steps, self.true_cfg, self.seed)
        check_riflex(self.riflex)
        check_cfg_batching(self.cfg_batching)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.flow_shift is not None and self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be above 0 (or unset for the mode's default), got {self.flow_shift}")
        if self.embedded_guidance < 0:
            raise ValueError(f"embedded_guidance must be 0 or more, got {self.embedded_guidance}")

    @property
    def shift(self) -> float:
        return self.flow_shift if self.flow_shift is not None else MODE_SHIFT[self.mode]


def check_pairing(transformer_variant: str, conditioning: I2VConditioning) -> None:
    """Refuse a conditioning made for another model before any sampling."""
    if transformer_variant not in I2V_VARIANTS:
        raise ValueError(
            f"the transformer is {VARIANT_TITLES.get(transformer_variant, transformer_variant)}; image-to-video needs "
            "the I2V v1 (hunyuan_video_image_to_video_720p_bf16) or v2 (hunyuan_video_v2_replace_image_to_video_720p_bf16) "
            "transformer (set the loader's variant if its file name does not say which)"
        )
    if conditioning.variant != transformer_variant:
        raise ValueError(
            f"the I2V conditioning was made for {VARIANT_TITLES[conditioning.variant]} but the transformer is "
            f"{VARIANT_TITLES[transformer_variant]}: set the conditioning node's variant to match"
        )


def generate_i2v(transformer, conditioning: I2VConditioning, request: I2VRequest, device="cpu",
                 on_step: StepCallback | None = None, on_info: Callable[[str], None] | None = None,
                 on_preview: PreviewCallback | None = None) -> dict:
    """Sample an I2V video latent; returns a LATENT dict (VAE space; v1 marks its 4 frames to drop, so
    v1 gives `num_frames - 4` frames and v2 `num_frames`).

    `on_info` receives one line on the speed options in force (skipped calls included) and the LoRAs applied
    (`transformer.loras`, installed for this run) after sampling."""
    request.validate()
    variant = getattr(transformer, "variant", None)
    check_pairing(variant, conditioning)
    if request.true_cfg > 1.0 and conditioning.negative is None:
        raise ValueError("cfg above 1.0 needs the negative branch: give the I2V conditioning a negative prompt")
    if variant == "i2v_v1" and request.num_frames <= V1_DROPPED_FRAMES:
        raise ValueError(
            f"num_frames must be 5 or more for I2V v1: it drops its first {V1_DROPPED_FRAMES} decoded frames "
            f"({request.num_frames} asked would leave none)"
        )
    model = transformer.model if hasattr(transformer, "model") else transformer
    latent_frames = (request.num_frames - 1) // VAE_TEMPORAL + 1
    image_latent = conditioning.image_latent.to(device)
    channels, height, width = image_latent.shape[1], image_latent.shape[3], image_latent.shape[4]
    if (height * VAE_SPATIAL, width * VAE_SPATIAL) != (conditioning.height, conditioning.width):
        raise ValueError("the I2V conditioning's image latent does not match its size; encode the image again")
    latents = initial_noise((1, channels, latent_frames, height, width), request.seed).to(device)
    if request.mode == "stability":
        latents = latents * STABILITY_NOISE + image_latent * (1.0 - STABILITY_NOISE)
    hook = ConcatConditioning(image_latent, latent_frames) if variant == "i2v_v1" else TokenReplaceConditioning(image_latent)
    positive, negative = conditioning.positive, conditioning.negative
    batched = branches_batched(request.cfg_batching, request.true_cfg > 1.0)
    if batched:
        positive, negative = same_length(positive, negative)
    settings = SamplingSettings(
        steps=request.steps,
        flow_shift=request.shift,
        embedded_guidance=request.embedded_guidance if model.config.guidance_embeds else None,
        true_cfg=request.true_cfg,
        batch_branches=batched,
    )
    loras = loras_for_run(transformer, FAMILY)
    with riflex_rope(model, request.num_frames, request.riflex), open_speed(transformer, request.steps, device) as speed:
        latents = denoise(model, latents, positive, negative, settings, on_step, hook, speed, on_preview)
    if on_info is not None:
        on_info(with_lora_summary(speed.summary(), loras))
    result = {"samples": latents / vae_constants()["scaling_factor"]}
    if variant == "i2v_v1":
        result[DROP_FRAMES_KEY] = V1_DROPPED_FRAMES
    return result
