"""The LLaVA vision tower and projector that turn an image into Llama-width tokens, offline.

HunyuanVideo-I2V and HunyuanCustom put a picture into the text encoder: a CLIP ViT-L/14 at
336 px (penultimate layer, CLS token dropped) and LLaVA's two-layer projector give 576 tokens
of the Llama width. Users keep it in one of two places:
- ComfyUI's `clip_vision/llava_llama3_vision.safetensors`: transformers' CLIP vision names
  (`vision_model.*`) plus `multi_modal_projector.linear_1/2`, with no config: the architecture is
  read off the tensor shapes and the constants shapes cannot tell ship in `configs/`;
- inside a whole LLaVA (a diffusers HunyuanVideo-I2V folder's `text_encoder/`).
Both end up as one `LlavaVision` module, so the prompt encoders have a single path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import CheckpointError, cast_state_dict, describe_mismatch, load_state_dict, strip_prefix

CONFIG_FILE = Path(__file__).parent / "configs" / "llava_vision.json"
EXPECTED = "the LLaVA vision tower and projector (e.g. llava_llama3_vision.safetensors)"
FILE_VISION_PREFIX, FILE_PROJECTOR_PREFIX = "vision_model.", "multi_modal_projector."
UNUSED = ("vision_model.embeddings.position_ids", "visual_projection.weight")


def _file_name(key: str) -> str:
    """Tensor names as ComfyUI's file has them, from a LLaVA's (`vision_tower.` with or without `vision_model.`)."""
    if key.startswith("vision_tower."):
        key = key.removeprefix("vision_tower.")
        return key if key.startswith(FILE_VISION_PREFIX) else FILE_VISION_PREFIX + key
    return key


def vision_constants() -> dict:
    return {k: v for k, v in json.loads(CONFIG_FILE.read_text()).items() if not k.startswith("_")}


class LlavaVision(nn.Module):
    """CLIP vision model + LLaVA projector: pixel values `[B, 3, S, S]` -> image tokens `[B, N, D_llm]`.

    What `LlavaModel.get_image_features` does (feature layer, CLS dropped, projector), kept as a
    module of its own because ComfyUI users hold the vision tower apart from the language model.
    """

    def __init__(self, tower: nn.Module, projector: nn.Module, feature_layer: int):
        super().__init__()
        self.tower = tower
        self.projector = projector
        self.feature_layer = feature_layer

    @property
    def image_size(self) -> int:
        return int(self.tower.config.image_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def num_tokens(self) -> int:
        return (self.image_size // int(self.tower.config.patch_size)) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values.to(self.dtype), output_hidden_states=True).hidden_states
        return self.projector(hidden[self.feature_layer][:, 1:])


def _llava_config(vision_config, text_width: int):
    from transformers import LlamaConfig, LlavaConfig

    c = vision_constants()
    return LlavaConfig(
        vision_config=vision_config,
        # Only the projector is built from this config: the text side just names its width.
        text_config=LlamaConfig(hidden_size=text_width, num_hidden_layers=1, num_attention_heads=1,
                                intermediate_size=1, vocab_size=1, bos_token_id=None, eos_token_id=None),
        projector_hidden_act=c["projector_hidden_act"],
        vision_feature_layer=c["feature_layer"],
        vision_feature_select_strategy="default",
    )


def derive_vision_config(shapes: Mapping[str, tuple[int, ...]]):
    """CLIPVisionConfig from the shapes of `vision_model.*` tensors."""
    from transformers import CLIPVisionConfig

    c = vision_constants()
    hidden, _, patch, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise CheckpointError(f"{positions} vision positions are not a square grid plus a CLS token")
    layers = {k.split(".")[3] for k in shapes if k.startswith("vision_model.encoder.layers.")}
    return CLIPVisionConfig(
        hidden_size=int(hidden),
        intermediate_size=int(shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0]),
        num_hidden_layers=len(layers),
        num_attention_heads=int(hidden) // c["head_dim"],
        image_size=side * int(patch),
        patch_size=int(patch),
        hidden_act=c["hidden_act"],
        layer_norm_eps=c["layer_norm_eps"],
        projection_dim=int(hidden),
    )


def vision_from_state_dict(state: Mapping[str, torch.Tensor], dtype=torch.bfloat16, device="cpu",
                           name: str = "vision") -> LlavaVision:
    """A `LlavaVision` from a vision file's tensors (fp8 scales applied); `name` for errors."""
    from transformers import CLIPVisionModel
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    state = {_file_name(k): v for k, v in strip_prefix(dict(state), ("model.",)).items()}
    state = {k: v for k, v in state.items() if k not in UNUSED}
    if "vision_model.embeddings.patch_embedding.weight" not in state or "multi_modal_projector.linear_1.weight" not in state:
        raise CheckpointError(f"{name}: expected {EXPECTED}, but it holds {guess_checkpoint_kind(state)}")
    state = cast_state_dict(state, dtype)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = derive_vision_config(shapes)
    llava_config = _llava_config(config, int(shapes["multi_modal_projector.linear_2.weight"][0]))
    with torch.device("meta"):
        module = LlavaVision(CLIPVisionModel(config), LlavaMultiModalProjector(llava_config), vision_constants()["feature_layer"])
    nested = next(iter(module.tower.state_dict())).startswith(FILE_VISION_PREFIX)  # transformers < 5 nests the names
    renamed = {_module_key(k, nested): v for k, v in state.items()}
    problems = describe_mismatch(module.state_dict(), renamed)
    if problems:
        raise CheckpointError(f"{name}: an unknown LLaVA vision layout: tensors {problems}")
    module.load_state_dict(renamed, strict=True, assign=True)
    _fill_position_ids(module)
    return module.to(device=device, dtype=dtype).eval()


def _fill_position_ids(module: nn.Module) -> None:
    """CLIP's `position_ids` is a buffer no file holds; a model built on `meta` needs it made."""
    for owner in module.modules():
        ids = owner._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            owner._buffers["position_ids"] = torch.arange(ids.shape[-1]).expand(ids.shape)


def _module_key(file_key: str, nested: bool) -> str:
    """A file's tensor name as `LlavaVision` names it (`nested`: the CLIP model keeps `vision_model.`)."""
    if file_key.startswith(FILE_PROJECTOR_PREFIX):
        return "projector." + file_key.removeprefix(FILE_PROJECTOR_PREFIX)
    return "tower." + (file_key if nested else file_key.removeprefix(FILE_VISION_PREFIX))


def file_key(module_key: str) -> str:
    """`LlavaVision`'s tensor name as ComfyUI's vision file names it."""
    if module_key.startswith("projector."):
        return FILE_PROJECTOR_PREFIX + module_key.removeprefix("projector.")
    inner = module_key.removeprefix("tower.")
    return inner if inner.startswith(FILE_VISION_PREFIX) else FILE_VISION_PREFIX + inner


def load_vision(path: str | Path, dtype=torch.bfloat16, device="cpu") -> LlavaVision:
    """The vision tower and projector from one file (ComfyUI's `clip_vision/llava_llama3_vision.safetensors`)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder; expected {EXPECTED} as one file (a LLaVA folder loads with the text encoders)")
    return vision_from_state_dict(load_state_dict(path), dtype, device, name=path.name)


def vision_of_llava(llava) -> LlavaVision:
    """The vision half of a transformers LLaVA, sharing its weights."""
    inner = getattr(llava, "model", llava)
    layer = llava.config.vision_feature_layer
    if not isinstance(layer, int):
        raise CheckpointError(f"a LLaVA with several vision feature layers ({layer}) is not HunyuanVideo's text encoder")
    return LlavaVision(inner.vision_tower, inner.multi_modal_projector, layer)
