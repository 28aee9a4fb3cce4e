"""The flow-matching denoising loop shared by the HunyuanVideo jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .prompt_encoding import TextEmbeds

if TYPE_CHECKING:
    from diffusers import FlowMatchEulerDiscreteScheduler

StepCallback = Callable[[int, int], None]  # (steps done, total); may raise to stop


class LatentConditioning:
    """How a job's image conditioning enters each step; this base adds none (text-to-video).

    Image-to-video and reference-to-video subclass it: `model_input` builds what the transformer
    sees from the current latents, `model_kwargs` adds inputs of the model call, and `fix` puts
    back what must stay clean after each scheduler step.
    """

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def model_kwargs(self) -> dict:
        return {}

    def fix(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


@dataclass
class SamplingSettings:
    steps: int = 50
    flow_shift: float = 7.0
    embedded_guidance: float | None = 6.0  # None for models without a guidance embedding
    true_cfg: float = 1.0  # > 1 runs a second, negative pass per step


def make_scheduler(flow_shift: float, steps: int, device) -> FlowMatchEulerDiscreteScheduler:
    """Euler flow matching with the authors' shift over sigmas 1 -> 1/steps, as diffusers' HunyuanVideo pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=flow_shift)
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=sigmas, device=device)
    scheduler.set_begin_index(0)
    return scheduler


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise drawn on the CPU, so a seed gives the same video whatever the GPU."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@torch.no_grad()
def denoise(
    model,
    latents: torch.Tensor,
    positive: TextEmbeds,
    negative: TextEmbeds | None,
    settings: SamplingSettings,
    on_step: StepCallback | None = None,
    conditioning: LatentConditioning | None = None,
) -> torch.Tensor:
    """Run the sampler from `latents` (float32, on the model's device) to the clean latent."""
    conditioning = conditioning or LatentConditioning()
    device = latents.device
    dtype = model.dtype
    scheduler = make_scheduler(settings.flow_shift, settings.steps, device)
    positive = positive.to(device, dtype)
    use_cfg = negative is not None and settings.true_cfg > 1.0
    negative = negative.to(device, dtype) if use_cfg else None
    guidance = None
    if settings.embedded_guidance is not None:
        guidance = torch.full((latents.shape[0],), settings.embedded_guidance * 1000.0, device=device, dtype=dtype)

    def predict(embeds: TextEmbeds, model_input, timestep):
        return model(
            hidden_states=model_input,
            timestep=timestep,
            encoder_hidden_states=embeds.prompt_embeds,
            encoder_attention_mask=embeds.attention_mask,
            pooled_projections=embeds.pooled,
            guidance=guidance,
            return_dict=False,
            **conditioning.model_kwargs(),
        )[0]

    total = len(scheduler.timesteps)
    for index, t in enumerate(scheduler.timesteps):
        model_input = conditioning.model_input(latents).to(dtype)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        noise_pred = predict(positive, model_input, timestep)
        if use_cfg:
            negative_pred = predict(negative, model_input, timestep)
            noise_pred = negative_pred + settings.true_cfg * (noise_pred - negative_pred)
        latents = conditioning.fix(scheduler.step(noise_pred, t, latents, return_dict=False)[0])
        if on_step is not None:
            on_step(index + 1, total)
    return latents
