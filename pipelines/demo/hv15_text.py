"""Tiny random-weight HunyuanVideo 1.5 text and image encoders, their tokenizers, and writers of every layout
users keep them in (ComfyUI's single files, fp8-scaled included, and a diffusers folder), for the tests.

Everything is built locally, offline and deterministically for a seed. The Qwen tokenizer is a real
`Qwen2Tokenizer` (byte-level BPE with Qwen2's split, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` and a
chat template of Qwen's format) over merges learnt from the video system prompt, so the template stays short;
it is written as the three files ComfyUI ships (vocab.json, merges.txt, tokenizer_config.json). transformers'
ByT5Tokenizer needs no files at all; a few Glyph-style colour/font tokens are added as the authors add theirs.
The models keep the real head widths (Qwen 128, byT5 64, SigLIP 72), which the loaders' config rules assume.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    T5Config,
    T5EncoderModel,
)

from ..hunyuan_video_15.prompt_encoding import SYSTEM_PROMPT, video_crop_start
from ..hunyuan_video_15.text_encoder_loading import (
    BYT5_CONSTANTS,
    BYT5_D_KV,
    QWEN_CONSTANTS,
    QWEN_HEAD_DIM,
    TextEncoders15,
)
from ..hunyuan_video_15.vision_loading import CONSTANTS as SIGLIP_CONSTANTS
from ..hunyuan_video_15.vision_loading import HEAD_DIM as SIGLIP_HEAD_DIM
from ..hunyuan_video_15.vision_loading import PREFIX as SIGLIP_PREFIX
from .tiny import to_scaled_fp8

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2's pre-tokenizer split (single digits, unlike Llama-3's runs of three).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
# Qwen's chat format for system/user/assistant messages, as its template renders them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_CORPUS = (SYSTEM_PROMPT, "system\nuser\nassistant\n",
           'A cat walks on the beach at sunset. A neon sign that reads "OPEN" in a rainy city street.')
TINY_QWEN_VOCAB = 400
GLYPH_TOKENS = ("<color-0>", "<color-1>", "<en-font-0>", "<en-font-1>")
TINY_QWEN = {"hidden_size": QWEN_HEAD_DIM, "num_hidden_layers": 3, "num_attention_heads": 1, "num_key_value_heads": 1,
             "intermediate_size": 128}
TINY_BYT5 = {"d_model": 64, "num_heads": 1, "d_ff": 128, "num_layers": 2, "relative_attention_num_buckets": 32}
TINY_SIGLIP = {"hidden_size": 2 * SIGLIP_HEAD_DIM, "num_hidden_layers": 2, "intermediate_size": 96, "image_size": 48,
               "patch_size": 14}
COMFY_QWEN_FILE, COMFY_QWEN_FP8_FILE, COMFY_BYT5_FILE = (
    "qwen_2.5_vl_7b.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors", "byt5_small_glyphxl_fp16.safetensors")


# ----------------------------------------------------------------------------- tokenizers

def write_qwen_tokenizer_files(folder: str | Path) -> Path:
    """vocab.json, merges.txt and tokenizer_config.json (with the chat template) of the tiny Qwen tokenizer, as
    ComfyUI's `qwen25_tokenizer/` holds them; the special tokens follow the learnt vocabulary."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=TINY_QWEN_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(_CORPUS, trainer)
    model = json.loads(backend.to_str())["model"]
    vocab, merges = model["vocab"], model["merges"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "add_prefix_space": False, "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
        "clean_up_tokenization_spaces": False, "split_special_tokens": False, "model_max_length": 32768,
        "additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:]), "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(len(vocab) + i): {"content": token, **special}
                                 for i, token in enumerate(QWEN_SPECIAL_TOKENS)},
    }, indent=2))
    return folder


def tiny_qwen_tokenizer():
    with tempfile.TemporaryDirectory() as folder:
        return AutoTokenizer.from_pretrained(str(write_qwen_tokenizer_files(folder)), local_files_only=True,
                                             padding_side="right")


def tiny_byt5_tokenizer(glyph_tokens: bool = True) -> ByT5Tokenizer:
    """transformers' ByT5Tokenizer (bytes + 3 + 125 sentinels = 384), plus a few colour/font tokens."""
    tokenizer = ByT5Tokenizer()
    if glyph_tokens:
        tokenizer.add_tokens(list(GLYPH_TOKENS), special_tokens=True)
    return tokenizer


# ----------------------------------------------------------------------------- models

def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream as it was
        torch.manual_seed(seed)
        return build().eval()


def tiny_qwen(vocab_size: int, seed: int = 0) -> Qwen2_5_VLTextModel:
    config = Qwen2_5_VLTextConfig(vocab_size=vocab_size, bos_token_id=None, eos_token_id=None, **TINY_QWEN,
                                  **QWEN_CONSTANTS)
    return _seeded(seed, lambda: Qwen2_5_VLTextModel(config))


def tiny_byt5(vocab_size: int, seed: int = 0) -> T5EncoderModel:
    config = T5Config(vocab_size=vocab_size, d_kv=BYT5_D_KV, **TINY_BYT5, **BYT5_CONSTANTS)
    return _seeded(seed, lambda: T5EncoderModel(config))


def tiny_siglip(seed: int = 0) -> SiglipVisionModel:
    """SigLIP with 2 heads of 72, 48 px in 14 px patches (as 384 px in 14: the last pixels unused): 9 image
    tokens; without the pooling head, which the image tokens do not use."""
    config = SiglipVisionConfig(num_attention_heads=2, vision_use_head=False, **TINY_SIGLIP, **SIGLIP_CONSTANTS)
    return _seeded(seed, lambda: SiglipVisionModel(config))


def tiny_text_encoders15(seed: int = 0) -> TextEncoders15:
    """A tiny Qwen2.5-VL language model (one head of 128, 3 layers) and byT5 encoder (width 64, 2 blocks), fp32."""
    qwen_tokenizer, byt5_tokenizer = tiny_qwen_tokenizer(), tiny_byt5_tokenizer()
    qwen = tiny_qwen(len(qwen_tokenizer), seed)
    byt5 = tiny_byt5(len(byt5_tokenizer), seed + 1)
    return TextEncoders15(qwen, qwen_tokenizer, byt5, byt5_tokenizer, video_crop_start(qwen_tokenizer))


# ----------------------------------------------------------------------------- writers

def _state(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        out[key] = (value.to(dtype) if dtype is not None and value.is_floating_point() else value).contiguous()
    return out


def comfy_qwen_state(qwen: Qwen2_5_VLTextModel, dtype: torch.dtype = torch.bfloat16, fp8: bool = False) -> dict:
    """Qwen in ComfyUI's file layout: `model.` names, a small stand-in vision tower `visual.*` and an `lm_head`
    (both in ComfyUI's files, unused by the text path), fp8 linears with per-tensor scales when `fp8`."""
    state = {f"model.{k}": v for k, v in _state(qwen, dtype).items() if not k.startswith("rotary_emb.")}
    hidden = qwen.config.hidden_size
    state["visual.blocks.0.attn.qkv.weight"] = torch.zeros(3 * 16, 16, dtype=dtype)
    state["visual.merger.mlp.2.weight"] = torch.zeros(hidden, 16, dtype=dtype)
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    return to_scaled_fp8(state) if fp8 else state


def save_text_encoders15(te: TextEncoders15, folder: str | Path, layout: str = "comfy",
                         dtype: torch.dtype = torch.bfloat16, fp8: bool = False) -> dict[str, Path]:
    """`comfy`: `qwen_2.5_vl_7b[_fp8_scaled].safetensors` in `dtype` (fp8 linears when `fp8`),
    `byt5_small_glyphxl_fp16.safetensors` (fp16, ComfyUI's names) and tokenizer folders shaped like ComfyUI's
    (`qwen25_tokenizer/`, `byt5_tokenizer/`: the plain ByT5 tokenizer, as ComfyUI ships it). `diffusers`:
    `text_encoder/`, `tokenizer/`, `text_encoder_2/`, `tokenizer_2/` in fp32. Returns the paths by role."""
    folder = Path(folder)
    if layout == "diffusers":
        te.qwen.save_pretrained(str(folder / "text_encoder"))
        te.qwen_tokenizer.save_pretrained(str(folder / "tokenizer"))
        te.byt5.save_pretrained(str(folder / "text_encoder_2"))
        te.byt5_tokenizer.save_pretrained(str(folder / "tokenizer_2"))
        return {"folder": folder}
    if layout != "comfy":
        raise ValueError(f"layout must be 'comfy' or 'diffusers', got {layout!r}")
    folder.mkdir(parents=True, exist_ok=True)
    qwen_path = folder / (COMFY_QWEN_FP8_FILE if fp8 else COMFY_QWEN_FILE)
    save_file(comfy_qwen_state(te.qwen, dtype, fp8), str(qwen_path))
    byt5_state = {k: v for k, v in _state(te.byt5, torch.float16).items() if k != "encoder.embed_tokens.weight"}
    byt5_path = folder / COMFY_BYT5_FILE
    save_file(byt5_state, str(byt5_path))
    qwen_tokenizer = write_qwen_tokenizer_files(folder / "qwen25_tokenizer")
    byt5_tokenizer = folder / "byt5_tokenizer"
    tiny_byt5_tokenizer(glyph_tokens=False).save_pretrained(str(byt5_tokenizer))
    return {"folder": folder, "qwen": qwen_path, "byt5": byt5_path, "qwen_tokenizer": qwen_tokenizer,
            "byt5_tokenizer": byt5_tokenizer}


def save_siglip(vision: SiglipVisionModel, path: str | Path, layout: str = "comfy") -> Path:
    """`comfy`: one fp16 .safetensors with `vision_model.` names (ComfyUI's clip_vision file); `diffusers`:
    `save_pretrained` into the folder `path` (a pipeline's `image_encoder/`)."""
    path = Path(path)
    if layout == "diffusers":
        vision.save_pretrained(str(path))
        return path
    if layout != "comfy":
        raise ValueError(f"layout must be 'comfy' or 'diffusers', got {layout!r}")
    state = {k if k.startswith(SIGLIP_PREFIX) else SIGLIP_PREFIX + k: v
             for k, v in _state(vision, torch.float16).items() if not k.endswith("position_ids")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
