"""Loader nodes: transformer, VAE and text encoders, from ComfyUI's model folders or diffusers folders."""

from __future__ import annotations

from pathlib import Path

from ...pipelines.hunyuan_video_13b.text_encoder_loading import (
    find_comfy_tokenizers,
    load_text_encoders_from_files,
    load_text_encoders_from_folder,
)
from ...pipelines.hunyuan_video_13b.transformer_loading import DTYPES, VARIANTS, WEIGHT_DTYPES, load_transformer
from ...pipelines.hunyuan_video_13b.vae_loading import load_vae
from .. import host
from ..types import TEXT_ENCODERS, TRANSFORMER, VAE

CATEGORY = "HunyuanVideo Suite/loaders"
DTYPE_CHOICES = list(WEIGHT_DTYPES)  # auto, bf16, fp16, fp32, fp8_e4m3fn


def _device_and_dtype_inputs():
    return {
        "weight_dtype": (
            DTYPE_CHOICES,
            {
                "default": "auto",
                "tooltip": "Precision the weights are kept in. auto: as stored; fp8 files stay fp8 (half the memory of "
                "bf16) and compute in bf16 layer by layer. fp8_e4m3fn: store a bf16 file's block weights in fp8 too "
                "(one scale per tensor; small quality cost). bf16/fp16/fp32: expand or cast everything.",
            },
        )
    }


class HYVSTransformerLoader:
    DESCRIPTION = "Loads a HunyuanVideo transformer (T2V, I2V v1/v2 or Custom) from one file or a diffusers folder."
    CATEGORY = CATEGORY
    RETURN_TYPES = (TRANSFORMER,)
    RETURN_NAMES = ("transformer",)
    OUTPUT_TOOLTIPS = ("The HunyuanVideo transformer, kept off the GPU until sampling.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    host.model_choices("diffusion_models", with_diffusers=True),
                    {"tooltip": "A file in models/diffusion_models (authors' layout, bf16/fp16/fp8) or a folder in models/diffusers."},
                ),
                "variant": (
                    ["auto", *VARIANTS],
                    {
                        "default": "auto",
                        "tooltip": "Which HunyuanVideo model this is. auto reads it off the weights; T2V and I2V v2 "
                        "share shapes, so set i2v_v2 for the v2 image-to-video file if its name does not say so.",
                    },
                ),
                **_device_and_dtype_inputs(),
            }
        }

    def load(self, model, variant, weight_dtype):
        path = host.resolve_choice("diffusion_models", model)
        loaded = load_transformer(path, variant=variant, dtype=weight_dtype, device=host.offload_device())
        return (loaded,)


class HYVSVAELoader:
    DESCRIPTION = "Loads the HunyuanVideo 3D VAE (884-16c) from one file (either circulating layout) or a diffusers folder."
    CATEGORY = CATEGORY
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The HunyuanVideo VAE.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (
                    host.model_choices("vae", with_diffusers=True),
                    {"tooltip": "hunyuan_video_vae_bf16.safetensors from models/vae, or a folder in models/diffusers."},
                ),
                "dtype": (
                    list(DTYPES),
                    {"default": "bf16", "tooltip": "Precision for decoding. fp32 is slowest and most exact."},
                ),
            }
        }

    def load(self, vae, dtype):
        path = host.resolve_choice("vae", vae)
        return (load_vae(path, dtype=_torch_dtype(dtype), device=host.offload_device()),)


class HYVSTextEncoderLoader:
    DESCRIPTION = "Loads the Llama-3 (LLaVA) text encoder and CLIP-L from ComfyUI's single files, with their tokenizers."
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT_ENCODERS,)
    RETURN_NAMES = ("text_encoders",)
    OUTPUT_TOOLTIPS = ("Both text encoders and their tokenizers.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = host.model_choices("text_encoders", with_diffusers=False)
        return {
            "required": {
                "llm": (files, {"tooltip": "llava_llama3_fp8_scaled.safetensors (or the bf16 one) from models/text_encoders."}),
                "clip": (files, {"tooltip": "clip_l.safetensors from models/text_encoders."}),
                "dtype": (list(DTYPES), {"default": "bf16", "tooltip": "Precision the encoders run in."}),
                "tokenizer_folder": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Leave empty to use the tokenizer files ComfyUI ships. Otherwise a folder holding "
                        "'llama_tokenizer' and 'clip_tokenizer' sub-folders (or a diffusers folder's tokenizer/ and tokenizer_2/).",
                    },
                ),
            }
        }

    def load(self, llm, clip, dtype, tokenizer_folder=""):
        llm_path = host.resolve_choice("text_encoders", llm)
        clip_path = host.resolve_choice("text_encoders", clip)
        llama_tokenizer, clip_tokenizer = _tokenizer_folders(tokenizer_folder)
        encoders = load_text_encoders_from_files(
            llm_path, clip_path, llama_tokenizer, clip_tokenizer, dtype=_torch_dtype(dtype), device=host.offload_device()
        )
        return (encoders,)


def _tokenizer_folders(folder: str) -> tuple[str, str]:
    folder = (folder or "").strip()
    if folder:
        root = Path(folder)
        for llama, clip in (("llama_tokenizer", "clip_tokenizer"), ("tokenizer", "tokenizer_2")):
            if (root / llama).is_dir() and (root / clip).is_dir():
                return str(root / llama), str(root / clip)
        raise ValueError(
            f"tokenizer_folder {folder!r} must hold 'llama_tokenizer' and 'clip_tokenizer' (or 'tokenizer' and "
            "'tokenizer_2') sub-folders"
        )
    comfy_dir = host.comfy_package_directory()
    if comfy_dir is None:
        raise ValueError("tokenizer_folder is empty and ComfyUI's own tokenizer files are not available here: name a folder")
    llama, clip = find_comfy_tokenizers(comfy_dir)
    return str(llama), str(clip)


class HYVSDiffusersLoader:
    DESCRIPTION = "Loads transformer, VAE and text encoders from one diffusers-format HunyuanVideo folder."
    CATEGORY = CATEGORY
    RETURN_TYPES = (TRANSFORMER, VAE, TEXT_ENCODERS)
    RETURN_NAMES = ("transformer", "vae", "text_encoders")
    OUTPUT_TOOLTIPS = ("The transformer.", "The VAE.", "The text encoders with their tokenizers.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": (
                    host.model_folders("diffusers"),
                    {"tooltip": "A folder in models/diffusers with model_index.json, transformer/, vae/, text_encoder/, ..."},
                ),
                "variant": (["auto", *VARIANTS], {"default": "auto", "tooltip": "Which HunyuanVideo model this is; auto reads the config."}),
                **_device_and_dtype_inputs(),
            }
        }

    def load(self, folder, variant, weight_dtype):
        root = host.resolve_model_path("diffusers", folder)
        if not Path(root).is_dir():
            raise ValueError(f"folder {folder!r} is not a folder in models/diffusers")
        offload = host.offload_device()
        transformer = load_transformer(root, variant=variant, dtype=weight_dtype, device=offload)
        dtype = transformer.dtype
        vae = load_vae(str(Path(root) / "vae"), dtype=dtype, device=offload)
        encoders = load_text_encoders_from_folder(root, dtype=dtype, device=offload)
        return (transformer, vae, encoders)


def _torch_dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


NODE_CLASS_MAPPINGS = {
    "HYVS_TransformerLoader": HYVSTransformerLoader,
    "HYVS_VAELoader": HYVSVAELoader,
    "HYVS_TextEncoderLoader": HYVSTextEncoderLoader,
    "HYVS_DiffusersLoader": HYVSDiffusersLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_TransformerLoader": "HunyuanVideo Suite: Load Transformer",
    "HYVS_VAELoader": "HunyuanVideo Suite: Load VAE",
    "HYVS_TextEncoderLoader": "HunyuanVideo Suite: Load Text Encoders",
    "HYVS_DiffusersLoader": "HunyuanVideo Suite: Load Diffusers Folder",
}
