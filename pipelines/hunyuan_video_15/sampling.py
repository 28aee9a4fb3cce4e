"""HunyuanVideo 1.5 sampling: T2V and I2V with each variant's recipe, on the shared denoise loop.

The transformer's input is 65 channels: the noisy latent, the first frame's latent (the VAE posterior's
mode x 1.03682 at latent frame 0, zeros elsewhere) and a mask channel (1 at frame 0); T2V zeros both
(`_prepare_cond_latents` of the authors' pipeline). SigLIP tokens join the context of both CFG branches;
T2V passes zeros, which the transformer reads as "no image". The step-distilled model also gets the next
step's timestep (MeanFlow). CFG batches its two branches into one call when `batch_cfg`, as the authors
run them. Results are in the VAE's own latent space, as ComfyUI's LATENT holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
from ..memory.sampling_memory import plan_sampling
from ..memory.vram_planner import DoesNotFit
from ..speed.options import open_speed
from . import attention
from .lora_keys import FAMILY
from .text_embeds import SIGLIP_TOKENS, TextEmbeds15
from .vae_loading import VAE_SCALING
from .variants import DEFAULT_FRAMES

LATENT_CHANNELS = 32
VAE_SPATIAL = 16
VAE_TEMPORAL = 4
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@dataclass
class ImageCondition15:
    """The I2V inputs one picture gives: its latent (already x 1.03682) and its SigLIP tokens, at the bucket size."""

    latent: torch.Tensor  # [1, 32, 1, H/16, W/16]
    siglip: torch.Tensor  # [1, 729, 1152]
    width: int
    height: int
    resolution: str  # the bucket set it was fitted to: the transformer must be of this resolution


@dataclass
class Request15:
    width: int = 848
    height: int = 480
    num_frames: int = 121
    steps: int = 50
    cfg: float = 6.0
    flow_shift: float = 5.0
    seed: int = 0
    batch_size: int = 1
    batch_cfg: bool = True  # both CFG branches in one call (the authors'); False halves the activations

    def validate(self) -> None:
        """Raise ValueError naming the first bad input and what is allowed."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < VAE_SPATIAL or value % VAE_SPATIAL:
                raise ValueError(f"{name} must be a positive multiple of {VAE_SPATIAL}, got {value}")
        if self.num_frames < 1 or (self.num_frames - 1) % VAE_TEMPORAL:
            raise ValueError(f"num_frames must be 4k+1 (1, 5, ..., 121), got {self.num_frames}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.cfg < 1.0:
            raise ValueError(f"cfg must be 1.0 (off) or more, got {self.cfg}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be above 0, got {self.flow_shift}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def latent_shape(self) -> tuple[int, ...]:
        frames = (self.num_frames - 1) // VAE_TEMPORAL + 1
        return (self.batch_size, LATENT_CHANNELS, frames, self.height // VAE_SPATIAL, self.width // VAE_SPATIAL)


class FirstFrameCondition(LatentConditioning):
    """The 33 conditioning channels after the noisy latent: first-frame latent and its mask (zeros for T2V)."""

    def __init__(self, shape: tuple[int, ...], first_frame: torch.Tensor | None, device, dtype):
        batch, channels, frames, height, width = shape
        self.extra = torch.zeros((batch, channels + 1, frames, height, width), device=device, dtype=dtype)
        if first_frame is not None:
            self.extra[:, :channels, :1] = first_frame.to(device=device, dtype=dtype)
            self.extra[:, channels, 0] = 1.0

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([latents, self.extra.to(latents.dtype)], dim=1)


def check_job(variant, image: ImageCondition15 | None) -> None:
    if variant.is_sr:
        raise ValueError(f"the transformer is the {variant.title} DiT: it lifts a finished base video (the HV1.5 "
                         "Super-Resolution node); load a T2V or I2V transformer to sample")
    if variant.is_i2v and image is None:
        raise ValueError(f"the transformer is {variant.title}: connect image conditioning (or load a T2V variant)")
    if not variant.is_i2v and image is not None:
        raise ValueError(f"the transformer is {variant.title}; image conditioning needs an I2V variant")


def generate(
    transformer,
    positive: TextEmbeds15,
    negative: TextEmbeds15 | None,
    request: Request15,
    image: ImageCondition15 | None = None,
    device="cpu",
    on_step: StepCallback | None = None,
    on_info: Callable[[str], None] | None = None,
    on_preview: PreviewCallback | None = None,
) -> torch.Tensor:
    """Sample a latent `[B, 32, T, H/16, W/16]` (VAE space) with a `LoadedTransformer15` on `device`.
    With `image`, the request's size must be the image's bucket (`ImageCondition15.width/height`). Its LoRAs
    (`transformer.loras`) are installed for the run; `on_info` gets the speed options and the LoRAs after it."""
    request.validate()
    check_job(transformer.variant, image)
    if image is not None and (request.width, request.height) != (image.width, image.height):
        raise ValueError(f"the image conditioning is for {image.width}x{image.height}, the request for "
                         f"{request.width}x{request.height}: sample at the image's size")
    if request.cfg > 1.0 and negative is None:
        raise ValueError("cfg above 1.0 needs a negative prompt")
    model = transformer.model
    _check_widths(model, positive=positive, negative=negative)
    attention.install()
    batch = request.batch_size
    siglip = image.siglip if image is not None else torch.zeros(1, SIGLIP_TOKENS, model.config.image_embed_dim)
    positive = positive.repeat(batch).with_image(siglip.repeat(batch, 1, 1))
    negative = negative.repeat(batch).with_image(siglip.repeat(batch, 1, 1)) if negative is not None else None
    settings = SamplingSettings(steps=request.steps, flow_shift=request.flow_shift, embedded_guidance=None,
                                true_cfg=request.cfg, batch_branches=request.batch_cfg,
                                meanflow=transformer.variant.meanflow)
    shape = request.latent_shape()
    conditioning = FirstFrameCondition(shape, image.latent if image is not None else None, device, model.dtype)
    noise = initial_noise(shape, request.seed).to(device)
    loras = loras_for_run(transformer, FAMILY)
    with open_speed(transformer, request.steps, device) as speed:
        latents = denoise(model, noise, positive, negative, settings, on_step, conditioning, speed=speed,
                          on_preview=on_preview)
    if on_info is not None:
        notice = getattr(transformer, "notice", "")
        on_info(with_lora_summary(speed.summary() + (f"; {notice}" if notice else ""), loras))
    return latents / VAE_SCALING


def _check_widths(model, **embeds: TextEmbeds15 | None) -> None:
    """Prompts encoded by other text encoders than the transformer reads (e.g. a Qwen2.5-VL-3B) are refused."""
    wanted = {"Qwen2.5-VL": model.config.text_embed_dim, "byT5": model.config.text_embed_2_dim}
    for name, value in embeds.items():
        if value is None:
            continue
        for encoder, got in (("Qwen2.5-VL", value.qwen.shape[-1]), ("byT5", value.byt5.shape[-1])):
            if got != wanted[encoder]:
                raise ValueError(f"{name} was encoded by a {encoder} of width {got}; this transformer reads width "
                                 f"{wanted[encoder]} (Qwen2.5-VL-7B and Glyph byT5-small): load those text encoders")


def recipe_request(variant, width: int, height: int, num_frames: int = DEFAULT_FRAMES, steps: int = 0,
                   cfg: float = 0.0, flow_shift: float = 0.0, seed: int = 0, batch_cfg: bool = True) -> Request15:
    """A request with the variant's recipe wherever a value is 0 ("the variant's")."""
    recipe = variant.recipe
    return Request15(width=width, height=height, num_frames=num_frames, steps=steps or recipe.steps,
                     cfg=cfg or recipe.cfg, flow_shift=flow_shift or recipe.flow_shift, seed=seed, batch_cfg=batch_cfg)


def batch_cfg_fits(transformer, request: Request15, device, free: int | None = None) -> bool:
    """Whether both CFG branches fit in one call with every block on the GPU (always on a CPU), as the
    authors run them; otherwise one branch at a time halves the activations."""
    if request.cfg <= 1.0:
        return False
    try:
        plan = plan_sampling(transformer, request.width, request.height, request.num_frames, 2 * request.batch_size,
                             device, free)
    except DoesNotFit:
        return False
    return plan is None or not plan.offload
