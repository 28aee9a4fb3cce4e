"""The render command's HunyuanVideo 1.5 jobs: text-to-video, and image-to-video with --image, as the HV1.5 nodes
chain them (loaders, Text Encode, Image Conditioning, Sampler, Super-Resolution with --sr-model, Decode), with the
loaded variant's recipe.

As in `jobs`, `request` builds the sampler's request from the checked options before any model loads (the variant
and the size are known from the header and the picture), and `render` runs it. Options left unset take the
variant's recipe (cfg, shift, steps), 121 frames and the 16:9 bucket of the model's resolution (T2V) or the bucket
nearest the picture (I2V). The super-resolution stage takes the SR recipe (6 steps to 720p, 8 to 1080p, shift 2, CFG
1), the authors' 0.7 noise augmentation and the same prompt and seed; it is planned before the prompt is encoded,
so a stage that cannot fit is refused before the base clip is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..hunyuan_video_15.decoding import decode_latents
from ..hunyuan_video_15.image_conditioning import prepare_image
from ..hunyuan_video_15.prompt_encoding import encode_pair, encode_prompt
from ..hunyuan_video_15.sampling import Request15, batch_cfg_fits, generate, recipe_request
from ..hunyuan_video_15.sizes import nearest_bucket, size_for_aspect
from ..hunyuan_video_15.super_resolution import generate_sr, prepare_sr_image, sr_request, sr_size
from ..hunyuan_video_15.variants import DEFAULT_FRAMES, Variant
from ..memory.sampling_memory import text_encoders_on_device
from .hv15_options import DEFAULT_ASPECT_RATIO
from .hv15_sr_options import DEFAULT_NOISE_AUGMENTATION, check_upsampler_kind
from .jobs import Job, picture_tensor, plan_for, sample


@dataclass
class Models15:
    """A 1.5 render's models: the transformer (LoadedTransformer15), the VAE, the text encoders (TextEncoders15),
    for image-to-video SigLIP, and with --sr-model the SR DiT (LoadedTransformer15) and its latent upsampler;
    `decodes` as in `jobs.Models`."""

    transformer: Any
    vae: Any
    encoders: Any
    vision: Any = None
    sr_transformer: Any = None
    upsampler: Any = None
    decodes: bool = True


@dataclass
class SRStage:
    """The super-resolution stage of a render: its models, request, output size and memory plan."""

    transformer: Any
    upsampler: Any
    request: Any  # super_resolution.SRRequest
    width: int
    height: int
    plan: Any


def load_models15(args, dtype: torch.dtype, checked=lambda transformer: transformer) -> Models15:
    """The models the (already checked) options name, the transformer first; `checked` takes it and returns it
    with what the options ask of it (the --lora choices, checked against it before the rest loads)."""
    from ..hunyuan_video_15.text_encoder_loading import (
        load_text_encoders15_from_files,
        load_text_encoders15_from_folder,
    )
    from ..hunyuan_video_15.transformer_loading import load_transformer
    from ..hunyuan_video_15.vae_loading import load_vae
    from ..hunyuan_video_15.vision_loading import load_vision

    transformer = checked(load_transformer(args.diffusers or args.transformer, variant=args.variant or "auto",
                                           dtype=args.weight_dtype or "auto"))
    sr = _load_sr(args)
    image_job = args.job == "i2v"
    if args.diffusers:
        root = Path(args.diffusers)
        encoders = load_text_encoders15_from_folder(root, dtype=dtype)
        vision = load_vision(root, dtype=dtype) if image_job else None
        return Models15(transformer, load_vae(root / "vae", dtype=dtype), encoders, vision, *sr)
    qwen_tokenizer, byt5_tokenizer = args.hv15_tokenizers
    encoders = load_text_encoders15_from_files(args.llm, args.byt5, qwen_tokenizer, byt5_tokenizer, dtype=dtype)
    vision = load_vision(args.vision, dtype=dtype) if image_job else None
    return Models15(transformer, load_vae(args.vae, dtype=dtype), encoders, vision, *sr)


def _load_sr(args) -> tuple[Any, Any]:
    """(SR DiT, upsampler) with --sr-model, as the checks read them (an unnamed SR DiT takes the base's), else
    (None, None)."""
    if not args.sr_model:
        return None, None
    from ..hunyuan_video_15.transformer_loading import load_transformer
    from ..hunyuan_video_15.upsampler import load_upsampler

    transformer = load_transformer(args.sr_model, variant=args.sr_variant, dtype=args.weight_dtype or "auto")
    upsampler = load_upsampler(args.sr_upsampler)
    check_upsampler_kind(upsampler.kind, args.sr_variant)
    return transformer, upsampler


def size15(args, variant: Variant) -> tuple[int, int]:
    """(width, height): I2V the bucket nearest the picture, T2V --width/--height or the --aspect-ratio bucket."""
    if args.job == "i2v":
        height, width = nearest_bucket(args.picture.height, args.picture.width, variant.resolution)
        return width, height
    if args.width is not None:
        return args.width, args.height
    return size_for_aspect(args.aspect_ratio or DEFAULT_ASPECT_RATIO, variant.resolution)


def request15(args) -> Request15:
    variant = Variant(args.model_variant)
    width, height = size15(args, variant)
    return recipe_request(variant, width, height, args.frames or DEFAULT_FRAMES, steps=args.steps or 0,
                          cfg=args.cfg or 0.0, flow_shift=args.shift or 0.0, seed=args.seed)


def render15(models: Models15, request: Request15, args, device) -> torch.Tensor | None:
    """As HV1.5 Text Encode, Image Conditioning (I2V), Sampler, Super-Resolution (--sr-model) and Decode; frames
    [T, H, W, 3] in 0..1 (None where the models do not decode)."""
    transformer, variant = models.transformer, models.transformer.variant
    batching = args.cfg_batching or "auto"
    request.batch_cfg = batching == "batched" or (batching == "auto" and batch_cfg_fits(transformer, request, device))
    calls = 2 if request.batch_cfg and request.cfg > 1 else 1
    plan = plan_for(models, request.width, request.height, request.num_frames, device, calls)
    stage = plan_sr(models, request, args, device)
    encoders = SimpleNamespace(llm=models.encoders.qwen, clip=models.encoders.byt5, vision=models.vision)
    image = sr_image = None
    with text_encoders_on_device(encoders, device, tokens=models.encoders.tokens_per_prompt):
        if request.cfg > 1:
            positive, negative = encode_pair(models.encoders, args.prompt, args.negative_prompt, device)
        else:
            positive, negative = encode_prompt(models.encoders, args.prompt, device=device), None
        if models.vision is not None:
            models.vae.to(device)
            picture = picture_tensor(args)
            image = prepare_image(models.vae, models.vision, picture, variant.resolution)
            if stage is not None:
                sr_resolution = stage.transformer.variant.resolution
                sr_image = prepare_sr_image(models.vae, models.vision, picture, stage.width, stage.height,
                                            sr_resolution)
            models.vae.to("cpu")
    what = (f"{variant.title} {request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps, "
            f"cfg {request.cfg:g}, shift {request.flow_shift:g}")
    latents = sample(models, plan, device, what,
                     lambda **run: generate(transformer, positive, negative, request, image, **run))
    if stage is not None:
        latents = lift(stage, positive, latents, request.num_frames, sr_image, device)
    if not models.decodes:
        return None
    models.vae.to(device)
    return decode_latents(models.vae, latents)[0]


def plan_sr(models: Models15, request: Request15, args, device) -> SRStage | None:
    """The SR stage of `request` (None without an SR DiT): the output bucket, the SR recipe where the options are
    unset, and the VRAM planner's choice at the output size (refused here when it cannot fit)."""
    transformer = models.sr_transformer
    if transformer is None:
        return None
    variant = transformer.variant
    width, height = sr_size(request.width, request.height, variant.resolution)
    noise = DEFAULT_NOISE_AUGMENTATION if args.sr_noise_augmentation is None else args.sr_noise_augmentation
    sr = sr_request(variant, steps=args.sr_steps or 0, flow_shift=args.sr_shift or 0.0, noise_augmentation=noise,
                    seed=args.seed)
    sr.validate()
    plan = plan_for(SimpleNamespace(transformer=transformer), width, height, request.num_frames, device)
    return SRStage(transformer, models.upsampler, sr, width, height, plan)


def lift(stage: SRStage, positive, latents: torch.Tensor, frames: int, image, device) -> torch.Tensor:
    """As HV1.5 Super-Resolution: the base latents to the stage's size (VAE space, as they came)."""
    sr, variant = stage.request, stage.transformer.variant
    what = (f"{variant.title} {stage.width}x{stage.height}, {frames} frames, {sr.steps} steps, shift "
            f"{sr.flow_shift:g}, noise augmentation {sr.noise_augmentation:g}")
    stage.upsampler.to(device)
    try:
        return sample(SimpleNamespace(transformer=stage.transformer), stage.plan, device, what,
                      lambda **run: generate_sr(stage.transformer, stage.upsampler, positive, latents, sr, image,
                                                **run))
    finally:
        stage.upsampler.to("cpu")


HV15_JOBS = {"t2v": Job(request15, render15), "i2v": Job(request15, render15)}
