"""The render command's jobs, as the nodes chain them: text-to-video, image-to-video (I2V v1 and v2) and HunyuanCustom.

A job is two functions: `request` builds the sampler's request from the checked options (the command validates it
before any model loads), and `render` runs it on the loaded models, from the prompt to the decoded frames. Options
left unset keep the request's defaults, the authors' as the nodes have them; the demo runs few frames and steps.
Another model family plugs in as jobs of its own beside these, with its own loader.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..hunyuan_video_13b.custom import CUSTOM_NEGATIVE_PROMPT, CustomRequest, generate_custom, prepare_custom
from ..hunyuan_video_13b.custom_prompt import DEFAULT_SUBJECT
from ..hunyuan_video_13b.i2v import DEFAULT_INTERLEAVE, I2VRequest, choose_size, generate_i2v, prepare_i2v
from ..hunyuan_video_13b.prompt_encoding import T2V_NEGATIVE_PROMPT, encode_prompt
from ..hunyuan_video_13b.t2v import VAE_TEMPORAL, T2VRequest, generate_t2v
from ..memory.sampling_memory import plan_sampling, text_encoders_on_device, transformer_on_device
from ..video.decoding import DROP_FRAMES_KEY, TilingOptions, decode_latents
from .job_options import CUSTOM_DEFAULTS
from .options import DEMO_DEFAULTS, is_demo

DEMO_FIELDS = {"num_frames": "frames", "steps": "steps", "width": "width", "height": "height"}


@dataclass
class Models:
    """What a job runs on: the transformer (LoadedTransformer), the VAE and the text encoders (with the LLaVA vision
    tower for the image jobs). `decodes` is False on the ranks other than 0 of a multi-GPU render: they sample, and
    their job returns None instead of frames."""

    transformer: Any
    vae: Any
    encoders: Any
    decodes: bool = True


@dataclass(frozen=True)
class Job:
    """One kind of render (see the module's docstring)."""

    request: Callable[[argparse.Namespace], Any]
    # frames [T, H, W, 3] in 0..1; None where the models do not decode (see Models)
    render: Callable[[Models, Any, argparse.Namespace, torch.device], torch.Tensor | None]


def say(text: str) -> None:
    print(text, flush=True)


def _given(args, **fields) -> dict:
    """The request fields the options set, and the demo's frames, steps and size where they are unset."""
    chosen = {name: value for name, value in fields.items() if value is not None}
    if is_demo(args):
        chosen = {name: DEMO_DEFAULTS[DEMO_FIELDS[name]] for name in fields if name in DEMO_FIELDS} | chosen
    return chosen


def _sampling(args) -> dict:
    return {"num_frames": args.frames, "steps": args.steps, "seed": args.seed, "riflex": args.riflex or "auto",
            "cfg_batching": args.cfg_batching}


def _cfg_calls(request, args) -> int:
    """The rows of one 13B T2V or I2V model call the memory plan is made for: 2 where this process runs both CFG
    branches batched (--cfg-batching batched; under --cfg-parallel each half of the ranks runs one of them)."""
    return 2 if request.true_cfg > 1 and request.cfg_batching == "batched" and not args.cfg_parallel else 1


def plan_for(models, width: int, height: int, frames: int, device, batch: int = 1):
    """The VRAM planner's choice (None on a CPU); refuses a request that cannot fit before any encoding."""
    plan = plan_sampling(models.transformer, width, height, frames, batch, device)
    if plan is not None:
        say(plan.describe())
    return plan


def sample(models, plan, device, what: str, generate):
    say(f"sampling {what} on {device}")
    with transformer_on_device(models.transformer, device, plan):
        return generate(device=device, on_step=lambda done, total: say(f"  step {done}/{total}"), on_info=say)


def _decode(models: Models, latents: torch.Tensor, plan, device) -> torch.Tensor | None:
    if not models.decodes:
        return None
    models.vae.to(device)
    tiling = TilingOptions(tile_size=plan.decode_tile) if plan is not None else TilingOptions()
    return decode_latents(models.vae, latents, tiling)[0]


def picture_tensor(args) -> torch.Tensor:
    """The checked picture as ComfyUI's IMAGE `[1, H, W, 3]` in 0..1."""
    return torch.from_numpy(np.asarray(args.picture, dtype=np.float32) / 255.0).unsqueeze(0)


# ----------------------------------------------------------------------------- text-to-video

def t2v_request(args) -> T2VRequest:
    return T2VRequest(**_given(args, **_sampling(args), width=args.width, height=args.height,
                               embedded_guidance=args.guidance, true_cfg=args.cfg, flow_shift=args.shift))


def render_t2v(models: Models, request: T2VRequest, args, device) -> torch.Tensor | None:
    plan = plan_for(models, request.width, request.height, request.num_frames, device, _cfg_calls(request, args))
    with text_encoders_on_device(models.encoders, device):
        positive = encode_prompt(models.encoders, args.prompt, device)
        negative_prompt = args.negative_prompt.strip() or T2V_NEGATIVE_PROMPT  # the authors' default, as theirs
        negative = encode_prompt(models.encoders, negative_prompt, device) if request.true_cfg > 1 else None
    what = f"{request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps"
    latents = sample(models, plan, device, what,
                      lambda **run: generate_t2v(models.transformer, positive, request, negative=negative, **run))
    return _decode(models, latents, plan, device)


# ----------------------------------------------------------------------------- image-to-video

def i2v_request(args) -> I2VRequest:
    return I2VRequest(**_given(args, **_sampling(args), mode=args.mode, flow_shift=args.shift,
                               embedded_guidance=args.guidance, true_cfg=args.cfg))


def render_i2v(models: Models, request: I2VRequest, args, device) -> torch.Tensor | None:
    """As I2V Conditioning, I2V Sampler and Decode: the variant is the loaded transformer's; I2V v1's first 4 decoded
    frames are dropped, as the authors'."""
    variant = models.transformer.variant
    image = picture_tensor(args)
    size = _given(args, width=args.width, height=args.height)  # both or neither (checked)
    resolution = args.resolution or ("custom" if size else "720p")
    width, height = choose_size(image, resolution, size.get("width", 0), size.get("height", 0))
    plan = plan_for(models, width, height, request.num_frames, device, _cfg_calls(request, args))
    interleave = args.image_interleave or DEFAULT_INTERLEAVE[variant]
    picture = f"image {image.shape[2]}x{image.shape[1]}"
    say(f"{resolution} size {width}x{height} ({picture}), 1 in {interleave} image tokens")
    with text_encoders_on_device(models.encoders, device):
        models.vae.to(device)
        conditioning = prepare_i2v(
            models.encoders, models.vae, image, args.prompt, variant=variant, resolution="custom", width=width,
            height=height, negative_prompt=args.negative_prompt if request.true_cfg > 1 else None,
            interleave=interleave, device=device,
        )
        models.vae.to("cpu")
    what = f"{variant} {width}x{height}, {request.num_frames} frames, {request.steps} steps"
    latent = sample(models, plan, device, what,
                     lambda **run: generate_i2v(models.transformer, conditioning, request, **run))
    frames = _decode(models, latent["samples"], plan, device)
    return None if frames is None else frames[latent.get(DROP_FRAMES_KEY, 0):]


# ----------------------------------------------------------------------------- HunyuanCustom

def custom_request(args) -> CustomRequest:
    step_cache = None if args.step_cache is None else args.step_cache == "on"
    return CustomRequest(**_given(args, **_sampling(args), cfg=args.cfg, flow_shift=args.shift, step_cache=step_cache,
                                  ip_cfg_scale=args.ip_cfg_scale))


def render_custom(models: Models, request: CustomRequest, args, device) -> torch.Tensor | None:
    """As Custom Ref2V Conditioning, Custom Sampler and Decode, with the authors' size, subject and negative prompt
    where the options leave them unset."""
    size = {"width": CUSTOM_DEFAULTS["width"], "height": CUSTOM_DEFAULTS["height"]}
    size |= _given(args, width=args.width, height=args.height)
    # The reference adds one latent frame of tokens: planned as 4 more video frames.
    plan = plan_for(models, size["width"], size["height"], request.num_frames + VAE_TEMPORAL, device)
    with text_encoders_on_device(models.encoders, device):
        models.vae.to(device)
        conditioning = prepare_custom(models.encoders, models.vae, picture_tensor(args), args.prompt,
                                      args.negative_prompt.strip() or CUSTOM_NEGATIVE_PROMPT,
                                      args.subject or DEFAULT_SUBJECT, device=device, **size)
        models.vae.to("cpu")
    what = f"HunyuanCustom {size['width']}x{size['height']}, {request.num_frames} frames, {request.steps} steps"
    latents = sample(models, plan, device, what,
                      lambda **run: generate_custom(models.transformer, conditioning, request, **run))
    return _decode(models, latents, plan, device)


JOBS = {
    "t2v": Job(t2v_request, render_t2v),
    "i2v": Job(i2v_request, render_i2v),
    "custom": Job(custom_request, render_custom),
}
