"""The flow-matching denoising loop shared by the HunyuanVideo jobs."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..speed.options import SpeedSession
from .text_embeds import TextEmbeds

if TYPE_CHECKING:
    from diffusers import FlowMatchEulerDiscreteScheduler

StepCallback = Callable[[int, int], None]  # (steps done, total); may raise to stop
# (steps done, total, x0): the clean latent predicted at that step (model space, float32, first batch row)
PreviewCallback = Callable[[int, int, torch.Tensor], None]


class LatentConditioning:
    """How a job's image conditioning enters each step; this base adds none (text-to-video).

    Image-to-video and reference-to-video subclass it: `model_input` builds what the transformer
    sees from the current latents, `model_kwargs` adds inputs of the model call (`call_kwargs` when
    they differ between guidance branches), `begin_step` hears which step comes next, and `fix` puts
    back what must stay clean after each scheduler step.
    """

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def model_kwargs(self) -> dict:
        return {}

    def begin_step(self, index: int, total: int) -> None:
        """Called before each step's model calls (step `index` of `total`, from 0)."""

    def call_kwargs(self, branches: tuple[str, ...]) -> dict:
        """Inputs of one model call covering guidance `branches` ("positive", "negative", "image"),
        stacked on the batch axis in that order. By default every branch gets `model_kwargs()`."""
        kwargs = self.model_kwargs()
        if len(branches) == 1:
            return kwargs
        return {k: torch.cat([v] * len(branches)) if torch.is_tensor(v) else v for k, v in kwargs.items()}

    def fix(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


@dataclass
class SamplingSettings:
    steps: int = 50
    flow_shift: float = 7.0
    embedded_guidance: float | None = 6.0  # None for models without a guidance embedding
    true_cfg: float = 1.0  # > 1 runs a second, negative pass per step
    # > 0 runs a third pass (HunyuanCustom's ip_cfg_scale): the positive prompt with the conditioning's
    # "image" branch inputs, weighted from this value at the first step linearly down to 1 at the last.
    image_cfg: float = 0.0
    batch_branches: bool = False  # run the guidance passes of a step as one batch (faster, more memory)
    # MeanFlow (HunyuanVideo 1.5's step-distilled model): each call also gets `timestep_r`, the next
    # step's timestep (0 at the last step), as the authors' pipeline passes it.
    meanflow: bool = False

    def image_cfg_at(self, index: int) -> float:
        """The third branch's weight at step `index`, decayed as the authors do (their 1e-3 guards a 1-step run)."""
        return self.image_cfg - index * (self.image_cfg - 1.0) / (self.steps - 1 + 1e-3)


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
    speed: SpeedSession | None = None,
    on_preview: PreviewCallback | None = None,
) -> torch.Tensor:
    """Run the sampler from `latents` (float32, on the model's device) to the clean latent.

    `speed` (from `speed.open_speed`) wraps each model call; the loop itself reads nothing back to
    the host, so the GPU is never stalled between steps. `on_preview`, called before `on_step`, gets each
    step's predicted clean latent x0 = x_t - sigma_t * v (flow matching), computed only when it is given."""
    conditioning = conditioning or LatentConditioning()
    device = latents.device
    dtype = model.dtype
    scheduler = make_scheduler(settings.flow_shift, settings.steps, device)
    positive = positive.to(device, dtype)
    use_cfg = negative is not None and settings.true_cfg > 1.0
    negative = negative.to(device, dtype) if use_cfg else None
    use_image_cfg = use_cfg and settings.image_cfg > 0
    if settings.image_cfg > 0 and not use_cfg:
        raise ValueError("an image guidance branch (ip_cfg_scale) needs cfg above 1.0 and a negative prompt")
    texts = {"positive": positive, "negative": negative, "image": positive}
    branches = ("positive",) + (("negative",) if use_cfg else ()) + (("image",) if use_image_cfg else ())
    same_length = len({texts[b].seq_len for b in branches}) == 1
    groups = [branches] if settings.batch_branches and same_length else [(b,) for b in branches]
    stack = type(positive).stack
    # Each group's text inputs are stacked once, before the loop (no new tensors, no host reads per step).
    stacked = {group: stack([texts[b] for b in group]) for group in groups}
    batch = latents.shape[0]
    per_call = {}
    if settings.embedded_guidance is not None:
        per_call["guidance"] = torch.full((batch,), settings.embedded_guidance * 1000.0, device=device, dtype=dtype)

    def predict(group: tuple[str, ...], model_input, step_inputs: dict, index: int) -> dict[str, torch.Tensor]:
        n = len(group)
        embeds = stacked[group]
        with speed.call(embeds.attention_mask, "+".join(group), index) if speed is not None else nullcontext():
            out = model(
                hidden_states=model_input if n == 1 else torch.cat([model_input] * n),
                **{name: value if n == 1 else torch.cat([value] * n) for name, value in step_inputs.items()},
                **embeds.model_kwargs(),
                return_dict=False,
                **conditioning.call_kwargs(group),
            )[0]
        return dict(zip(group, out.chunk(n)))

    timesteps = scheduler.timesteps
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        conditioning.begin_step(index, total)
        model_input = conditioning.model_input(latents).to(dtype)
        step_inputs = {"timestep": t.expand(batch).to(latents.dtype), **per_call}
        if settings.meanflow:
            following = timesteps[index + 1] if index + 1 < total else torch.zeros_like(t)
            step_inputs["timestep_r"] = following.expand(batch).to(latents.dtype)
        preds = {}
        for group in groups:
            preds.update(predict(group, model_input, step_inputs, index))
        noise_pred = preds["positive"]
        if use_cfg:
            negative_pred = preds["negative"]
            noise_pred = negative_pred + settings.true_cfg * (noise_pred - negative_pred)
        if use_image_cfg:
            noise_pred = noise_pred + settings.image_cfg_at(index) * (preds["image"] - preds["positive"])
        # float32 prediction: diffusers' step casts its result to the prediction's dtype, and the authors' schedulers
        # keep the latents in float32 between steps (a bf16 model would otherwise round them every step).
        if on_preview is not None:
            x0 = conditioning.fix(latents[:1] - scheduler.sigmas[index] * noise_pred[:1].float())
        latents = conditioning.fix(scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0])
        if on_preview is not None:
            on_preview(index + 1, total, x0)
        if on_step is not None:
            on_step(index + 1, total)
    return latents
