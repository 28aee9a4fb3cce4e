"""The SigLIP vision encoder that gives HunyuanVideo 1.5's I2V jobs their 729 image tokens.

The authors use FLUX.1-Redux-dev's `image_encoder` (SigLIP so400m, patch 14 at 384 px: 27 layers, width
1152) and its `feature_extractor`, and take `last_hidden_state` of the bucket-cropped first frame (SPEC-hv15
§5.5). Users keep it as ComfyUI's `clip_vision/sigclip_vision_patch14_384.safetensors` (transformers' names
under `vision_model.`, the pooling head optional) or as a diffusers folder's `image_encoder/`.

Preprocessing is the authors' image processor: a bicubic PIL resize of the uint8 image to the model's square
size, then /255 and mean 0.5, std 0.5 per channel. transformers 4 (the authors pin 4.57) calls that class
`SiglipImageProcessor`; transformers 5 gives that name to a torchvision resize (other numbers) and keeps the
PIL one as `SiglipImageProcessorPil`, which is used here. ComfyUI's own CLIPVisionEncode resizes with torch's
antialiased bicubic and centre-crops, so its tokens differ slightly from these.

Config rules: width and patch from the shapes, the image size from the positions (`_image_size`), layers
counted, heads at SigLIP so400m's head width 72; GELU (tanh), LayerNorm eps 1e-6.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import (
    PICKLE_SUFFIXES,
    CheckpointError,
    cast_state_dict,
    describe_mismatch,
    load_state_dict,
    read_safetensors_header,
)

if TYPE_CHECKING:
    from transformers import SiglipVisionConfig, SiglipVisionModel

EXPECTED = "the SigLIP vision encoder (e.g. sigclip_vision_patch14_384.safetensors, or a diffusers image_encoder/)"
PREFIX = "vision_model."
HEAD_DIM = 72
CONSTANTS = {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3}
MEAN = STD = (0.5, 0.5, 0.5)


def _bare(state: Mapping) -> dict:
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def _problem(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """None when `shapes` (bare names) are a SigLIP vision tower's, else what they hold instead."""
    if "embeddings.class_embedding" in shapes or "pre_layrnorm.weight" in shapes:
        return "a CLIP vision tower (e.g. LLaVA's llava_llama3_vision), not SigLIP"
    needed = ("embeddings.patch_embedding.weight", "embeddings.position_embedding.weight",
              "encoder.layers.0.mlp.fc1.weight", "post_layernorm.weight")
    return None if all(k in shapes for k in needed) else guess_checkpoint_kind(shapes)


def _image_size(positions: int, patch: int) -> int:
    """The square input size: patches per side times the patch, rounded up to a multiple of 16 (so400m's 27
    patches of 14 = 378 px were trained at 384; the stride-14 convolution drops the last 6 pixels)."""
    return -(-math.isqrt(positions) * patch // 16) * 16


def derive_siglip_config(shapes: Mapping[str, tuple[int, ...]]) -> SiglipVisionConfig:
    """SiglipVisionConfig from the shapes of a SigLIP vision tower (bare names)."""
    from transformers import SiglipVisionConfig

    hidden, _, patch, _ = shapes["embeddings.patch_embedding.weight"]
    positions = shapes["embeddings.position_embedding.weight"][0]
    return SiglipVisionConfig(
        hidden_size=int(hidden), patch_size=int(patch), image_size=_image_size(int(positions), int(patch)),
        num_hidden_layers=len({k.split(".")[2] for k in shapes if k.startswith("encoder.layers.")}),
        num_attention_heads=int(hidden) // HEAD_DIM,
        intermediate_size=int(shapes["encoder.layers.0.mlp.fc1.weight"][0]),
        vision_use_head="head.probe" in shapes, **CONSTANTS,
    )


def siglip_from_state_dict(state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16, device="cpu",
                           name: str = "SigLIP") -> SiglipVisionModel:
    """SiglipVisionModel from ComfyUI's (= transformers') tensors, with or without `vision_model.`."""
    from transformers import SiglipVisionModel

    state = _bare({k: v for k, v in state.items() if not k.endswith("position_ids")})
    problem = _problem({k: tuple(v.shape) for k, v in state.items()})
    if problem is not None:
        raise CheckpointError(f"{name}: expected {EXPECTED}, but it holds {problem}")
    config = derive_siglip_config({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = SiglipVisionModel(config)
    if next(iter(model.state_dict())).startswith(PREFIX):  # transformers 4 nests the tower
        state = {PREFIX + k: v for k, v in state.items()}
    problems = describe_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{name}: an unknown SigLIP layout: tensors {problems}")
    model.load_state_dict(cast_state_dict(dict(state), dtype), strict=True, assign=True)
    embeddings = next(m for m in model.modules() if hasattr(m, "num_positions"))  # its position_ids are not stored
    embeddings.register_buffer("position_ids", torch.arange(embeddings.num_positions).unsqueeze(0), persistent=False)
    return model.to(device).eval()


def _image_encoder_folder(path: Path) -> Path | None:
    for folder in (path, path / "image_encoder"):
        if (folder / "config.json").is_file():
            return folder
    return None


def load_vision(path: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu") -> SiglipVisionModel:
    """SigLIP from one file (a wrong safetensors file is refused from its header) or a diffusers folder
    (`image_encoder/` itself or the pipeline folder holding it). The authors run it in fp16."""
    from transformers import SiglipVisionModel

    path = Path(path)
    if path.is_dir():
        folder = _image_encoder_folder(path)
        if folder is None:
            raise CheckpointError(f"{path}: a folder without config.json or image_encoder/config.json; "
                                  f"expected {EXPECTED}")
        kind = json.loads((folder / "config.json").read_text()).get("model_type", "")
        if kind != "siglip_vision_model":
            raise CheckpointError(f"{folder}: holds a {kind or 'model of unknown type'}, expected {EXPECTED}")
        try:
            model = SiglipVisionModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{folder}: does not load as a SigLIP vision model ({e})") from e
        return model.to(device).eval()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder; expected {EXPECTED}")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        problem = _problem(_bare({k: tuple(v["shape"]) for k, v in read_safetensors_header(path).items()}))
        if problem is not None:
            raise CheckpointError(f"{path.name}: expected {EXPECTED}, but it holds {problem}")
    return siglip_from_state_dict(load_state_dict(path), dtype, device, name=path.name)


def image_processor(vision: SiglipVisionModel):
    """The authors' SigLIP image processor (FLUX.1-Redux-dev's feature_extractor) at the model's image size."""
    try:
        from transformers import SiglipImageProcessorPil as Processor
    except ImportError:  # transformers before the backend split: SiglipImageProcessor is the PIL one
        from transformers import SiglipImageProcessor as Processor
    from transformers.image_utils import PILImageResampling

    size = vision.config.image_size
    return Processor(do_resize=True, size={"height": size, "width": size}, resample=PILImageResampling.BICUBIC,
                     do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(MEAN),
                     image_std=list(STD), do_convert_rgb=True)


def to_uint8(image: torch.Tensor) -> list:
    """ComfyUI IMAGE `[B, H, W, C]` in 0..1 -> one uint8 `[H, W, 3]` array per picture (the authors' input;
    exact for images that came from 8-bit files)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be a ComfyUI IMAGE [B, H, W, 3], got shape {tuple(image.shape)}")
    pixels = (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return list(pixels)


@torch.no_grad()
def encode_image(vision: SiglipVisionModel, image: torch.Tensor) -> torch.Tensor:
    """`last_hidden_state` `[B, 729, 1152]` (for the real model) of ComfyUI IMAGE `image`, already cropped to the
    video's bucket by the caller, in the model's dtype and on its device."""
    parameter = next(vision.parameters())
    pixels = image_processor(vision)(images=to_uint8(image), return_tensors="pt")["pixel_values"]
    return vision(pixel_values=pixels.to(device=parameter.device, dtype=parameter.dtype)).last_hidden_state
