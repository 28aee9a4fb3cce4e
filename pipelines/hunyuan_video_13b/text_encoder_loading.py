"""Loading HunyuanVideo's two text encoders and their tokenizers, with no network access.

Two ways users keep them:
- a diffusers/transformers folder: `text_encoder/` (Llama, or a whole LLaVA) + `tokenizer/`,
  `text_encoder_2/` (CLIP-L text model) + `tokenizer_2/`;
- ComfyUI's single files: `llava_llama3_fp8_scaled.safetensors` (the Llama-3-8B text part,
  fp8 with per-tensor scales, keys `model.layers...`) and `clip_l.safetensors`. These carry no
  config and no tokenizer: the architecture is read from the tensor shapes (constants that
  shapes cannot tell ship in `configs/`), and the tokenizers come from a folder the user names
  or from the tokenizer files ComfyUI itself ships (`find_comfy_tokenizers`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from packaging.version import Version

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import (
    FP8_MARKER,
    CheckpointError,
    cast_state_dict,
    describe_mismatch,
    load_state_dict,
    strip_prefix,
)
from ..weights.fp8_linear import FP8_DTYPE
from ..weights.streaming_load import StoragePlan, TensorSource, stream_into
from .vision_loading import LlavaVision, vision_of_llava

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, LlavaForConditionalGeneration

CONFIGS = Path(__file__).parent / "configs"
LLM_EXPECTED = "a Llama-3 text encoder (e.g. llava_llama3_fp8_scaled.safetensors)"
CLIP_EXPECTED = "a CLIP-L text encoder (e.g. clip_l.safetensors)"
LLM_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Parts of a LLaVA or CLIP file that the text path does not use.
LLM_UNUSED = ("lm_head.", "language_model.lm_head.", "vision_tower.", "model.vision_tower.",
              "multi_modal_projector.", "model.multi_modal_projector.", "image_newline")
CLIP_UNUSED = ("text_projection.weight", "logit_scale", "embeddings.position_ids")
# transformers >= 4.56 calls the load dtype `dtype`; older releases `torch_dtype`.
_DTYPE_KW = "dtype" if Version(version("transformers")) >= Version("4.56") else "torch_dtype"


@dataclass
class TextEncoders:
    """Both encoders with their tokenizers.

    `llm(input_ids=..., attention_mask=..., output_hidden_states=True).hidden_states` gives the
    Llama hidden states; `clip(input_ids).pooler_output` the pooled CLIP vector. When a folder
    holds a whole LLaVA, `llava` keeps it (its vision tower is for image prompts) and `llm` is
    its language model, sharing the weights. `vision` (the LLaVA vision tower and projector, for
    image prompts) is the LLaVA's own, or loaded from ComfyUI's `clip_vision/` file; None when
    only the text path was loaded.
    """

    llm: Any
    llm_tokenizer: Any
    clip: CLIPTextModel
    clip_tokenizer: Any
    llava: LlavaForConditionalGeneration | None = None
    vision: LlavaVision | None = None

    def modules(self) -> list[torch.nn.Module]:
        """The distinct modules to move between devices (the LLaVA holds its vision tower)."""
        parts = [self.llava or self.llm, self.clip]
        if self.vision is not None and self.llava is None:
            parts.append(self.vision)
        return parts

    def with_vision(self, vision: LlavaVision) -> "TextEncoders":
        """The same encoders, reading images with `vision` too."""
        return dataclasses.replace(self, vision=vision)

    def to(self, device) -> "TextEncoders":
        for module in self.modules():
            module.to(device)
        return self


def _constants(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}


def token_ids_within(constants: dict, vocab: int) -> dict:
    """Special-token ids only where the vocabulary has them (a tiny test model has not)."""
    return {k: v for k, v in constants.items() if not k.endswith("_token_id") or v < vocab}


def llama_constants() -> dict:
    return _constants("llama3_text_encoder.json")


def clip_constants() -> dict:
    return _constants("clip_l_text_encoder.json")


# ----------------------------------------------------------------------------- configs from shapes

def _count_layers(shapes: Mapping[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})


def derive_llama_config(shapes: Mapping[str, tuple[int, ...]]) -> LlamaConfig:
    """LlamaConfig from the shapes of a LlamaModel state dict (no `model.` prefix)."""
    from transformers import LlamaConfig

    c = llama_constants()
    head_dim = c.pop("head_dim")
    vocab, hidden = shapes["embed_tokens.weight"]
    c = token_ids_within(c, vocab)
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=_count_layers(shapes, "layers."),
        num_attention_heads=int(shapes["layers.0.self_attn.q_proj.weight"][0]) // head_dim,
        num_key_value_heads=int(shapes["layers.0.self_attn.k_proj.weight"][0]) // head_dim,
        intermediate_size=int(shapes["layers.0.mlp.gate_proj.weight"][0]),
        head_dim=head_dim,
        **c,
    )


def derive_clip_config(shapes: Mapping[str, tuple[int, ...]]) -> CLIPTextConfig:
    """CLIPTextConfig from the shapes of a CLIP text model state dict (no `text_model.` prefix)."""
    from transformers import CLIPTextConfig

    c = clip_constants()
    vocab, hidden = shapes["embeddings.token_embedding.weight"]
    return CLIPTextConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        projection_dim=int(hidden),
        num_hidden_layers=_count_layers(shapes, "encoder.layers."),
        num_attention_heads=int(hidden) // c["head_dim"],
        intermediate_size=int(shapes["encoder.layers.0.mlp.fc1.weight"][0]),
        max_position_embeddings=int(shapes["embeddings.position_embedding.weight"][0]),
        hidden_act=c["hidden_act"],
        layer_norm_eps=c["layer_norm_eps"],
        bos_token_id=int(vocab) - 2,
        eos_token_id=int(vocab) - 1,
        pad_token_id=int(vocab) - 1,
    )


# ----------------------------------------------------------------------------- single files

def _build(cls, config, state: dict[str, torch.Tensor], dtype, device, name: str, expected_kind: str):
    """Instantiate `cls(config)` with exactly the tensors in `state` (checked on the meta device
    first, so a wrong file fails with a clear message before any weights are copied)."""
    with torch.device("meta"):
        skeleton = cls(config)
    expected = skeleton.state_dict()
    if expected and next(iter(expected)).startswith("text_model.") and not next(iter(state)).startswith("text_model."):
        state = {f"text_model.{k}": v for k, v in state.items()}  # transformers < 5 nests CLIP's names
    problems = describe_mismatch(expected, state)
    if problems:
        raise CheckpointError(f"{name}: an unknown {expected_kind} layout: tensors {problems}")
    if str(device) == "meta":
        skeleton.load_state_dict(state, strict=True, assign=True)
        return skeleton.eval()
    model = cls.from_pretrained(None, config=config, state_dict=state, **{_DTYPE_KW: dtype})
    return model.to(device).eval()


def llama_from_state_dict(state: Mapping[str, torch.Tensor], dtype=torch.bfloat16, device="cpu", name="LLM") -> LlamaModel:
    """A LlamaModel from the text part of a Llama/LLaVA file (fp8 scales applied); `name` for errors."""
    from transformers import LlamaModel

    state = {k: v for k, v in state.items() if not k.startswith(LLM_UNUSED)}
    state = strip_prefix(state, LLM_PREFIXES)
    if "embed_tokens.weight" not in state or "layers.0.self_attn.q_proj.weight" not in state:
        raise CheckpointError(f"{name}: expected {LLM_EXPECTED}, but it holds {guess_checkpoint_kind(state)}")
    state = cast_state_dict(state, dtype)
    config = derive_llama_config({k: tuple(v.shape) for k, v in state.items()})
    return _build(LlamaModel, config, state, dtype, device, name, "Llama")


def llama_from_file(path: str | Path, dtype=torch.bfloat16, device="cpu") -> LlamaModel:
    """A LlamaModel streamed from a safetensors file tensor by tensor (see `streaming_load`). An fp8
    file (`llava_llama3_fp8_scaled`) stays fp8 with its scales and computes in `dtype` layer by layer
    (8 GB instead of 16 GB for Llama-3-8B); asked for fp32, it is dequantized like any other file."""
    from transformers import LlamaModel

    path = Path(path)
    source = TensorSource(path, LLM_PREFIXES, drop=LLM_UNUSED)
    shapes = {k: source.shape(k) for k in source.keys() if not k.endswith(("scale_weight", "scale_input", FP8_MARKER))}
    if "embed_tokens.weight" not in shapes or "layers.0.self_attn.q_proj.weight" not in shapes:
        raise CheckpointError(f"{path.name}: expected {LLM_EXPECTED}, but it holds {guess_checkpoint_kind(shapes)}")
    config = derive_llama_config(shapes)
    with torch.device("meta"):
        model = LlamaModel(config)
    problems = describe_mismatch(model.state_dict(), {k: torch.empty(v, device="meta") for k, v in shapes.items()})
    if problems:
        raise CheckpointError(f"{path.name}: an unknown Llama layout: tensors {problems}")
    model.rotary_emb = type(model.rotary_emb)(config=config)  # its inv_freq buffer is computed, not stored
    keep_fp8 = source.is_fp8() and dtype in (torch.bfloat16, torch.float16)
    plan = StoragePlan(FP8_DTYPE, dtype) if keep_fp8 else StoragePlan(dtype, dtype)
    missing = stream_into(model, source, lambda key, value: {key: value}, plan,
                          skip=lambda key: key.endswith(FP8_MARKER))
    if missing:
        raise CheckpointError(f"{path.name}: lacks {len(missing)} Llama tensors (e.g. {missing[0]})")
    return model.to(device).eval()


def _clip_text_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bare CLIP text-model names, whatever wraps them (`text_model.`, `cond_stage_model.transformer.`...)."""
    out = {}
    for key, value in state.items():
        bare = key.rsplit("text_model.", 1)[-1]
        if bare not in CLIP_UNUSED and not bare.endswith("scaled_fp8"):
            out[bare] = value
    return out


def clip_from_state_dict(state: Mapping[str, torch.Tensor], dtype=torch.bfloat16, device="cpu", name="CLIP") -> CLIPTextModel:
    """A CLIPTextModel from a CLIP-L file (ComfyUI's or transformers' naming); `name` for errors."""
    from transformers import CLIPTextModel

    state = _clip_text_keys(state)
    if "embeddings.token_embedding.weight" not in state or "encoder.layers.0.mlp.fc1.weight" not in state:
        raise CheckpointError(f"{name}: expected {CLIP_EXPECTED}, but it holds {guess_checkpoint_kind(state)}")
    state = cast_state_dict(state, dtype)
    config = derive_clip_config({k: tuple(v.shape) for k, v in state.items()})
    return _build(CLIPTextModel, config, state, dtype, device, name, "CLIP text encoder")


# ----------------------------------------------------------------------------- tokenizers

def load_llama_tokenizer(folder: str | Path):
    """The Llama-3 tokenizer from local files. A `tokenizer.json` is used exactly as written
    (ComfyUI's says `LlamaTokenizer`, which would otherwise rebuild it as a SentencePiece one)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    elif folder.is_dir():
        tokenizer = _auto_tokenizer(folder, "a Llama-3 tokenizer (tokenizer.json)")
    else:
        raise CheckpointError(f"{folder}: no such tokenizer folder; expected a Llama-3 tokenizer (tokenizer.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<pad>" if "<pad>" in tokenizer.get_vocab() else tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_clip_tokenizer(folder: str | Path):
    """The CLIP tokenizer from local files (vocab.json + merges.txt, or tokenizer.json); 77 tokens."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such tokenizer folder; expected a CLIP tokenizer (vocab.json + merges.txt)")
    tokenizer = _auto_tokenizer(folder, "a CLIP tokenizer (vocab.json + merges.txt)")
    tokenizer.model_max_length = clip_constants()["max_length"]  # ComfyUI's file says 8192
    return tokenizer


def _auto_tokenizer(folder: Path, expected: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder}: not a usable tokenizer folder ({e}); expected {expected}") from e


def find_comfy_tokenizers(comfy_package_dir: str | Path) -> tuple[Path, Path]:
    """(Llama-3 tokenizer folder, CLIP tokenizer folder) among the files ComfyUI ships:
    `comfy/text_encoders/llama_tokenizer/` and `comfy/sd1_tokenizer/`. Accepts the `comfy`
    package folder or the ComfyUI root. They are used in place, never copied."""
    base = Path(comfy_package_dir)
    for root in (base, base / "comfy"):
        llama, clip = root / "text_encoders" / "llama_tokenizer", root / "sd1_tokenizer"
        if (llama / "tokenizer.json").is_file() and (clip / "vocab.json").is_file():
            return llama, clip
    raise CheckpointError(
        f"{base}: ComfyUI's tokenizer files were not found (expected text_encoders/llama_tokenizer/tokenizer.json "
        "and sd1_tokenizer/vocab.json in the comfy package); name a tokenizer folder instead"
    )


# ----------------------------------------------------------------------------- public loaders

def load_text_encoders_from_files(
    llm_file: str | Path,
    clip_file: str | Path,
    llm_tokenizer_dir: str | Path,
    clip_tokenizer_dir: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device="cpu",
) -> TextEncoders:
    """ComfyUI's single files (`llava_llama3_fp8_scaled.safetensors`, `clip_l.safetensors`) plus tokenizer folders."""
    llm_file, clip_file = Path(llm_file), Path(clip_file)
    llm_tokenizer = load_llama_tokenizer(llm_tokenizer_dir)
    clip_tokenizer = load_clip_tokenizer(clip_tokenizer_dir)
    if llm_file.suffix.lower() == ".safetensors":
        llm = llama_from_file(llm_file, dtype, device)
    else:
        llm = llama_from_state_dict(load_state_dict(llm_file), dtype, device, name=llm_file.name)
    clip = clip_from_state_dict(load_state_dict(clip_file), dtype, device, name=clip_file.name)
    _check_vocab(llm, llm_tokenizer, llm_file.name, Path(llm_tokenizer_dir))
    _check_vocab(clip, clip_tokenizer, clip_file.name, Path(clip_tokenizer_dir))
    return TextEncoders(llm, llm_tokenizer, clip, clip_tokenizer)


def _check_vocab(model, tokenizer, model_name: str, tokenizer_dir: Path) -> None:
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        raise CheckpointError(
            f"{tokenizer_dir}: the tokenizer has {len(tokenizer)} tokens but {model_name} only {size}: "
            "they do not belong together"
        )


def _subfolder(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_dir():
        raise CheckpointError(f"{folder}: has no {name}/ folder; expected a diffusers folder with {what} in {name}/")
    return path


def _model_type(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: no readable config.json ({e})") from e
    return str(config.get("model_type", ""))


def _from_pretrained(cls, path: Path, dtype, expected: str):
    try:
        model, info = cls.from_pretrained(str(path), local_files_only=True, output_loading_info=True, **{_DTYPE_KW: dtype})
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: does not load as {expected} ({e})") from e
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise CheckpointError(f"{path}: lacks {len(missing)} tensors of {expected} (e.g. {missing[0]})")
    return model.eval()


def load_text_encoders_from_folder(folder: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu") -> TextEncoders:
    """`text_encoder/` (Llama or LLaVA), `tokenizer/`, `text_encoder_2/` (CLIP), `tokenizer_2/` of a diffusers folder."""
    from transformers import CLIPTextModel, LlamaModel, LlavaForConditionalGeneration

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder; expected a diffusers folder with text_encoder/ and text_encoder_2/")
    llm_dir = _subfolder(folder, "text_encoder", "the Llama/LLaVA text encoder")
    clip_dir = _subfolder(folder, "text_encoder_2", "the CLIP text encoder")
    llm_tokenizer = load_llama_tokenizer(_subfolder(folder, "tokenizer", "the Llama tokenizer"))
    clip_tokenizer = load_clip_tokenizer(_subfolder(folder, "tokenizer_2", "the CLIP tokenizer"))

    llm_type = _model_type(llm_dir)
    llava = None
    if llm_type == "llava":
        llava = _from_pretrained(LlavaForConditionalGeneration, llm_dir, dtype, "a LLaVA model").to(device)
        llm = llava.get_decoder()
    elif llm_type == "llama":
        llm = _from_pretrained(LlamaModel, llm_dir, dtype, "a Llama model").to(device)
    else:
        raise CheckpointError(f"{llm_dir}: holds a {llm_type or 'model of unknown type'}, expected a Llama or LLaVA text encoder")
    clip_type = _model_type(clip_dir)
    if clip_type not in ("clip_text_model", "clip"):
        raise CheckpointError(f"{clip_dir}: holds a {clip_type or 'model of unknown type'}, expected {CLIP_EXPECTED}")
    clip = _from_pretrained(CLIPTextModel, clip_dir, dtype, "a CLIP text model").to(device)
    vision = vision_of_llava(llava) if llava is not None else None
    return TextEncoders(llm, llm_tokenizer, clip, clip_tokenizer, llava, vision)
