"""The flow-matching denoising loop shared by the HunyuanVideo jobs."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .prompt_encoding import TextEmbeds
from .speed import SpeedSession

StepCallback = Callable[[int, int], None]  # (steps done, total); may raise to stop


@dataclass
class SamplingSettings:
    steps: int = 50
    flow_shift: float = 7.0
    embedded_guidance: float | None = 6.0  # None for models without a guidance embedding
    true_cfg: float = 1.0  # > 1 runs a second, negative pass per step


def make_scheduler(flow_shift: float, steps: int, device) -> FlowMatchEulerDiscreteScheduler:
    """Euler flow matching with the authors' shift over sigmas 1 -> 1/steps, as diffusers' HunyuanVideo pipeline."""
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
    speed: SpeedSession | None = None,
) -> torch.Tensor:
    """Run the sampler from `latents` (float32, on the model's device) to the clean latent.

    `speed` (from `speed.open_speed`) wraps each model call; the loop itself reads nothing back to
    the host, so the GPU is never stalled between steps."""
    device = latents.device
    dtype = model.dtype
    scheduler = make_scheduler(settings.flow_shift, settings.steps, device)
    positive = positive.to(device, dtype)
    use_cfg = negative is not None and settings.true_cfg > 1.0
    negative = negative.to(device, dtype) if use_cfg else None
    guidance = None
    if settings.embedded_guidance is not None:
        guidance = torch.full((latents.shape[0],), settings.embedded_guidance * 1000.0, device=device, dtype=dtype)

    def predict(embeds: TextEmbeds, model_input, timestep, branch: str, index: int):
        with speed.call(embeds.attention_mask, branch, index) if speed is not None else nullcontext():
            return model(
                hidden_states=model_input,
                timestep=timestep,
                encoder_hidden_states=embeds.prompt_embeds,
                encoder_attention_mask=embeds.attention_mask,
                pooled_projections=embeds.pooled,
                guidance=guidance,
                return_dict=False,
            )[0]

    total = len(scheduler.timesteps)
    for index, t in enumerate(scheduler.timesteps):
        model_input = latents.to(dtype)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        noise_pred = predict(positive, model_input, timestep, "cond", index)
        if use_cfg:
            negative_pred = predict(negative, model_input, timestep, "uncond", index)
            noise_pred = negative_pred + settings.true_cfg * (noise_pred - negative_pred)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(index + 1, total)
    return latents
