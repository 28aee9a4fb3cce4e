"""HunyuanVideo 1.5's super-resolution stage (480p -> 720p, 720p -> 1080p) with the authors' recipe.

As `hyvideo/pipelines/hunyuan_video_sr_pipeline.py` (SPEC-hv15 §5.6): the output size is the high-resolution
bucket whose aspect is closest to the base clip's (their BucketMap); the base latents, in the transformer's
scaled space, are resized per frame (bilinear) to the output's latent size and refined by the latent upsampler
in fp32; the result is noised, `(1 - s) * lq + s * noise` with strength s (0.7); the transformer reads 98
channels: the noisy latent, the first-frame latent and its mask (zeros for T2V), the noised LQ latent and a
channel of ones. From the first step whose timestep is below 1000 * s (700) the LQ latent and its ones are
zeroed: the authors tie that threshold to the same `noise_scale` as the augmentation. Fresh noise, CFG 1,
shift 2, 6 steps to 720p and 8 to 1080p, MeanFlow when the SR model has the embedder. An I2V clip's first
frame is encoded again at the output size (their `get_image_condition_latents`) and its SigLIP tokens taken
from the image's bucket at the output resolution (`_prepare_vision_states`).

ComfyUI core (`HunyuanVideo15SuperResolution`) differs: its LATENT stays unscaled for the upsampler, it mixes
`s * noise + min(1 - s, 0.75) * lq` and never zeroes the LQ condition. The pack follows the authors.

One seed draws the fresh noise, then the augmentation noise, from one CPU generator: the authors draw the
latter from torch's global generator (`torch.randn_like`), which a node cannot own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..denoise.flow_matching import PreviewCallback, SamplingSettings, StepCallback, denoise, make_scheduler
from ..lora.run import loras_for_run, with_lora_summary
from ..speed.options import open_speed
from . import attention
from .image_conditioning import check_single_image
from .lora_keys import FAMILY
from .sampling import LATENT_CHANNELS, MAX_SEED, VAE_SPATIAL, FirstFrameCondition, ImageCondition15, _check_widths
from .sizes import bucket_sizes, fit_image, nearest_bucket
from .text_embeds import SIGLIP_TOKENS, TextEmbeds15
from .upsampler import resize_latents, upsample
from .vae_loading import VAE_SCALING, encode_first_frame
from .variants import SR_BASE_RESOLUTION
from .vision_loading import encode_image

DEFAULT_NOISE_AUGMENTATION = 0.7  # the authors' noise_scale


def sr_size(width: int, height: int, resolution: str) -> tuple[int, int]:
    """(width, height) of the `resolution` ("720p"/"1080p") bucket the authors' BucketMap gives a base clip of
    `width` x `height`: the first bucket whose width/height ratio is closest (848x480 -> 1280x720, 1280x720 ->
    1904x1072). Their map refuses a base size that is not a base-resolution bucket; any size is mapped here by
    the same rule."""
    if resolution not in SR_BASE_RESOLUTION:
        raise ValueError(f"resolution must be one of {', '.join(SR_BASE_RESOLUTION)}, got {resolution!r}")
    buckets = bucket_sizes(resolution)  # their (w, h) reading of the same list: it holds both orientations
    ratios = np.array([first / second for first, second in buckets])
    first, second = buckets[int(np.abs(ratios - width / height).argmin())]
    return first, second


@dataclass
class SRRequest:
    steps: int = 6
    flow_shift: float = 2.0
    noise_augmentation: float = DEFAULT_NOISE_AUGMENTATION
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad input and what is allowed."""
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be above 0, got {self.flow_shift}")
        if not 0.0 <= self.noise_augmentation <= 1.0:
            raise ValueError(f"noise_augmentation must be between 0 and 1, got {self.noise_augmentation}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")


def sr_request(variant, steps: int = 0, flow_shift: float = 0.0, noise_augmentation: float = DEFAULT_NOISE_AUGMENTATION,
               seed: int = 0) -> SRRequest:
    """A request with the SR variant's recipe wherever a value is 0 ("the variant's")."""
    recipe = variant.recipe
    return SRRequest(steps=steps or recipe.steps, flow_shift=flow_shift or recipe.flow_shift,
                     noise_augmentation=noise_augmentation, seed=seed)


def lq_steps(steps: int, flow_shift: float, noise_augmentation: float) -> int:
    """How many first steps see the LQ latent: the authors zero it from the first timestep below 1000 x s."""
    timesteps = make_scheduler(flow_shift, steps, "cpu").timesteps
    return int((timesteps >= 1000.0 * noise_augmentation).sum())


class SRCondition(FirstFrameCondition):
    """The 66 conditioning channels: first-frame latent and mask (FirstFrameCondition's 33), then the noised LQ
    latent and a channel of ones, both zero from step `lq_steps` on."""

    def __init__(self, lq: torch.Tensor, first_frame: torch.Tensor | None, lq_steps: int, device, dtype):
        super().__init__(tuple(lq.shape), first_frame, device, dtype)
        ones = torch.ones_like(lq[:, :1])
        self.with_lq = torch.cat([self.extra, lq.to(device=device, dtype=dtype), ones.to(device, dtype)], dim=1)
        self.without_lq = torch.cat([self.extra, torch.zeros_like(self.with_lq[:, self.extra.shape[1]:])], dim=1)
        self.lq_steps = lq_steps
        self.extra = self.with_lq

    def begin_step(self, index: int, total: int) -> None:
        self.extra = self.with_lq if index < self.lq_steps else self.without_lq


def check_sr_job(transformer, upsampler, latents: torch.Tensor, image: ImageCondition15 | None) -> str:
    """The output resolution ("720p"/"1080p"), after refusing a base transformer, an upsampler of the other
    resolution, a latent that is not a 1.5 video latent or is already at the output size or above (the authors'
    bucket map refuses any base size that is not a bucket of the lower resolution), or image conditioning at
    another size."""
    variant = transformer.variant
    if not variant.is_sr:
        raise ValueError(f"the transformer is {variant.title}: load a super-resolution DiT "
                         "(hunyuanvideo1.5_720p_sr_distilled or _1080p_sr_distilled) for this node")
    if upsampler.kind != variant.resolution:
        raise ValueError(f"the upsampler is the {upsampler.kind} one and the transformer the {variant.resolution} "
                         f"SR DiT: load hunyuanvideo15_latent_upsampler_{variant.resolution}")
    if latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latent must be a HunyuanVideo 1.5 video latent [B, {LATENT_CHANNELS}, T, H, W], got "
                         f"shape {tuple(latents.shape)}")
    base_w, base_h = latents.shape[-1] * VAE_SPATIAL, latents.shape[-2] * VAE_SPATIAL
    width, height = sr_size(base_w, base_h, variant.resolution)
    if width * height <= base_w * base_h:
        raise ValueError(f"the latent is {base_w}x{base_h}, already {variant.resolution} or more: the {variant.title} "
                         f"stage lifts a {SR_BASE_RESOLUTION[variant.resolution]} clip (the 1080p SR DiT lifts 720p)")
    if image is not None:
        if (image.width, image.height, image.resolution) != (width, height, variant.resolution):
            raise ValueError(f"the image conditioning is for {image.width}x{image.height} ({image.resolution}); this "
                             f"SR stage makes {width}x{height} ({variant.resolution}): prepare it with prepare_sr_image")
    return variant.resolution


@torch.no_grad()
def prepare_sr_image(vae, vision, image: torch.Tensor, width: int, height: int, resolution: str) -> ImageCondition15:
    """The I2V inputs of the SR stage: the first-frame latent at the output size `width` x `height`, and the
    SigLIP tokens of the picture fitted to its own nearest `resolution` bucket, as the authors' SR pipeline."""
    check_single_image(image)
    latent = encode_first_frame(vae, fit_image(image[..., :3], width, height).permute(0, 3, 1, 2) * 2.0 - 1.0)
    bucket_h, bucket_w = nearest_bucket(image.shape[1], image.shape[2], resolution)
    tokens = encode_image(vision, fit_image(image[..., :3], bucket_w, bucket_h))
    return ImageCondition15(latent=latent.float().cpu(), siglip=tokens.float().cpu(), width=width, height=height,
                            resolution=resolution)


def generate_sr(
    transformer,
    upsampler,
    positive: TextEmbeds15,
    latents: torch.Tensor,
    request: SRRequest,
    image: ImageCondition15 | None = None,
    device="cpu",
    on_step: StepCallback | None = None,
    on_info: Callable[[str], None] | None = None,
    on_preview: PreviewCallback | None = None,
) -> torch.Tensor:
    """Lift base latents `[B, 32, T, h, w]` (VAE space, as a LATENT holds them) to the SR variant's resolution:
    returns `[B, 32, T, H/16, W/16]` in VAE space. CFG is 1, as the authors' SR pipeline: no negative prompt. The SR
    DiT's LoRAs (`transformer.loras`) are installed for the run, before the upsampler runs."""
    request.validate()
    resolution = check_sr_job(transformer, upsampler, latents, image)
    model = transformer.model
    _check_widths(model, positive=positive)
    attention.install()
    loras = loras_for_run(transformer, FAMILY)
    batch, _, frames, lr_h, lr_w = latents.shape
    width, height = sr_size(lr_w * VAE_SPATIAL, lr_h * VAE_SPATIAL, resolution)
    shape = (batch, LATENT_CHANNELS, frames, height // VAE_SPATIAL, width // VAE_SPATIAL)
    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)  # = initial_noise(shape, seed)
    augmentation = torch.randn(shape, generator=generator, dtype=torch.float32)
    scaled = latents.float() * VAE_SCALING  # the authors' upsampler reads the transformer's scaled latents
    lq = upsample(upsampler, resize_latents(scaled.to(device), shape[-2:]))
    strength = request.noise_augmentation
    lq = (1.0 - strength) * lq + strength * augmentation.to(lq.device)
    siglip = image.siglip if image is not None else torch.zeros(1, SIGLIP_TOKENS, model.config.image_embed_dim)
    positive = positive.repeat(batch).with_image(siglip.repeat(batch, 1, 1))
    conditioning = SRCondition(lq, image.latent if image is not None else None,
                               lq_steps(request.steps, request.flow_shift, strength), device, model.dtype)
    settings = SamplingSettings(steps=request.steps, flow_shift=request.flow_shift, embedded_guidance=None,
                                true_cfg=1.0, meanflow=transformer.variant.meanflow)
    with open_speed(transformer, request.steps, device) as speed:
        out = denoise(model, noise.to(device), positive, None, settings, on_step, conditioning, speed=speed,
                      on_preview=on_preview)
    if on_info is not None:
        on_info(with_lora_summary(f"{width}x{height}; " + speed.summary(), loras))
    return out / VAE_SCALING
