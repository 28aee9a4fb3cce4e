"""HunyuanVideo 1.5 text nodes: the Qwen2.5-VL + byT5 loader and the prompt encoder (positive and negative)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...pipelines.hunyuan_video_15.prompt_encoding import SYSTEM_PROMPT, encode_prompt
from ...pipelines.hunyuan_video_15.text_encoder_loading import (
    COMFY_TOKENIZER_FOLDERS,
    find_comfy_tokenizers,
    load_text_encoders15_from_files,
    load_text_encoders15_from_folder,
)
from ...pipelines.prompt_cache import PROMPTS
from .. import host
from ..types import HV15_EMBEDS, HV15_TEXT_ENCODERS

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
SHIPPED, FROM_FOLDER = "comfyui (shipped)", "folder"


def tokenizer_folders(choice: str, folder: str = "") -> tuple[str, str | None]:
    """(Qwen tokenizer folder, ByT5 tokenizer folder or None for transformers' own) for the loader's choice.

    A named folder holds `qwen25_tokenizer/` (+ `byt5_tokenizer/`) as ComfyUI ships them, or a diffusers
    `tokenizer/` (+ `tokenizer_2/`), or is itself the Qwen tokenizer folder."""
    if choice == SHIPPED:
        comfy_dir = host.comfy_package_directory()
        if comfy_dir is None:
            raise ValueError("ComfyUI's own tokenizer files are not available here: choose 'folder' and name one")
        qwen, byt5 = find_comfy_tokenizers(comfy_dir)
        return str(qwen), str(byt5)
    if choice != FROM_FOLDER:
        raise ValueError(f"tokenizers must be {SHIPPED!r} or {FROM_FOLDER!r}, got {choice!r}")
    root = Path((folder or "").strip())
    if not str(root) or str(root) == "." or not root.is_dir():
        raise ValueError(f"tokenizer_folder {folder!r} is not a folder: name the folder holding the tokenizers")
    for qwen, byt5 in (COMFY_TOKENIZER_FOLDERS, ("tokenizer", "tokenizer_2")):
        if (root / qwen).is_dir():
            return str(root / qwen), str(root / byt5) if (root / byt5).is_dir() else None
    return str(root), None


class HYVSHV15TextEncoderLoader:
    DESCRIPTION = ("Loads HunyuanVideo 1.5's text encoders: the Qwen2.5-VL-7B language model (fp8 files stay fp8) and "
                   "the byT5 glyph encoder for quoted text, from ComfyUI's files or a diffusers folder, with their "
                   "tokenizers read from local files only.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_TEXT_ENCODERS,)
    RETURN_NAMES = ("text_encoders",)
    OUTPUT_TOOLTIPS = ("Qwen2.5-VL and byT5 with their tokenizers, kept off the GPU until a prompt is encoded.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (host.model_choices("text_encoders", with_diffusers=True), {
                    "tooltip": "qwen_2.5_vl_7b_fp8_scaled.safetensors (or qwen_2.5_vl_7b.safetensors) from "
                    "models/text_encoders, or a HunyuanVideo 1.5 folder in models/diffusers (its text_encoder/, "
                    "text_encoder_2/ and tokenizers are used, and the two inputs below are ignored)."}),
                "byt5": (host.model_files("text_encoders"), {
                    "tooltip": "byt5_small_glyphxl_fp16.safetensors from models/text_encoders: reads the text in "
                    "quotes of the prompt (signs, titles). It runs in float32, as the authors'."}),
                "tokenizers": ([SHIPPED, FROM_FOLDER], {
                    "default": SHIPPED, "tooltip": "comfyui (shipped): the Qwen2.5 and ByT5 tokenizer files ComfyUI "
                    "itself ships in comfy/text_encoders. folder: the folder named below. Nothing is downloaded."}),
                "dtype": (list(DTYPES), {
                    "default": "fp16", "tooltip": "Precision Qwen2.5-VL computes in (the authors use fp16). An fp8 "
                    "file stays fp8 under fp16/bf16; fp32 expands it."}),
            },
            "optional": {
                "tokenizer_folder": ("STRING", {
                    "default": "", "tooltip": "Used when tokenizers is 'folder': a folder holding qwen25_tokenizer/ "
                    "(and byt5_tokenizer/), or a diffusers folder's tokenizer/ (and tokenizer_2/), or the Qwen "
                    "tokenizer files themselves."}),
            },
        }

    def load(self, text_encoder, byt5, tokenizers, dtype, tokenizer_folder=""):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        path = host.resolve_choice("text_encoders", text_encoder)
        if Path(path).is_dir():
            return (load_text_encoders15_from_folder(path, DTYPES[dtype], host.offload_device()),)
        qwen_tokenizer, byt5_tokenizer = tokenizer_folders(tokenizers, tokenizer_folder)
        return (load_text_encoders15_from_files(path, host.resolve_choice("text_encoders", byt5), qwen_tokenizer,
                                                byt5_tokenizer, DTYPES[dtype], host.offload_device()),)


class HYVSHV15TextEncode:
    DESCRIPTION = ("Encodes a prompt and a negative prompt for HunyuanVideo 1.5 exactly as the authors: the video "
                   "system prompt, Qwen2.5-VL's third-to-last layer over up to 1000 prompt tokens, and byT5 over the "
                   "text in quotes (\"...\" or “...”) of the prompt. The negative gets no glyph text, as theirs.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_EMBEDS, HV15_EMBEDS)
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The encoded prompt, for a HunyuanVideo 1.5 sampler's positive input.",
                       "The encoded negative prompt, for the sampler's negative input (used when cfg is above 1).")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoders": (HV15_TEXT_ENCODERS, {"tooltip": "From the HV1.5 text encoder loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows (T2V and I2V "
                           "alike). Text to appear in the video goes in quotes, e.g. a sign that reads \"OPEN\"."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to steer away from; "
                                    "the authors' default is empty. Quotes here are not read as glyph text."}),
            }
        }

    def encode(self, text_encoders, prompt, negative_prompt=""):
        def branch(text: str, glyphs: bool):
            def run():
                with host.hv15_text_encoders_on_compute_device(text_encoders) as device:
                    return encode_prompt(text_encoders, text, glyphs=glyphs, device=device).to("cpu")

            return PROMPTS.get_or_encode(text_encoders, ("hv15", SYSTEM_PROMPT, glyphs, text), run)

        return (branch(prompt, True), branch(negative_prompt, False))


NODE_CLASS_MAPPINGS = {
    "HYVS_HV15TextEncoderLoader": HYVSHV15TextEncoderLoader,
    "HYVS_HV15TextEncode": HYVSHV15TextEncode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_HV15TextEncoderLoader": "HunyuanVideo Suite: HV1.5 Text Encoder Loader",
    "HYVS_HV15TextEncode": "HunyuanVideo Suite: HV1.5 Text Encode",
}
