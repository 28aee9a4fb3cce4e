"""Text-to-video: check the request, prepare the noise, run the sampler.

The result is in the VAE's own latent space, as ComfyUI's LATENT holds it (core samplers divide by
the VAE scaling factor on the way out, and core VAE Decode takes latents as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..denoise.flow_matching import PreviewCallback, SamplingSettings, StepCallback, denoise, initial_noise
from ..lora.run import loras_for_run, with_lora_summary
from ..speed.options import open_speed
from .lora_keys import FAMILY
from .prompt_encoding import TextEmbeds
from .rope import check_riflex, riflex_rope
from .vae_loading import vae_constants

VAE_TEMPORAL = 4
VAE_SPATIAL = 8
SIZE_MULTIPLE = 16
MAX_SEED = 0xFFFFFFFFFFFFFFFF
CFG_BATCHING = ("auto", "batched", "sequential")  # how the guidance branches run (T2V, I2V, Custom)


def check_sampling(num_frames: int, steps: int, cfg: float, seed: int) -> None:
    """The checks every sampler shares; ValueError naming the first bad input and what is allowed."""
    if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
        raise ValueError(f"num_frames must be 4k+1 (1, 5, 9, ..., 129), got {num_frames}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if cfg < 1.0:
        raise ValueError(f"cfg must be 1.0 (off) or more, got {cfg}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")


def check_cfg_batching(value: str) -> None:
    if value not in CFG_BATCHING:
        raise ValueError(f"cfg_batching must be one of {', '.join(CFG_BATCHING)}; got {value!r}")


def branches_batched(cfg_batching: str, use_cfg: bool) -> bool:
    """Whether the two CFG branches run as one model call (what cfg_parallel splits over two halves of the GPUs):
    "batched" does, "sequential" (the default: half the activation memory) and "auto" run one call per branch
    (HunyuanCustom's memory rule for "auto", custom.branches_fit_together, is in a module that imports this one)."""
    return use_cfg and cfg_batching == "batched"


def same_length(positive: TextEmbeds, negative: TextEmbeds) -> tuple[TextEmbeds, TextEmbeds]:
    """Both prompts at the longer one's token count, so batched branches stack into one call: the shorter is padded
    with zero tokens its mask leaves out, which neither attention path reads (mask-free attention reads each row's
    valid count, a prefix; the masked path and the token refiner the mask itself)."""
    length = max(positive.seq_len, negative.seq_len)
    return _padded(positive, length), _padded(negative, length)


def _padded(embeds: TextEmbeds, length: int) -> TextEmbeds:
    missing = length - embeds.seq_len
    if not missing:
        return embeds
    return TextEmbeds(torch.nn.functional.pad(embeds.prompt_embeds, (0, 0, 0, missing)),
                      torch.nn.functional.pad(embeds.attention_mask, (0, missing)), embeds.pooled)


@dataclass
class T2VRequest:
    width: int = 960
    height: int = 544
    num_frames: int = 129
    steps: int = 50
    embedded_guidance: float = 6.0
    true_cfg: float = 1.0
    flow_shift: float = 7.0
    seed: int = 0
    batch_size: int = 1
    riflex: str = "auto"  # see rope.RIFLEX_CHOICES
    cfg_batching: str = "sequential"  # see `branches_batched`

    def validate(self) -> None:
        """Raise ValueError naming the first bad input and what is allowed."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
                raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}")
        check_sampling(self.num_frames, self.steps, self.true_cfg, self.seed)
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be above 0, got {self.flow_shift}")
        if self.embedded_guidance < 0:
            raise ValueError(f"embedded_guidance must be 0 or more, got {self.embedded_guidance}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        check_riflex(self.riflex)
        check_cfg_batching(self.cfg_batching)

    def latent_shape(self, channels: int) -> tuple[int, ...]:
        return (
            self.batch_size,
            channels,
            (self.num_frames - 1) // VAE_TEMPORAL + 1,
            self.height // VAE_SPATIAL,
            self.width // VAE_SPATIAL,
        )


def generate_t2v(
    transformer,
    positive: TextEmbeds,
    request: T2VRequest,
    negative: TextEmbeds | None = None,
    device="cpu",
    on_step: StepCallback | None = None,
    on_info: Callable[[str], None] | None = None,
    on_preview: PreviewCallback | None = None,
) -> torch.Tensor:
    """Sample a T2V latent `[B, C, T, H/8, W/8]` (VAE space) with `transformer` on `device`.

    `on_info` receives one line on the speed options in force (skipped calls included) and the LoRAs applied
    (`transformer.loras`, installed for this run) after sampling."""
    request.validate()
    if request.true_cfg > 1.0 and negative is None:
        raise ValueError("cfg above 1.0 needs a negative prompt (connect the 'negative' input)")
    variant = getattr(transformer, "variant", "t2v")
    if variant == "custom":
        raise ValueError(
            "transformer is the HunyuanCustom model, which needs a reference image and real CFG: use the "
            "HunyuanVideo Suite Custom Ref2V Conditioning and Custom Sampler nodes"
        )
    if variant != "t2v":
        raise ValueError(f"transformer is an image-to-video model ({variant}); text-to-video needs a t2v transformer")
    model = transformer.model if hasattr(transformer, "model") else transformer
    has_guidance = model.config.guidance_embeds
    positive = _repeat(positive, request.batch_size)
    negative = _repeat(negative, request.batch_size) if negative is not None else None
    batched = branches_batched(request.cfg_batching, request.true_cfg > 1.0)
    if batched:
        positive, negative = same_length(positive, negative)
    settings = SamplingSettings(
        steps=request.steps,
        flow_shift=request.flow_shift,
        embedded_guidance=request.embedded_guidance if has_guidance else None,
        true_cfg=request.true_cfg,
        batch_branches=batched,
    )
    noise = initial_noise(request.latent_shape(model.config.in_channels), request.seed).to(device)
    loras = loras_for_run(transformer, FAMILY)
    with riflex_rope(model, request.num_frames, request.riflex), open_speed(transformer, request.steps, device) as speed:
        latents = denoise(model, noise, positive, negative, settings, on_step, speed=speed, on_preview=on_preview)
    if on_info is not None:
        on_info(with_lora_summary(speed.summary(), loras))
    return latents / vae_constants()["scaling_factor"]


def _repeat(embeds: TextEmbeds, batch: int) -> TextEmbeds:
    if embeds.prompt_embeds.shape[0] == batch:
        return embeds
    return TextEmbeds(
        embeds.prompt_embeds.repeat(batch, 1, 1), embeds.attention_mask.repeat(batch, 1), embeds.pooled.repeat(batch, 1)
    )
