"""Loading HunyuanVideo 1.5's two text encoders and their tokenizers, with no network access.

Two ways users keep them:
- ComfyUI's single files in models/text_encoders: `qwen_2.5_vl_7b_fp8_scaled.safetensors` or
  `qwen_2.5_vl_7b.safetensors` (Qwen2.5-VL-7B, keys `model.layers...`; its vision tower `visual.*` and any
  `lm_head` are dropped, the text path never uses them) and `byt5_small_glyphxl_fp16.safetensors` (byT5-small
  with the Glyph-SDXL-v2 weights, T5 keys `shared.` / `encoder.block...`). They carry no config and no
  tokenizer: the architecture is read off the tensor shapes (rules below, so tiny test files load through the
  same path), and the tokenizers come from the folders ComfyUI ships (`comfy/text_encoders/qwen25_tokenizer/`:
  vocab.json, merges.txt, tokenizer_config.json with the chat template; `comfy/text_encoders/byt5_tokenizer/`)
  or from a folder the user names.
- a diffusers HunyuanVideo 1.5 folder: `text_encoder/` (Qwen2_5_VLTextModel), `tokenizer/`,
  `text_encoder_2/` (T5EncoderModel), `tokenizer_2/` (ByT5 with the Glyph colour and font tokens).

The Qwen file streams in tensor by tensor (`weights/streaming_load.py`); an fp8 file stays fp8 with its
per-tensor scales and computes in bf16/fp16 layer by layer (about 8 GB instead of 15 GB). byT5 (0.2 B
parameters) always runs in float32, as in the authors' pipeline, which never casts it.

Config rules (what shapes cannot tell is Qwen2.5-VL-7B's / byT5-small's own config):
- Qwen: vocab and hidden from `embed_tokens`, layers counted, intermediate from `gate_proj`, heads from the
  q/k projections at head width 128; RMS eps 1e-6, rope theta 1e6 with the mrope sections (16, 24, 24), which
  for text alone is plain 1D rope.
- byT5: vocab and d_model from `shared`, blocks counted, d_ff from `wi_0`, heads from `q` at d_kv 64, buckets
  from the relative attention bias; gated GELU, eps 1e-6, max distance 128. A T5 with a word-piece
  vocabulary (t5xxl, 32k tokens) is refused: byT5's is bytes (384 plus the glyph tokens, 1510).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import (
    FP8_MARKER,
    INPUT_SCALE_SUFFIX,
    PICKLE_SUFFIXES,
    SCALE_SUFFIX,
    CheckpointError,
    cast_state_dict,
    describe_mismatch,
    load_state_dict,
    read_safetensors_header,
)
from ..weights.fp8_linear import FP8_DTYPE
from ..weights.streaming_load import StoragePlan, TensorSource, stream_into
from .prompt_encoding import MAX_QWEN_TOKENS, video_crop_start

if TYPE_CHECKING:
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

QWEN_EXPECTED = "the Qwen2.5-VL-7B text encoder (e.g. qwen_2.5_vl_7b_fp8_scaled.safetensors)"
BYT5_EXPECTED = "the byT5 glyph encoder (e.g. byt5_small_glyphxl_fp16.safetensors)"
QWEN_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
QWEN_UNUSED = ("visual.", "model.visual.", "lm_head.", "language_model.lm_head.")
QWEN_HEAD_DIM = 128
QWEN_CONSTANTS = {"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 128000,
                  "hidden_act": "silu", "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
QWEN_TOKEN_IDS = {"bos_token_id": 151643, "eos_token_id": 151645}
BYT5_D_KV = 64
BYT5_CONSTANTS = {"feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "relative_attention_max_distance": 128,
                  "dropout_rate": 0.0, "pad_token_id": 0, "eos_token_id": 1, "is_encoder_decoder": False}
BYT5_MAX_VOCAB = 4096  # byte-level: 384 + the Glyph colour/font tokens; word-piece T5s have 32k and more
COMFY_TOKENIZER_FOLDERS = ("qwen25_tokenizer", "byt5_tokenizer")  # under comfy/text_encoders/


@dataclass
class TextEncoders15:
    """The Qwen2.5-VL language model and the byT5 glyph encoder with their tokenizers.

    `crop_start` is the number of template tokens before the prompt, computed once with `qwen_tokenizer` as
    the authors do when their encoder is built (108 with the real tokenizer)."""

    qwen: Qwen2_5_VLTextModel
    qwen_tokenizer: Any
    byt5: T5EncoderModel
    byt5_tokenizer: Any
    crop_start: int

    @property
    def tokens_per_prompt(self) -> int:
        """Tokens the Qwen reads per prompt (template + 1000), which the memory planner sizes its activations by."""
        return self.crop_start + MAX_QWEN_TOKENS

    def modules(self) -> list[torch.nn.Module]:
        return [self.qwen, self.byt5]

    def to(self, device) -> "TextEncoders15":
        for module in self.modules():
            module.to(device)
        return self


def _count(shapes: Mapping[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})


# ----------------------------------------------------------------------------- Qwen2.5-VL

def _qwen_problem(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """None when `shapes` (prefix stripped) are a Qwen2 language model's, else what they are instead."""
    needed = ("embed_tokens.weight", "layers.0.self_attn.k_proj.bias", "layers.0.mlp.gate_proj.weight")
    return None if all(k in shapes for k in needed) else guess_checkpoint_kind(shapes)


def derive_qwen_config(shapes: Mapping[str, tuple[int, ...]]) -> Qwen2_5_VLTextConfig:
    """Qwen2_5_VLTextConfig from the shapes of a Qwen2.5-VL language model (prefix stripped)."""
    from transformers import Qwen2_5_VLTextConfig

    vocab, hidden = shapes["embed_tokens.weight"]
    ids = {k: v if v < vocab else None for k, v in QWEN_TOKEN_IDS.items()}  # a tiny test vocabulary has none
    return Qwen2_5_VLTextConfig(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=_count(shapes, "layers."),
        num_attention_heads=int(shapes["layers.0.self_attn.q_proj.weight"][0]) // QWEN_HEAD_DIM,
        num_key_value_heads=int(shapes["layers.0.self_attn.k_proj.weight"][0]) // QWEN_HEAD_DIM,
        intermediate_size=int(shapes["layers.0.mlp.gate_proj.weight"][0]), **QWEN_CONSTANTS, **ids,
    )


def qwen_from_file(path: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu") -> Qwen2_5_VLTextModel:
    """The language model of a Qwen2.5-VL file in ComfyUI's (or transformers') key layout, streamed tensor by
    tensor. A wrong file is refused from its header, before any weight is read."""
    from transformers import Qwen2_5_VLTextModel

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected {QWEN_EXPECTED}")
    source = TensorSource(path, QWEN_PREFIXES, drop=QWEN_UNUSED)
    shapes = {k: source.shape(k) for k in source.keys()
              if not k.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX, FP8_MARKER))}
    problem = _qwen_problem(shapes)
    if problem is not None:
        raise CheckpointError(f"{path.name}: expected {QWEN_EXPECTED}, but it holds {problem}")
    config = derive_qwen_config(shapes)
    with torch.device("meta"):
        model = Qwen2_5_VLTextModel(config)
    problems = describe_mismatch(model.state_dict(), {k: torch.empty(v, device="meta") for k, v in shapes.items()
                                                      if not k.startswith("rotary_emb.")})
    if problems:
        raise CheckpointError(f"{path.name}: an unknown Qwen2.5-VL layout: tensors {problems}")
    model.rotary_emb = type(model.rotary_emb)(config=config)  # its inv_freq buffers are computed, not stored
    keep_fp8 = source.is_fp8() and dtype in (torch.bfloat16, torch.float16)
    plan = StoragePlan(FP8_DTYPE, dtype) if keep_fp8 else StoragePlan(dtype, dtype)
    missing = stream_into(model, source, lambda key, value: {key: value}, plan,
                          skip=lambda key: key.endswith(FP8_MARKER))
    if missing:
        raise CheckpointError(f"{path.name}: lacks {len(missing)} Qwen2.5-VL tensors (e.g. {missing[0]})")
    return model.to(device).eval()


# ----------------------------------------------------------------------------- byT5

def _byt5_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """T5EncoderModel names whatever the file uses: ComfyUI's/diffusers' (`shared.`, `encoder.block...`) or the
    Glyph checkpoint's bare T5 stack (`embed_tokens.`, `block...`, `final_layer_norm.`)."""
    out = {}
    for key, value in state.items():
        if key.endswith(FP8_MARKER):
            continue
        if key.startswith(("block.", "final_layer_norm.")):
            key = "encoder." + key
        if key in ("embed_tokens.weight", "encoder.embed_tokens.weight"):
            key = "shared.weight"
        out[key] = value
    return out


def _byt5_problem(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    needed = ("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
              "encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    if not all(k in shapes for k in needed):
        return guess_checkpoint_kind(shapes)
    vocab = shapes["shared.weight"][0]
    return None if vocab <= BYT5_MAX_VOCAB else f"a T5 text encoder with a {vocab}-token vocabulary (byT5's is bytes)"


def derive_byt5_config(shapes: Mapping[str, tuple[int, ...]]) -> T5Config:
    """T5Config of the byT5 encoder from T5EncoderModel-named shapes."""
    from transformers import T5Config

    vocab, d_model = shapes["shared.weight"]
    attention = "encoder.block.0.layer.0.SelfAttention."
    return T5Config(
        vocab_size=int(vocab), d_model=int(d_model), d_kv=BYT5_D_KV,
        num_heads=int(shapes[attention + "q.weight"][0]) // BYT5_D_KV,
        d_ff=int(shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]),
        num_layers=_count(shapes, "encoder.block."),
        relative_attention_num_buckets=int(shapes[attention + "relative_attention_bias.weight"][0]), **BYT5_CONSTANTS,
    )


def byt5_from_state_dict(state: Mapping[str, torch.Tensor], device="cpu", name: str = "byT5") -> T5EncoderModel:
    """The byT5 encoder (float32) from its tensors in any of the layouts `_byt5_keys` knows; `name` for errors."""
    from transformers import T5EncoderModel

    state = _byt5_keys(state)
    problem = _byt5_problem({k: tuple(v.shape) for k, v in state.items()})
    if problem is not None:
        raise CheckpointError(f"{name}: expected {BYT5_EXPECTED}, but it holds {problem}")
    state = cast_state_dict(state, torch.float32)
    config = derive_byt5_config({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = T5EncoderModel(config)
    state["encoder.embed_tokens.weight"] = state["shared.weight"]  # tied: one tensor under both names
    problems = describe_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{name}: an unknown byT5 layout: tensors {problems}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def byt5_from_file(path: str | Path, device="cpu") -> T5EncoderModel:
    """byT5 from one file; a safetensors file of the wrong kind is refused from its header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected {BYT5_EXPECTED}")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        shapes = _byt5_keys({k: tuple(v["shape"]) for k, v in read_safetensors_header(path).items()})
        problem = _byt5_problem(shapes)
        if problem is not None:
            raise CheckpointError(f"{path.name}: expected {BYT5_EXPECTED}, but it holds {problem}")
    return byt5_from_state_dict(load_state_dict(path), device, name=path.name)


# ----------------------------------------------------------------------------- tokenizers

def load_qwen_tokenizer(folder: str | Path):
    """The Qwen2.5 tokenizer with its chat template, from local files only, padding on the right."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    expected = "the Qwen2.5-VL tokenizer (vocab.json + merges.txt + tokenizer_config.json, or tokenizer.json)"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such tokenizer folder; expected {expected}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, padding_side="right")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder}: not a usable tokenizer folder ({e}); expected {expected}") from e
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"{folder}: the tokenizer has no chat template; expected {expected}")
    return tokenizer


def load_byt5_tokenizer(folder: str | Path | None = None):
    """The ByT5 tokenizer from a local folder; without one, transformers' own (bytes need no files, and it is
    the tokenizer ComfyUI ships). The Glyph colour/font tokens of a diffusers `tokenizer_2/` come with it."""
    from transformers import ByT5Tokenizer

    if folder is None:
        return ByT5Tokenizer()
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such tokenizer folder; expected a ByT5 tokenizer")
    try:
        return ByT5Tokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder}: not a usable ByT5 tokenizer folder ({e})") from e


def find_comfy_tokenizers(comfy_package_dir: str | Path) -> tuple[Path, Path]:
    """(Qwen2.5 tokenizer folder, ByT5 tokenizer folder) among the files ComfyUI ships in
    `comfy/text_encoders/`; accepts the `comfy` package folder or the ComfyUI root. Used in place."""
    base = Path(comfy_package_dir)
    for root in (base, base / "comfy"):
        qwen, byt5 = (root / "text_encoders" / name for name in COMFY_TOKENIZER_FOLDERS)
        if (qwen / "vocab.json").is_file() and byt5.is_dir():
            return qwen, byt5
    raise CheckpointError(f"{base}: ComfyUI's tokenizer files were not found (expected text_encoders/qwen25_tokenizer/"
                          "vocab.json and text_encoders/byt5_tokenizer/ in the comfy package); name a tokenizer folder")


def _check_vocab(model, tokenizer, model_name: str, tokenizer_dir) -> None:
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        raise CheckpointError(f"{tokenizer_dir}: the tokenizer has {len(tokenizer)} tokens but {model_name} only "
                              f"{size}: they do not belong together")


def _assemble(qwen, qwen_tokenizer, byt5, byt5_tokenizer, names: tuple[str, str, str, str]) -> TextEncoders15:
    _check_vocab(qwen, qwen_tokenizer, names[0], names[1])
    _check_vocab(byt5, byt5_tokenizer, names[2], names[3])
    return TextEncoders15(qwen, qwen_tokenizer, byt5, byt5_tokenizer, video_crop_start(qwen_tokenizer))


# ----------------------------------------------------------------------------- public loaders

def load_text_encoders15_from_files(
    qwen_file: str | Path,
    byt5_file: str | Path,
    qwen_tokenizer_dir: str | Path,
    byt5_tokenizer_dir: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device="cpu",
) -> TextEncoders15:
    """ComfyUI's two files plus tokenizer folders (ComfyUI's own: see `find_comfy_tokenizers`). `dtype` is the
    Qwen compute dtype (an fp8 file stays fp8 under bf16/fp16); byT5 runs in float32."""
    qwen_tokenizer = load_qwen_tokenizer(qwen_tokenizer_dir)
    byt5_tokenizer = load_byt5_tokenizer(byt5_tokenizer_dir)
    qwen = qwen_from_file(qwen_file, dtype, device)
    byt5 = byt5_from_file(byt5_file, device)
    names = (Path(qwen_file).name, qwen_tokenizer_dir, Path(byt5_file).name, byt5_tokenizer_dir or "ByT5Tokenizer()")
    return _assemble(qwen, qwen_tokenizer, byt5, byt5_tokenizer, names)


def _model_type(path: Path) -> str:
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: no readable config.json ({e})") from e


def _from_pretrained(cls, path: Path, dtype, expected: str):
    try:
        model, info = cls.from_pretrained(str(path), local_files_only=True, output_loading_info=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: does not load as {expected} ({e})") from e
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise CheckpointError(f"{path}: lacks {len(missing)} tensors of {expected} (e.g. {missing[0]})")
    return model.eval()


def load_text_encoders15_from_folder(folder: str | Path, dtype: torch.dtype = torch.bfloat16, device="cpu"
                                     ) -> TextEncoders15:
    """`text_encoder/` (Qwen2.5-VL language model, or a whole Qwen2.5-VL), `tokenizer/`, `text_encoder_2/`
    (byT5), `tokenizer_2/` of a diffusers HunyuanVideo 1.5 folder."""
    from transformers import AutoModel, Qwen2_5_VLTextModel, T5EncoderModel

    folder = Path(folder)
    parts = {name: folder / name for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    absent = [name for name, path in parts.items() if not path.is_dir()]
    if absent:
        raise CheckpointError(f"{folder}: has no {', '.join(n + '/' for n in absent)}; expected a diffusers "
                              "HunyuanVideo 1.5 folder (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/)")
    kind, kind_2 = _model_type(parts["text_encoder"]), _model_type(parts["text_encoder_2"])
    if kind == "qwen2_5_vl_text":
        qwen = _from_pretrained(Qwen2_5_VLTextModel, parts["text_encoder"], dtype, "a Qwen2.5-VL language model")
    elif kind == "qwen2_5_vl":
        qwen = _from_pretrained(AutoModel, parts["text_encoder"], dtype, "a Qwen2.5-VL model").language_model
    else:
        raise CheckpointError(f"{parts['text_encoder']}: holds a {kind or 'model of unknown type'}, "
                              f"expected {QWEN_EXPECTED}")
    if kind_2 != "t5":
        raise CheckpointError(f"{parts['text_encoder_2']}: holds a {kind_2 or 'model of unknown type'}, "
                              f"expected {BYT5_EXPECTED}")
    byt5 = _from_pretrained(T5EncoderModel, parts["text_encoder_2"], torch.float32, "a T5 encoder")
    names = ("text_encoder", parts["tokenizer"], "text_encoder_2", parts["tokenizer_2"])
    encoders = _assemble(qwen, load_qwen_tokenizer(parts["tokenizer"]), byt5,
                         load_byt5_tokenizer(parts["tokenizer_2"]), names)
    return encoders.to(device)
