"""The render command's model families, and the checks of a HunyuanVideo 1.5 render, before any weight loads.

The family is the transformer's, read from its safetensors header or config.json (`model_family`): a 1.5
transformer holds `cond_type_embedding` and `byt5_in` (diffusers' names: `cond_type_embed`). The options of the
other family are refused (`check_family`); for 1.5 the inputs choose the job (--image: image-to-video, else
text-to-video), which must be the variant's (read from the header, names and config.json as the 1.5 loader reads
them), and every file must hold its 1.5 component (`check_hv15`). Only the standard library is imported at the
top, as in `options`; each problem is an OptionError: one line naming the option, exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from .hv15_sr_options import SR_OPTIONS, SR_REASON, check_sr
from .job_options import JOB_INPUTS, OptionError, flags, read_config, read_picture

# = hunyuan_video_15.variants.BASE_VARIANTS (a test keeps them equal)
HV15_VARIANT_CHOICES = (
    "480p_t2v", "480p_i2v", "480p_t2v_distilled", "480p_i2v_distilled", "480p_i2v_step_distilled",
    "720p_t2v", "720p_i2v", "720p_t2v_distilled", "720p_i2v_distilled", "720p_i2v_distilled_sparse",
)
DEFAULT_ASPECT_RATIO = "16:9"
HV15_NEEDED = ("vae", "llm", "byt5", "tokenizers")
HV15_CLASS = "HunyuanVideo15Transformer3DModel"
# The 13B options 1.5 has no use for, and why.
HV13_ONLY = {
    "clip": "it reads the prompt's quoted text with --byt5 FILE, not CLIP",
    "guidance": "it has no guidance embedding; --cfg is its guidance (the variant's by default)",
    "riflex": "it runs plain RoPE",
    "resolution": "its size bucket follows the model (480p or 720p): --aspect-ratio or --width and --height size "
                  "a text-to-video clip, an image-to-video clip takes the bucket nearest the picture",
    "mode": "its image-to-video takes the variant's shift (--shift changes it)",
    "image_interleave": "it reads the picture with SigLIP, every token",
    "reference": "HunyuanCustom is a 13B model",
    "subject": "HunyuanCustom is a 13B model",
    "ip_cfg_scale": "HunyuanCustom is a 13B model",
    "step_cache": "HunyuanCustom is a 13B model",
}
HV15_ONLY = {"byt5": "the 13B models read text with --llm and --clip",
             "aspect_ratio": "--width and --height size a 13B clip", **dict.fromkeys(SR_OPTIONS, SR_REASON)}
EXPECTED = {
    "vae": "the HunyuanVideo 1.5 VAE (e.g. hunyuanvideo15_vae_fp16.safetensors), or a diffusers vae folder",
    "llm": "the Qwen2.5-VL-7B text encoder (e.g. qwen_2.5_vl_7b_fp8_scaled.safetensors)",
    "byt5": "the byT5 glyph encoder (e.g. byt5_small_glyphxl_fp16.safetensors)",
    "vision": "the SigLIP vision encoder (e.g. sigclip_vision_patch14_384.safetensors), or a diffusers image_encoder "
              "folder",
}
TOKENIZERS = ("a folder holding qwen25_tokenizer/ (and byt5_tokenizer/) as ComfyUI's comfy/text_encoders/ does, "
              "a diffusers tokenizer/ (and tokenizer_2/), or the Qwen2.5 tokenizer itself")
# A diffusers 1.5 folder's parts, as its config.json names them.
FOLDER_PARTS = {"text_encoder": ("model_type", ("qwen2_5_vl_text", "qwen2_5_vl"), "a Qwen2.5-VL text encoder"),
                "text_encoder_2": ("model_type", ("t5",), "the byT5 glyph encoder"),
                "vae": ("_class_name", ("AutoencoderKLHunyuanVideo15",), "the HunyuanVideo 1.5 VAE")}


def _name(args) -> str:
    return Path(args.diffusers or args.transformer).name


# ----------------------------------------------------------------------------- the family

def header_family(path: Path) -> str | None:
    """"hv15" or "13b" for a transformer file or folder whose header or config.json can be read; None otherwise
    (missing, unreadable, a pickle): its own check says why."""
    from ..weights.checkpoints import CheckpointError, read_safetensors_header

    if path.is_dir():
        sub = path / "transformer" if (path / "transformer").is_dir() else path
        config = read_config(sub)
        if config.get("_class_name") == HV15_CLASS or "ideal_task" in config:  # diffusers', the authors' 1.5 config
            return "hv15"
        files = sorted(sub.glob("*.safetensors"))
        if not files:
            return "13b" if config else None
        path = files[0]
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        keys = read_safetensors_header(path)
    except CheckpointError:
        return None

    def has(name: str) -> bool:
        return any(key == name or key.endswith("." + name) for key in keys)

    authors = has("cond_type_embedding.weight") and has("byt5_in.fc1.weight")  # and ComfyUI's
    return "hv15" if authors or has("cond_type_embed.weight") else "13b"


def model_family(args) -> str:
    """The transformer's family; when it cannot be read (its own check then says why), the one the options ask
    for. No model: the tiny demo, a 13B model."""
    path = args.diffusers or args.transformer
    found = header_family(Path(path)) if path else None
    if found:
        return found
    asks = args.byt5 or args.aspect_ratio or args.sr_model or args.variant in HV15_VARIANT_CHOICES
    return "hv15" if path and asks else "13b"


def check_family(args, family: str) -> None:
    """The other family's options are refused."""
    given = [name for name in (HV13_ONLY if family == "hv15" else HV15_ONLY) if getattr(args, name) is not None]
    path = args.diffusers or args.transformer
    if family == "hv15":
        if given:
            raise OptionError(f"{flags(given[:1])} is for the HunyuanVideo 13B models, but {_name(args)} is "
                              f"HunyuanVideo 1.5: {HV13_ONLY[given[0]]}")
        if args.variant not in (None, "auto", *HV15_VARIANT_CHOICES):
            raise OptionError(f"--variant {args.variant} is a HunyuanVideo 13B variant, but {_name(args)} is "
                              f"HunyuanVideo 1.5: give one of {', '.join(HV15_VARIANT_CHOICES)}")
        return
    what = f"{_name(args)} is a HunyuanVideo 13B transformer" if path else "with no model the tiny demo is the 13B model"
    if given:
        raise OptionError(f"{flags(given[:1])} is for HunyuanVideo 1.5, but {what} ({HV15_ONLY[given[0]]})")
    if args.variant in HV15_VARIANT_CHOICES:
        raise OptionError(f"--variant {args.variant} is a HunyuanVideo 1.5 variant, but {what} (its variants: t2v, "
                          "i2v_v1, i2v_v2, custom)")


# ----------------------------------------------------------------------------- a 1.5 render

def check_hv15(args) -> None:
    """Everything about a 1.5 render that needs no weight: sets `args.job` ("t2v" or "i2v"), `args.picture`,
    `args.model_variant` (the 1.5 variant's name), `args.sr_variant` (the SR DiT's, or None) and
    `args.hv15_tokenizers` (Qwen folder, byT5 folder or None)."""
    args.job = _choose_job(args)
    args.picture = read_picture("image", Path(args.image)) if args.job == "i2v" else None
    if args.transformer and not Path(args.transformer).exists():
        raise OptionError(f"--transformer: {args.transformer} does not exist")
    if args.diffusers:
        _check_folder_parts(Path(args.diffusers))
    args.model_variant = _read_variant(args)
    _check_job_variant(args, args.model_variant)
    for option in EXPECTED:
        if getattr(args, option):
            _check_file(option, Path(getattr(args, option)))
    args.hv15_tokenizers = _tokenizer_folders(Path(args.tokenizers)) if args.tokenizers else None
    _check_vision(args)
    from ..hunyuan_video_15.variants import Variant

    check_sr(args, Variant(args.model_variant))


def _choose_job(args) -> str:
    job = "i2v" if args.image else "t2v"
    if job == "t2v" and args.vision:
        raise OptionError("--vision reads the picture of --image: give --image PATH (the first frame), or leave "
                          "--vision out")
    if job == "i2v":
        sized = [name for name in ("width", "height", "aspect_ratio") if getattr(args, name) is not None]
        if sized:
            raise OptionError(f"{flags(sized[:1])}: HunyuanVideo 1.5 image-to-video renders at the bucket nearest "
                              "the picture's shape, at the model's resolution: leave --width, --height and "
                              "--aspect-ratio out")
    elif (args.width is None) != (args.height is None):
        raise OptionError("--width and --height go together for HunyuanVideo 1.5: both set the size, neither takes "
                          f"the --aspect-ratio bucket ({DEFAULT_ASPECT_RATIO} by default)")
    elif args.width is not None and args.aspect_ratio:
        raise OptionError("--aspect-ratio picks a size bucket, --width and --height set the size: give one or the "
                          "other")
    return job


def _check_folder_parts(folder: Path) -> None:
    for part, (field, allowed, what) in FOLDER_PARTS.items():
        found = read_config(folder / part).get(field)
        if found not in allowed:
            raise OptionError(f"--diffusers: the {part}/ of {folder.name} holds {found or 'no readable config.json'}, "
                              f"not {what}: the transformer is HunyuanVideo 1.5, so is every part")


def _check_file(option: str, path: Path) -> None:
    from ..weights.checkpoints import PICKLE_SUFFIXES, CheckpointError, read_safetensors_header

    if not path.exists():
        raise OptionError(f"--{option}: {path} does not exist")
    if path.is_dir():
        return _check_folder(option, path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return  # no header to read; checked as it loads
    if suffix != ".safetensors":
        raise OptionError(f"--{option}: {path.name} is not a .safetensors file; expected {EXPECTED[option]}")
    try:
        header = read_safetensors_header(path)
        problem = _problem(option, header, path.name)
    except CheckpointError as e:
        raise OptionError(f"--{option}: {e}") from None
    if problem:
        raise OptionError(f"--{option}: {path.name} holds {problem}; expected {EXPECTED[option]}")


def _check_folder(option: str, path: Path) -> None:
    """A diffusers VAE or image encoder folder (or the pipeline folder holding it)."""
    sub, field, allowed = {"vae": ("vae", "_class_name", "AutoencoderKLHunyuanVideo15"),
                           "vision": ("image_encoder", "model_type", "siglip_vision_model")}.get(option, (None,) * 3)
    if sub is None:
        raise OptionError(f"--{option}: {path} is a folder; expected {EXPECTED[option]}")
    config = read_config(path) or read_config(path / sub)
    if config.get(field) != allowed:
        held = f"holds a {config.get(field) or 'model of unknown kind'}" if config else "is a folder without a config.json"
        raise OptionError(f"--{option}: {path.name} {held}; expected {EXPECTED[option]}")


def _problem(option: str, header: dict, name: str) -> str | None:
    """What a 1.5 component file holds instead, from its header; None when it is the right one. The VAE is checked
    as its loader checks it (a CheckpointError saying what it holds)."""
    from ..hunyuan_video_15.text_encoder_loading import BYT5_MAX_VOCAB
    from ..hunyuan_video_15.vae_loading import derive_vae_config
    from ..weights.checkpoint_kinds import guess_checkpoint_kind

    if option == "vae":
        derive_vae_config({k: tuple(v["shape"]) for k, v in header.items()}, name)
        return None
    kind = guess_checkpoint_kind(header)
    if option == "llm":
        return None if kind == "a Qwen2.5 language model" else kind
    if option == "byt5":
        vocab = max((v["shape"][0] for k, v in header.items() if k.endswith(("shared.weight", "embed_tokens.weight"))),
                    default=0)
        if kind == "a T5 text encoder" and vocab > BYT5_MAX_VOCAB:
            return f"a T5 text encoder with a {vocab}-token vocabulary (byT5's is bytes)"
        return None if kind == "a T5 text encoder" else kind
    bare = {k.removeprefix("vision_model.") for k in header}
    if {"embeddings.class_embedding", "pre_layrnorm.weight"} & bare or any("multi_modal_projector." in k for k in bare):
        return "a CLIP vision tower (e.g. LLaVA's llava_llama3_vision, the 13B models'), not SigLIP"
    siglip = {"embeddings.patch_embedding.weight", "post_layernorm.weight"} <= bare
    return None if siglip else kind


def _tokenizer_folders(folder: Path) -> tuple[str, str | None]:
    if folder.is_dir():
        for base in (folder, folder / "text_encoders", folder / "comfy" / "text_encoders"):
            for qwen, byt5 in (("qwen25_tokenizer", "byt5_tokenizer"), ("tokenizer", "tokenizer_2")):
                if (base / qwen).is_dir():
                    return str(base / qwen), str(base / byt5) if (base / byt5).is_dir() else None
        if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file():
            return str(folder), None
    raise OptionError(f"--tokenizers: {folder} must be {TOKENIZERS}")


def _check_vision(args) -> None:
    if args.job == "t2v":
        return
    if args.diffusers:
        if not (Path(args.diffusers) / "image_encoder" / "config.json").is_file():
            raise OptionError(f"--image: {_name(args)} has no image_encoder/ (the SigLIP that reads the picture), as "
                              "a HunyuanVideo 1.5 image-to-video diffusers folder has")
    elif not args.vision:
        raise OptionError("--image needs --vision FILE too: the SigLIP vision encoder (e.g. "
                          "sigclip_vision_patch14_384.safetensors) that reads the picture for HunyuanVideo 1.5")


def _read_variant(args) -> str:
    """The variant as the 1.5 loader will read it, from the header, the names and config.json."""
    from ..hunyuan_video_15.transformer_loading import read_variant
    from ..weights.checkpoints import CheckpointError

    option, path = ("--diffusers", args.diffusers) if args.diffusers else ("--transformer", args.transformer)
    name = Path(path).name
    try:
        return read_variant(path, args.variant or "auto").name
    except (CheckpointError, ValueError, OSError) as e:  # CheckpointError is a ValueError; a bad config.json too
        message = str(e).replace("set the loader's variant", "give --variant (480p_t2v, 720p_i2v, ...)")
        misfit = f"variant {args.variant} does not fit these weights: "
        if message.startswith(misfit):
            raise OptionError(f"--variant {args.variant} does not fit {name}: {message[len(misfit):]}") from None
        raise OptionError(f"{option}: {message if message.startswith(name) else f'{name}: {message}'}") from None


def _check_job_variant(args, variant: str) -> None:
    """The transformer must be the job's model: an I2V variant takes --image, a T2V one does not."""
    from ..hunyuan_video_15.variants import Variant

    found = Variant(variant)
    if found.is_sr:
        option = "--diffusers" if args.diffusers else "--transformer"
        raise OptionError(f"{option}: {_name(args)} is the {found.title} DiT, which lifts a base clip: give a 480p or "
                          "720p text- or image-to-video transformer, and this one as --sr-model (with --sr-upsampler)")
    is_i2v = found.is_i2v
    if args.job == "t2v" and is_i2v:
        option = "--diffusers" if args.diffusers else "--transformer"
        raise OptionError(f"{option}: {_name(args)} is {found.title}: give --{JOB_INPUTS['i2v']} PATH (the first "
                          "frame), or a text-to-video transformer")
    if args.job == "i2v" and not is_i2v:
        hint = ("; an I2V file whose name does not say so needs --variant (e.g. 720p_i2v)"
                if args.variant in (None, "auto") else "")
        raise OptionError(f"--image needs a HunyuanVideo 1.5 image-to-video transformer, but {_name(args)} is "
                          f"{found.title}{hint}")
