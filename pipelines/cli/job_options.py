"""Which job the render command runs, and the checks that depend on it, before any model loads.

The inputs choose the job: --image renders image-to-video, --reference HunyuanCustom, neither text-to-video. The
transformer must be that job's model (its variant read off the header or config by `options`, as the loader reads
it), the other jobs' options are refused, and so are pairs that cannot work together. Only the standard library is
imported at the top, as in `options`; each problem is an OptionError: one line naming the option, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

JOB_INPUTS = {"i2v": "image", "custom": "reference"}  # the option that asks for each image job
JOB_TITLES = {"t2v": "text-to-video", "i2v": "image-to-video", "custom": "HunyuanCustom"}
JOB_VARIANTS = {"t2v": ("t2v",), "i2v": ("i2v_v1", "i2v_v2"), "custom": ("custom",)}
DEMO_VARIANTS = {"t2v": "t2v", "i2v": "i2v_v2", "custom": "custom"}  # the tiny model each job runs with no model given
JOB_OPTIONS = {"i2v": ("resolution", "mode", "image_interleave"), "custom": ("subject", "ip_cfg_scale", "step_cache")}
RESOLUTION_CHOICES = ("360p", "540p", "720p")  # = i2v.RESOLUTION_BASES (a test keeps them equal)
MODE_CHOICES = ("stability", "dynamic")  # = i2v.MODES
MAX_INTERLEAVE = 5  # = i2v.MAX_INTERLEAVE
V1_DROPPED_FRAMES = 4  # = i2v.V1_DROPPED_FRAMES
CFG_BATCHING_CHOICES = ("auto", "batched", "sequential")  # = custom.CFG_BATCHING
CUSTOM_CACHE_STEPS = 30  # = custom.CACHE_STEPS
# The authors' HunyuanCustom settings: = custom.CustomRequest and prepare_custom's size (a test keeps them equal).
CUSTOM_DEFAULTS = {"width": 1280, "height": 720, "steps": 30, "cfg": 7.5, "shift": 13.0}
PICTURES = "a picture file (PNG, JPEG, WebP, ...)"


class OptionError(ValueError):
    """A bad option or pair of options; the command reports it as one line with exit status 2."""


def flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def choose_job(args, demo: bool) -> str:
    """The job the inputs ask for ("t2v", "i2v" or "custom"); refuses what cannot go with it whatever the model."""
    if args.image and args.reference:
        raise OptionError("--image and --reference are two jobs (image-to-video, HunyuanCustom): give one of them")
    job = "i2v" if args.image else "custom" if args.reference else "t2v"
    for other, names in JOB_OPTIONS.items():
        given = [name for name in names if other != job and getattr(args, name) is not None]
        if given:
            raise OptionError(f"{flags(given)} {'is' if len(given) == 1 else 'are'} for {JOB_TITLES[other]}: "
                              f"give --{JOB_INPUTS[other]} PATH")
    if args.vision and job == "t2v":
        raise OptionError("--vision reads the picture of --image or --reference into the prompt: give one of them, "
                          "or leave --vision out")
    if job == "i2v" and (args.width is None) != (args.height is None):
        raise OptionError("--width and --height go together for image-to-video: both set the video size, neither "
                          "takes the --resolution bucket nearest the image")
    if job == "i2v" and args.width is not None and args.resolution:
        raise OptionError("--resolution picks a size bucket, --width and --height set the size: give one or the other")
    if job == "custom":
        _check_custom(args, demo)
    return job


def _check_custom(args, demo: bool) -> None:
    from ..hunyuan_video_13b.custom_prompt import check_subject

    if args.guidance is not None:
        raise OptionError(f"--guidance: HunyuanCustom has no guidance embedding; it uses real CFG (--cfg, "
                          f"{CUSTOM_DEFAULTS['cfg']:g} by default)")
    if args.ip_cfg_scale and args.cfg is not None and args.cfg <= 1:
        raise OptionError("--ip-cfg-scale adds a third branch to classifier-free guidance: it needs --cfg above 1")
    steps = args.steps or (None if demo else CUSTOM_DEFAULTS["steps"])
    if args.step_cache != "off" and steps == CUSTOM_CACHE_STEPS and args.cache != "off":
        raise OptionError(f"--cache {args.cache} and HunyuanCustom's own cache at {CUSTOM_CACHE_STEPS} steps "
                          "(--step-cache, on by default) both skip work: turn one off")
    if args.subject is not None:
        try:
            check_subject(args.subject)
        except ValueError as e:
            raise OptionError(f"--subject: {e}") from None


def read_picture(option: str, path: Path):
    """The picture as ComfyUI's Load Image reads it (EXIF rotation applied, RGB), decoded whole so that a
    truncated file is refused here."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise OptionError(f"--{option}: {path} {problem}; expected {PICTURES}")
    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except UnidentifiedImageError:
        raise OptionError(f"--{option}: {path} is not {PICTURES}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OptionError(f"--{option}: cannot read {path}: {e}") from None
    if min(picture.size) < 2:
        raise OptionError(f"--{option}: {path.name} is {picture.width}x{picture.height} pixels, too small to condition "
                          "a video")
    return picture


def check_vision(args, job: str) -> None:
    """An image job reads its picture with the LLaVA vision tower: --vision beside the single files, a whole LLaVA
    as a diffusers folder's text encoder; the tower must project to the Llama's width."""
    if job == "t2v" or not (args.transformer or args.diffusers):
        return
    flag = "--" + JOB_INPUTS[job]
    if args.diffusers:
        model_type = read_config(Path(args.diffusers) / "text_encoder").get("model_type") or "model of unknown type"
        if model_type != "llava":
            raise OptionError(f"{flag}: the text_encoder of {args.diffusers} is a {model_type}, not a LLaVA, so it "
                              "cannot read the picture (a HunyuanVideo-I2V diffusers folder's can)")
        return
    if not args.vision:
        raise OptionError(f"{flag} needs --vision FILE too: the LLaVA vision tower (e.g. "
                          "llava_llama3_vision.safetensors) that reads the picture into the prompt")
    from ..weights.checkpoints import read_safetensors_header

    if not all(Path(p).suffix.lower() == ".safetensors" for p in (args.vision, args.llm)):
        return  # no header to compare; a pickle is checked as it loads
    projects = _width(read_safetensors_header(args.vision), "multi_modal_projector.linear_2.weight", 0)
    wide = _width(read_safetensors_header(args.llm), "embed_tokens.weight", 1)
    if projects and wide and projects != wide:
        raise OptionError(f"--vision: {Path(args.vision).name} projects to width {projects} but the --llm file is "
                          f"{wide} wide: they do not belong together")


def _width(header: dict, suffix: str, axis: int) -> int | None:
    shape = next((entry["shape"] for key, entry in header.items() if key.endswith(suffix)), None)
    return shape[axis] if shape else None


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def folder_variant(folder: Path) -> str | None:
    """The variant a diffusers transformer's config.json names (in `folder` or its transformer/), as the transformer
    loader reads it; None when there is none to read (the loader says why)."""
    config = read_config(folder / "transformer" if (folder / "transformer" / "config.json").is_file() else folder)
    if not config:
        return None
    found = {None: "t2v", "latent_concat": "i2v_v1", "token_replace": "i2v_v2"}.get(config.get("image_condition_type"))
    return "custom" if found == "t2v" and not config.get("guidance_embeds", True) else found


def check_variant(args, job: str, variant: str) -> None:
    """The transformer must be the job's model, and the options must suit that model."""
    if variant not in JOB_VARIANTS[job]:
        raise OptionError(_mismatch(args, job, variant))
    if variant == "i2v_v1" and args.guidance is not None:
        raise OptionError("--guidance: I2V v1 has no guidance embedding (v2 has); leave it out, or use --cfg for "
                          "true CFG")
    if variant == "i2v_v1" and args.frames is not None and args.frames <= V1_DROPPED_FRAMES:
        raise OptionError(f"--frames: I2V v1 drops its first {V1_DROPPED_FRAMES} frames, as the authors': give 5 or "
                          f"more (4k+1), got {args.frames}")


def _mismatch(args, job: str, variant: str) -> str:
    from ..hunyuan_video_13b.transformer_loading import VARIANT_TITLES

    option, path = ("--diffusers", args.diffusers) if args.diffusers else ("--transformer", args.transformer)
    found = f"{Path(path).name} is {VARIANT_TITLES[variant]}"
    if job == "t2v":
        other = "i2v" if variant in JOB_VARIANTS["i2v"] else "custom"
        what = "the first frame" if other == "i2v" else "a picture of the subject"
        return f"{option}: {found}: give --{JOB_INPUTS[other]} PATH ({what}), or a text-to-video transformer"
    takes = next((f", which takes --{JOB_INPUTS[j]}" for j in JOB_INPUTS if variant in JOB_VARIANTS[j]), "")
    if job == "i2v":
        unnamed_v2 = variant == "t2v" and args.transformer and args.variant in (None, "auto")
        hint = "; an I2V v2 file whose name does not say so needs --variant i2v_v2" if unnamed_v2 else ""
        return f"--image needs an I2V v1 or v2 transformer, but {found}{takes}{hint}"
    return (f"--reference needs the HunyuanCustom transformer (e.g. hunyuan_video_custom_720p_fp8_scaled.safetensors), "
            f"but {found}{takes}")
