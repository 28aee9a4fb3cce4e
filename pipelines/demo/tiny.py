"""Tiny random-weight models of the real architectures, and writers for every file layout users have.

Used by the tests (write tiny files in each layout, load them back through the real loaders)
and by the README's demo command (proves an install on a CPU in seconds; not a real video).
Everything is built locally, offline and deterministically for a seed: the tokenizers too,
because diffusers' own tiny tests fetch theirs from the Hub.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from ..hunyuan_video_13b.text_encoder_loading import TextEncoders, clip_constants, llama_constants, token_ids_within
from ..hunyuan_video_13b.vae_loading import diffusers_to_comfy_vae, norm_groups_for, vae_constants
from ..hunyuan_video_13b.vision_loading import LlavaVision, file_key, vision_constants, vision_of_llava
from ..weights.checkpoints import FP8_MARKER, SCALE_SUFFIX

LLAMA_SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>", "<pad>",
)
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# Text the tiny Llama tokenizer learns its merges from, so the prompt templates stay short (with
# bytes only, the T2V template alone would be ~450 tokens). Anything else falls back to bytes.
_CORPUS = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video.2. The color, shape, size, texture, quantity, text, and spatial "
    "relationships of the objects.3. Actions, events, behaviors temporal relationships, physical movement changes "
    "of the objects.4. background environment, light, style and atmosphere.5. camera angles, movements, and "
    "transitions used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background. The person looks like <image>. The object looks like <image>.",
    "A cat walks on the beach at sunset. A dog runs in the city street. A red car, a blue sky, green trees, "
    "water. The camera moves slowly.",
)
TINY_LLAMA_VOCAB = 768
# Llama-3's pre-tokenizer split (as in its tokenizer.json): a run of newlines stays one piece, so
# the template's "\n\n" tokenizes alike with or without the prompt after it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Words the tiny CLIP tokenizer keeps whole; others are spelled out byte by byte.
_WORDS = (
    "describe the video by detailing following aspects main content and theme of color shape size texture "
    "quantity text spatial relationships objects actions events behaviors temporal physical movement changes "
    "background environment light style atmosphere camera angles movements transitions used in system user "
    "assistant image looks like person object a an is on at with cat dog walks runs beach sunset city street "
    "red blue green car sky water tree slowly"
).split()
TINY_LLM = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 512}
TINY_CLIP = {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256}
TINY_VISION = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "image_size": 56, "patch_size": 14}
TINY_VAE_WIDTHS = (8, 8, 8, 8)
COMFY_LLM_FILE, COMFY_LLM_FP8_FILE, COMFY_CLIP_FILE, COMFY_VISION_FILE = (
    "llava_llama3.safetensors", "llava_llama3_fp8_scaled.safetensors", "clip_l.safetensors",
    "llava_llama3_vision.safetensors",
)
FP8_MAX = 448.0  # largest float8_e4m3fn value


# ----------------------------------------------------------------------------- tokenizers

def _merges_for(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that build each word left to right: enough for a CLIP tokenizer that truncates
    at 77 tokens anyway."""
    merges: list[tuple[str, str]] = []
    seen = set()
    for pieces in words:
        current = pieces[0]
        for piece in pieces[1:]:
            pair = (current, piece)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current += piece
    return merges


def _bpe_vocab(alphabet: list[str], merges: list[tuple[str, str]], specials: tuple[str, ...]) -> dict[str, int]:
    vocab = {token: i for i, token in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for token in specials:
        vocab.setdefault(token, len(vocab))
    return vocab


def tiny_llama_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the Llama-3 special tokens, `<|begin_of_text|>` added in
    front like Llama-3's, `<pad>` for padding on the right. Its merges are trained on a few
    built-in sentences (the tokenizers trainer is deterministic: ties break on the pair itself)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_LLAMA_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(LLAMA_SPECIAL_TOKENS), show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer)
    bos = LLAMA_SPECIAL_TOKENS[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|end_of_text|>", pad_token="<pad>", padding_side="right"
    )


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """transformers' own CLIP tokenizer over a small vocabulary (bytes, some whole words), which
    ends with <|startoftext|>, <|endoftext|> as CLIP's does; 77 tokens at most."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    alphabet = alphabet + [c + "</w>" for c in alphabet]
    merges = _merges_for([[*w[:-1], w[-1] + "</w>"] for w in _WORDS])
    vocab = _bpe_vocab(alphabet, merges, (CLIP_BOS, CLIP_EOS))
    # Written as the vocab.json + merges.txt pair that every transformers version reads
    # (transformers 4 takes only files, 5 also takes the objects).
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab))
        Path(folder, "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=clip_constants()["max_length"], local_files_only=True)


# ----------------------------------------------------------------------------- models

def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    c = token_ids_within(llama_constants(), vocab_size)
    return LlamaConfig(vocab_size=vocab_size, **TINY_LLM, **c)


def tiny_clip_config(vocab_size: int) -> CLIPTextConfig:
    c = clip_constants()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        projection_dim=TINY_CLIP["hidden_size"],
        num_attention_heads=TINY_CLIP["hidden_size"] // c["head_dim"],
        max_position_embeddings=c["max_length"],
        hidden_act=c["hidden_act"],
        layer_norm_eps=c["layer_norm_eps"],
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **TINY_CLIP,
    )


def tiny_text_encoders(seed: int = 0, llava: bool = False) -> TextEncoders:
    """Llama-3-architecture LLM (width 256 = 2 heads of 128, 4 layers) and a CLIP text model
    (width 128, 2 layers) with their tiny tokenizers. `llava=True` wraps the LLM in a LLaVA
    whose vision tower (CLIP ViT, 2 layers of one 64-wide head, 56 px in 14 px patches: 16 image
    tokens) reads image prompts, as HunyuanVideo-I2V's text encoder is."""
    llm_tokenizer, clip_tokenizer = tiny_llama_tokenizer(), tiny_clip_tokenizer()
    # fork_rng: seeding here leaves the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm_config = tiny_llama_config(len(llm_tokenizer))
        whole = None
        if llava:
            v = vision_constants()
            vision = CLIPVisionConfig(**TINY_VISION, num_attention_heads=TINY_VISION["hidden_size"] // v["head_dim"],
                                      hidden_act=v["hidden_act"], layer_norm_eps=v["layer_norm_eps"])
            whole = LlavaForConditionalGeneration(LlavaConfig(
                text_config=llm_config, vision_config=vision, image_token_index=llm_tokenizer.convert_tokens_to_ids("<image>"),
                projector_hidden_act=v["projector_hidden_act"], vision_feature_layer=v["feature_layer"],
                pad_token_id=llm_tokenizer.pad_token_id,
            )).eval()
            llm = whole.get_decoder()
        else:
            llm = LlamaModel(llm_config).eval()
        clip = CLIPTextModel(tiny_clip_config(len(clip_tokenizer))).eval()
    return TextEncoders(llm, llm_tokenizer, clip, clip_tokenizer, whole, vision_of_llava(whole) if whole else None)


def tiny_vae(seed: int = 0, latent_channels: int = 16) -> AutoencoderKLHunyuanVideo:
    """The HunyuanVideo VAE at widths (8, 8, 8, 8), one layer per block: still 4x temporal and 8x
    spatial compression, causal 3D convolutions and the mid-block attention."""
    c = vae_constants()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLHunyuanVideo(
            latent_channels=latent_channels,
            block_out_channels=TINY_VAE_WIDTHS,
            down_block_types=(c["down_block_type"],) * len(TINY_VAE_WIDTHS),
            up_block_types=(c["up_block_type"],) * len(TINY_VAE_WIDTHS),
            layers_per_block=1,
            norm_num_groups=norm_groups_for(list(TINY_VAE_WIDTHS), c["norm_num_groups"]),
            act_fn=c["act_fn"],
            scaling_factor=c["scaling_factor"],
            spatial_compression_ratio=c["spatial_compression_ratio"],
            temporal_compression_ratio=c["temporal_compression_ratio"],
        )
    return vae.eval()


# ----------------------------------------------------------------------------- writers

def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_vae(vae: AutoencoderKLHunyuanVideo, path: str | Path, layout: str = "diffusers") -> Path:
    """`diffusers`: a folder (`path` is the `vae/` folder); `authors`: one .safetensors in the
    authors' (= diffusers) names; `comfy`: one .safetensors in ComfyUI's VAE names."""
    path = Path(path)
    if layout == "diffusers":
        vae.save_pretrained(path, safe_serialization=True)
        return path
    if layout not in ("authors", "comfy"):
        raise ValueError(f"layout must be 'diffusers', 'authors' or 'comfy', got {layout!r}")
    state = _plain_state(vae)
    if layout == "comfy":
        state = diffusers_to_comfy_vae(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _is_text_encoder_linear(key: str, value: torch.Tensor) -> bool:
    return key.endswith("_proj.weight") and value.dim() == 2


def to_scaled_fp8(state: dict[str, torch.Tensor], quantize=_is_text_encoder_linear) -> dict[str, torch.Tensor]:
    """ComfyUI's `scaled_fp8` convention: every weight `quantize(key, value)` picks (by default the
    text encoders' linear weights) stored as float8_e4m3fn divided by a per-tensor `.scale_weight`;
    embeddings and norms stay as they are; a `scaled_fp8` marker key."""
    out = {}
    for key, value in state.items():
        if quantize(key, value):
            scale = value.float().abs().max().clamp(min=1e-12) / FP8_MAX
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len(".weight")] + SCALE_SUFFIX] = scale.reshape(())
        else:
            out[key] = value
    out[FP8_MARKER] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def _save_comfy_tokenizers(te: TextEncoders, folder: Path) -> tuple[Path, Path]:
    """Tokenizer folders shaped like the ones ComfyUI ships: Llama's `tokenizer.json` with a
    config naming `LlamaTokenizer`; CLIP's `vocab.json` + `merges.txt` with model_max_length 8192."""
    llama_dir, clip_dir = folder / "llama_tokenizer", folder / "clip_tokenizer"
    te.llm_tokenizer.save_pretrained(str(llama_dir))
    config_path = llama_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(tokenizer_class="LlamaTokenizer", add_bos_token=True, legacy=True)
    config_path.write_text(json.dumps(config, indent=2))

    clip_dir.mkdir(parents=True, exist_ok=True)
    te.clip_tokenizer.backend_tokenizer.model.save(str(clip_dir))
    (clip_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 8192, "do_lower_case": True,
        "bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "pad_token": CLIP_EOS, "unk_token": CLIP_EOS,
    }, indent=2))
    return llama_dir, clip_dir


def save_vision(vision: LlavaVision, path: str | Path) -> Path:
    """The vision tower and projector as ComfyUI's `clip_vision/llava_llama3_vision.safetensors` holds them."""
    path = Path(path)
    state = {file_key(k): v for k, v in _plain_state(vision).items() if not k.endswith("position_ids")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_text_encoders(te: TextEncoders, folder: str | Path, layout: str = "diffusers", fp8: bool = False) -> dict[str, Path]:
    """Write both encoders and tokenizers into `folder`, as users have them.

    `diffusers`: `text_encoder/` (the LLaVA when there is one), `tokenizer/`, `text_encoder_2/`,
    `tokenizer_2/`. `comfy`: `llava_llama3[_fp8_scaled].safetensors` (keys `model.*`, fp8 with
    per-tensor scales when `fp8`), `clip_l.safetensors`, `llava_llama3_vision.safetensors` when
    there is a vision tower, and `llama_tokenizer/` + `clip_tokenizer/` shaped like ComfyUI's own.
    Returns the paths by role: folder, llm, clip, llm_tokenizer, clip_tokenizer (and vision).
    """
    folder = Path(folder)
    if layout == "diffusers":
        (te.llava or te.llm).save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
        te.llm_tokenizer.save_pretrained(str(folder / "tokenizer"))
        te.clip.save_pretrained(str(folder / "text_encoder_2"), safe_serialization=True)
        te.clip_tokenizer.save_pretrained(str(folder / "tokenizer_2"))
        return {"folder": folder, "llm": folder / "text_encoder", "clip": folder / "text_encoder_2",
                "llm_tokenizer": folder / "tokenizer", "clip_tokenizer": folder / "tokenizer_2"}
    if layout != "comfy":
        raise ValueError(f"layout must be 'diffusers' or 'comfy', got {layout!r}")
    folder.mkdir(parents=True, exist_ok=True)
    llm_state = {f"model.{k}": v for k, v in _plain_state(te.llm).items()}
    if fp8:
        llm_state = to_scaled_fp8(llm_state)
    llm_path = folder / (COMFY_LLM_FP8_FILE if fp8 else COMFY_LLM_FILE)
    save_file(llm_state, str(llm_path))
    clip_state = _plain_state(te.clip)
    clip_state = {k.removeprefix("text_model."): v for k, v in clip_state.items() if not k.endswith("position_ids")}
    width = clip_state["final_layer_norm.weight"].shape[0]
    clip_state["text_projection.weight"] = torch.eye(width)  # present in ComfyUI's file, unused by the text path
    clip_path = folder / COMFY_CLIP_FILE
    save_file(clip_state, str(clip_path))
    llama_dir, clip_dir = _save_comfy_tokenizers(te, folder)
    paths = {"folder": folder, "llm": llm_path, "clip": clip_path, "llm_tokenizer": llama_dir, "clip_tokenizer": clip_dir}
    if te.vision is not None:
        paths["vision"] = save_vision(te.vision, folder / COMFY_VISION_FILE)
    return paths
