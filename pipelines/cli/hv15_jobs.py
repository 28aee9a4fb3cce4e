"""The render command's HunyuanVideo 1.5 jobs: text-to-video, and image-to-video with --image, as the HV1.5 nodes
chain them (loaders, Text Encode, Image Conditioning, Sampler, Decode), with the loaded variant's recipe.

As in `jobs`, `request` builds the sampler's request from the checked options before any model loads (the variant
and the size are known from the header and the picture), and `render` runs it. Options left unset take the
variant's recipe (cfg, shift, steps), 121 frames and the 16:9 bucket of the model's resolution (T2V) or the bucket
nearest the picture (I2V).
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
from ..hunyuan_video_15.variants import DEFAULT_FRAMES, Variant
from ..memory.sampling_memory import text_encoders_on_device
from .hv15_options import DEFAULT_ASPECT_RATIO
from .jobs import Job, picture_tensor, plan_for, sample


@dataclass
class Models15:
    """A 1.5 render's models: the transformer (LoadedTransformer15), the VAE, the text encoders (TextEncoders15)
    and, for image-to-video, SigLIP."""

    transformer: Any
    vae: Any
    encoders: Any
    vision: Any = None


def load_models15(args, dtype: torch.dtype) -> Models15:
    """The models the (already checked) options name, the transformer first."""
    from ..hunyuan_video_15.text_encoder_loading import (
        load_text_encoders15_from_files,
        load_text_encoders15_from_folder,
    )
    from ..hunyuan_video_15.transformer_loading import load_transformer
    from ..hunyuan_video_15.vae_loading import load_vae
    from ..hunyuan_video_15.vision_loading import load_vision

    transformer = load_transformer(args.diffusers or args.transformer, variant=args.variant or "auto",
                                   dtype=args.weight_dtype or "auto")
    image_job = args.job == "i2v"
    if args.diffusers:
        root = Path(args.diffusers)
        encoders = load_text_encoders15_from_folder(root, dtype=dtype)
        vision = load_vision(root, dtype=dtype) if image_job else None
        return Models15(transformer, load_vae(root / "vae", dtype=dtype), encoders, vision)
    qwen_tokenizer, byt5_tokenizer = args.hv15_tokenizers
    encoders = load_text_encoders15_from_files(args.llm, args.byt5, qwen_tokenizer, byt5_tokenizer, dtype=dtype)
    vision = load_vision(args.vision, dtype=dtype) if image_job else None
    return Models15(transformer, load_vae(args.vae, dtype=dtype), encoders, vision)


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


def render15(models: Models15, request: Request15, args, device) -> torch.Tensor:
    """As HV1.5 Text Encode, Image Conditioning (I2V), Sampler and Decode; frames [T, H, W, 3] in 0..1."""
    transformer, variant = models.transformer, models.transformer.variant
    batching = args.cfg_batching or "auto"
    request.batch_cfg = batching == "batched" or (batching == "auto" and batch_cfg_fits(transformer, request, device))
    calls = 2 if request.batch_cfg and request.cfg > 1 else 1
    plan = plan_for(models, request.width, request.height, request.num_frames, device, calls)
    encoders = SimpleNamespace(llm=models.encoders.qwen, clip=models.encoders.byt5, vision=models.vision)
    image = None
    with text_encoders_on_device(encoders, device, tokens=models.encoders.tokens_per_prompt):
        if request.cfg > 1:
            positive, negative = encode_pair(models.encoders, args.prompt, args.negative_prompt, device)
        else:
            positive, negative = encode_prompt(models.encoders, args.prompt, device=device), None
        if models.vision is not None:
            models.vae.to(device)
            image = prepare_image(models.vae, models.vision, picture_tensor(args), variant.resolution)
            models.vae.to("cpu")
    what = (f"{variant.title} {request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps, "
            f"cfg {request.cfg:g}, shift {request.flow_shift:g}")
    latents = sample(models, plan, device, what,
                     lambda **run: generate(transformer, positive, negative, request, image, **run))
    models.vae.to(device)
    return decode_latents(models.vae, latents)[0]


HV15_JOBS = {"t2v": Job(request15, render15), "i2v": Job(request15, render15)}
