"""The render command's options, and the checks that run before anything is loaded.

Only the standard library is imported at the top, so `--help` and a mistyped option answer at once;
the weight-file checks import the (torch-based) checkpoint readers when they run. Every problem is
reported as one line naming the option and what it allows, with exit status 2 (argparse's usage error).
The checks that depend on the job (--image, --reference) are in `job_options`; the model family (HunyuanVideo
13B or 1.5, read from the transformer's header) and a 1.5 render's checks in `hv15_options`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .hv15_options import (
    DEFAULT_ASPECT_RATIO,
    HV15_NEEDED,
    HV15_VARIANT_CHOICES,
    check_family,
    check_hv15,
    model_family,
)
from .hv15_sr_options import SR_FILE_OPTIONS, add_sr_options
from .job_options import (
    CFG_BATCHING_CHOICES,
    CUSTOM_DEFAULTS,
    DEMO_VARIANTS,
    JOB_INPUTS,
    MAX_INTERLEAVE,
    MODE_CHOICES,
    RESOLUTION_CHOICES,
    OptionError,
    check_variant,
    check_vision,
    choose_job,
    folder_variant,
    read_picture,
)
from .lora_options import add_lora_options, check_loras

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")  # H.264 in any of these containers
DTYPE_CHOICES = ("bf16", "fp16", "fp32")  # = transformer_loading.DTYPES (a test keeps them equal)
VARIANT_CHOICES = ("auto", "t2v", "i2v_v1", "i2v_v2", "custom")  # = ("auto", *transformer_loading.VARIANTS)
WEIGHT_DTYPE_CHOICES = ("auto", *DTYPE_CHOICES, "fp8_e4m3fn")  # = transformer_loading.WEIGHT_DTYPES
ATTENTION_CHOICES = ("masked", "auto", "sdpa", "sage", "flash")  # = attention.BACKENDS (a test keeps them equal)
CACHE_CHOICES = ("off", "first_block", "teacache", "teacache_fast")  # = step_cache.CACHE_PRESETS
RIFLEX_CHOICES = ("auto", "off")  # = rope.RIFLEX_CHOICES (a test keeps them equal)
MAX_SEED = 2**64 - 1  # = t2v.MAX_SEED
DEFAULT_OUTPUT = "outputs/hunyuan_video.mp4"
DEMO_DEFAULTS = {"width": 128, "height": 128, "frames": 9, "steps": 4}
MODEL_DEFAULTS = {"width": 960, "height": 544, "frames": 129, "steps": 50}  # = t2v.T2VRequest's
DEFAULT_DTYPE = "bf16"
FILE_OPTIONS = ("transformer", "vae", "llm", "clip", "byt5", "tokenizers", "vision")
NEEDED_WITH_TRANSFORMER = ("vae", "llm", "clip", "tokenizers")

# What each weight-file option must hold, as checkpoint_kinds.guess_checkpoint_kind names it.
EXPECTED_KINDS = {
    "transformer": ({"a HunyuanVideo transformer"}, "a HunyuanVideo transformer in the authors' layout, or a diffusers folder"),
    "vae": ({"a HunyuanVideo VAE (authors'/diffusers layout)", "a VAE in ComfyUI's layout"},
            "the HunyuanVideo VAE (e.g. hunyuan_video_vae_bf16.safetensors), or a diffusers vae folder"),
    "llm": ({"a Llama language model", "a LLaVA vision tower"}, "a Llama-3 text encoder (e.g. llava_llama3_fp8_scaled.safetensors)"),
    "clip": ({"a CLIP text encoder"}, "a CLIP-L text encoder (e.g. clip_l.safetensors)"),
    "vision": ({"a LLaVA vision tower"}, "the LLaVA vision tower and projector (e.g. llava_llama3_vision.safetensors)"),
}


def reports_misuse() -> bool:
    """Whether this process prints a refused option: one process, or rank 0 of a `torchrun` launch (every rank runs
    the same checks and exits 2; one line is enough)."""
    return os.environ.get("RANK", "0") == "0"


class OptionParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block) with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n" if reports_misuse() else None)


def _aspect(text: str) -> str:
    width, _, height = text.partition(":")
    if not all(part.isdigit() and 1 <= int(part) <= 100 for part in (width, height)):
        raise argparse.ArgumentTypeError(f"must be W:H, two whole numbers from 1 to 100 (16:9, 9:16, 1:1, 4:3, 21:9, "
                                         f"...), got {text!r}")
    return text


def _number(kind, low, high, allowed: str, multiple: int = 1, offset: int = 0):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not low <= value <= high or (kind is int and (value - offset) % multiple):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


def build_parser(prog: str, description: str) -> OptionParser:
    p = OptionParser(prog=prog, description=description)
    demo, model = DEMO_DEFAULTS, MODEL_DEFAULTS

    def sized(name):
        return f"(default: {model[name]} with a model, {demo[name]} for the demo)"

    out = p.add_argument_group("output")
    out.add_argument("--output", default=DEFAULT_OUTPUT, help=f"video file to write, {'/'.join(VIDEO_SUFFIXES)}; "
                     f"written under a temporary name and renamed when complete (default: {DEFAULT_OUTPUT})")
    out.add_argument("--fps", type=_number(float, 1, 120, "a frame rate from 1 to 120"), default=24.0,
                     help="frame rate of the video, 1-120 (default: 24)")

    models = p.add_argument_group("model (none given: a tiny random-weight demo model on the CPU)")
    models.add_argument("--diffusers", metavar="FOLDER", help="a diffusers-format HunyuanVideo (13B or 1.5) folder with every component")
    models.add_argument("--transformer", metavar="PATH", help="transformer .safetensors (authors' or ComfyUI's layout) "
                        "or diffusers folder: HunyuanVideo 13B or 1.5, read from the file")
    models.add_argument("--vae", metavar="PATH", help="VAE .safetensors (either layout) or diffusers vae folder, of the "
                        "transformer's family")
    models.add_argument("--llm", metavar="FILE", help="text encoder file: Llama-3 for 13B (llava_llama3_fp8_scaled."
                        "safetensors), Qwen2.5-VL-7B for 1.5 (qwen_2.5_vl_7b_fp8_scaled.safetensors)")
    models.add_argument("--clip", metavar="FILE", help="13B: CLIP-L text encoder file, e.g. clip_l.safetensors")
    models.add_argument("--byt5", metavar="FILE", help="1.5: byT5 glyph encoder file for the prompt's quoted text, e.g. "
                        "byt5_small_glyphxl_fp16.safetensors")
    models.add_argument("--tokenizers", metavar="FOLDER", help="13B: folder with llama_tokenizer/ and clip_tokenizer/; "
                        "1.5: folder with qwen25_tokenizer/ (and byt5_tokenizer/), e.g. ComfyUI's comfy/text_encoders/")
    models.add_argument("--vision", metavar="FILE", help="reads the picture of --image or --reference: 13B the LLaVA "
                        "vision tower (llava_llama3_vision.safetensors), 1.5 SigLIP (sigclip_vision_patch14_384."
                        "safetensors); a diffusers I2V folder has its own")
    models.add_argument("--variant", choices=(*VARIANT_CHOICES, *HV15_VARIANT_CHOICES), metavar="VARIANT",
                        help="which model the transformer is; auto reads it off the weights and the file name (I2V v2 "
                        "has T2V's shapes: give i2v_v2 when its file name does not say so). 13B: "
                        f"{', '.join(VARIANT_CHOICES)}; 1.5: {', '.join(HV15_VARIANT_CHOICES)} (default: auto)")
    models.add_argument("--dtype", choices=DTYPE_CHOICES, help=f"precision the models run in (default: {DEFAULT_DTYPE})")
    models.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when available with a model, cpu for the demo)")

    video = p.add_argument_group("video")
    video.add_argument("--prompt", default="A cat walks on the grass, realistic style.", help="what the video shows")
    video.add_argument("--negative-prompt", default="",
                       help="used only with --cfg above 1 (default: the authors' negative prompt of the job: T2V's, "
                       "I2V's or HunyuanCustom's; HunyuanVideo 1.5's is empty)")
    size = "a multiple of 16 from 16 to 2048"
    custom = CUSTOM_DEFAULTS
    for name in ("width", "height"):
        video.add_argument(f"--{name}", type=_number(int, 16, 2048, size, 16),
                           help=f"{size} {sized(name)}; image-to-video: the --resolution bucket unless --width and "
                           f"--height are both given; HunyuanCustom: {custom[name]}; HunyuanVideo 1.5: the "
                           "--aspect-ratio bucket unless both are given")
    frames = "4k+1 from 1 to 257 (1, 5, 9, ..., 129, ...)"
    video.add_argument("--frames", type=_number(int, 1, 257, frames, 4, 1),
                       help=f"{frames} {sized('frames')}; I2V v1 gives 4 fewer, as the authors'; HunyuanVideo 1.5: "
                       "121")
    video.add_argument("--steps", type=_number(int, 1, 200, "a whole number from 1 to 200"),
                       help=f"1-200 {sized('steps')}; HunyuanCustom: {custom['steps']}; HunyuanVideo 1.5: the "
                       "variant's (50, 12 step-distilled)")
    video.add_argument("--aspect-ratio", metavar="W:H", type=_aspect, help="HunyuanVideo 1.5 text-to-video: the "
                       "authors' size bucket nearest this ratio at the model's resolution (16:9 is 848x480 at 480p, "
                       f"1280x720 at 720p); --width and --height set the size instead (default: {DEFAULT_ASPECT_RATIO})")
    video.add_argument("--guidance", type=_number(float, 0, 30, "from 0 to 30"),
                       help="embedded guidance, 0-30; I2V v1 and HunyuanCustom have none (default: 6)")
    video.add_argument("--cfg", type=_number(float, 1, 30, "from 1 (off) to 30"),
                       help="true CFG scale, 1 (off) to 30; above 1 doubles the time "
                       f"(default: 1, {custom['cfg']:g} for HunyuanCustom, the variant's for 1.5: 6, 1 distilled)")
    video.add_argument("--shift", type=_number(float, 0.1, 100, "from 0.1 to 100"),
                       help=f"flow shift, 0.1-100 (default: 7, the --mode's for I2V, {custom['shift']:g} for "
                       "HunyuanCustom, the variant's for 1.5)")
    video.add_argument("--riflex", choices=RIFLEX_CHOICES,
                       help="auto: above 192 frames the temporal RoPE fix of HunyuanVideo-I2V's authors (RIFLEx), so "
                       "long videos do not loop; off: plain RoPE (default: auto)")
    video.add_argument("--seed", type=_number(int, 0, MAX_SEED, f"from 0 to {MAX_SEED}"), default=0,
                       help="noise seed (default: 0)")

    image = p.add_argument_group("image-to-video (--image) and HunyuanCustom (--reference)")
    image.add_argument("--image", metavar="PATH", help="the first frame: renders image-to-video with an I2V v1 or v2 "
                       "transformer, or a HunyuanVideo 1.5 I2V one (and --vision)")
    image.add_argument("--reference", metavar="PATH", help="a picture of the subject, best on white: renders with the "
                       "HunyuanCustom transformer (and --vision)")
    image.add_argument("--resolution", choices=RESOLUTION_CHOICES, help="13B I2V: the authors' size bucket nearest the "
                       "image's aspect ratio (default: 720p with a model; the demo's size for the demo; 1.5 takes the "
                       "model's own)")
    image.add_argument("--mode", choices=MODE_CHOICES, help="I2V: stability (closer to the image, shift 7) or dynamic "
                       "(more motion, shift 17) (default: stability)")
    interleave = f"from 1 to {MAX_INTERLEAVE}"
    image.add_argument("--image-interleave", metavar="N", type=_number(int, 1, MAX_INTERLEAVE, interleave),
                       help=f"I2V: keep every n-th of LLaVA's image tokens, {interleave} (default: 2 for v1, 4 for v2)")
    image.add_argument("--subject", metavar="WORD", help="HunyuanCustom: what the reference shows, one word or two "
                       "(person, dog, ...); the prompt gets 'The <subject> looks like <image>' (default: object, as the authors)")
    image.add_argument("--ip-cfg-scale", metavar="SCALE", type=_number(float, 0, 30, "from 0 (off) to 30"),
                       help="HunyuanCustom: above 0, a third pass pushing towards the reference, weighted from this "
                       "value down to 1 over the steps; needs --cfg above 1 (default: 0, off)")
    image.add_argument("--step-cache", choices=("on", "off"), help=f"HunyuanCustom: the authors' cache at exactly "
                       f"{custom['steps']} steps, on 8 of them only the last block runs (default: on)")
    image.add_argument("--cfg-batching", choices=CFG_BATCHING_CHOICES, help="the guidance passes as one batch, faster "
                       "and more memory; auto: batched when the GPU has room for HunyuanCustom and HunyuanVideo 1.5, "
                       "one at a time for 13B T2V and I2V (default: auto; sequential for 13B T2V and I2V)")

    add_sr_options(p, _number)
    add_lora_options(p)

    memory = p.add_argument_group("memory")
    memory.add_argument("--weight-dtype", choices=WEIGHT_DTYPE_CHOICES, default=None,
                        help="transformer storage: auto keeps fp8 files fp8; fp8_e4m3fn stores a bf16 file's blocks in "
                        "fp8 (default: auto)")
    memory.add_argument("--offload", type=_offload, default="auto",
                        help="auto (the planner decides), off (all on the GPU) or the number of transformer blocks kept "
                        "on the GPU (default: auto)")
    memory.add_argument("--fp8-matmul", choices=("off", "auto"), default="off",
                        help="fp8 matmuls for fp8-stored blocks on GPUs that have them, compute capability 8.9+ "
                        "(default: off)")

    speed = p.add_argument_group("speed")
    speed.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto",
                       help="attention kernel; all but 'masked' trim the prompt padding, same result (default: auto, "
                       "the fastest exact kernel installed)")
    speed.add_argument("--cache", choices=CACHE_CHOICES, default="off", help="step cache preset (default: off)")
    speed.add_argument("--cache-threshold", type=_number(float, 0, 1e9, "0 or more"), default=None,
                       help="the cache preset's threshold (default: its published value)")
    speed.add_argument("--compile", action="store_true", help="torch.compile each transformer block (slow first run)")
    return p


def _offload(text: str) -> str | int:
    """As offload.parse_offload (a test keeps them equal), without importing torch for --help."""
    value = text.strip().lower()
    if value in ("auto", "off"):
        return value
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"must be auto, off or a number of resident blocks (0 or more), got {text!r}")


def check_options(parser: OptionParser, args: argparse.Namespace) -> None:
    """Everything that needs no model loaded; parser.error() on the first problem.

    Sets `args.family` ("13b" or "hv15", the transformer's), `args.job` (t2v, i2v or custom), `args.picture` (the
    decoded --image or --reference) and `args.model_variant` (None for a pickled transformer, which has no
    header: checked once loaded). The --lora files are checked here too, read once the family is known.
    """
    _check_model_choice(parser, args)
    args.family = model_family(args)
    try:
        check_family(args, args.family)
    except OptionError as e:
        parser.error(str(e))
    _check_needed(parser, args)
    _check_output(parser, args.output)
    try:
        check_loras(args)
    except OptionError as e:
        parser.error(str(e))
    if args.family == "hv15":
        if args.diffusers:
            _check_diffusers_folder(parser, Path(args.diffusers))
        try:
            return check_hv15(args)
        except OptionError as e:
            parser.error(str(e))
    try:
        args.job = choose_job(args, is_demo(args))
        option = JOB_INPUTS.get(args.job)
        args.picture = read_picture(option, Path(getattr(args, option))) if option else None
        variants = {}
        if args.diffusers:
            _check_diffusers_folder(parser, Path(args.diffusers))
            variants["transformer"] = _folder_variant(parser, Path(args.diffusers), args.variant)
        for name in FILE_OPTIONS:
            if getattr(args, name):
                variants[name] = _check_model_path(parser, name, Path(getattr(args, name)), args.variant)
        check_vision(args, args.job)
        args.model_variant = DEMO_VARIANTS[args.job] if is_demo(args) else variants["transformer"]
        if args.model_variant:
            check_variant(args, args.job, args.model_variant)
    except OptionError as e:
        parser.error(str(e))


def is_demo(args: argparse.Namespace) -> bool:
    return not (args.diffusers or args.transformer)


def _check_model_choice(parser, args) -> None:
    given = [name for name in (*FILE_OPTIONS[1:], *SR_FILE_OPTIONS, "variant", "dtype", "weight_dtype")
             if getattr(args, name)]
    if args.diffusers:
        both = [f"--{name}" for name in FILE_OPTIONS if getattr(args, name)]
        if both:
            parser.error(f"--diffusers holds every component: give it alone, not with {', '.join(both)}")
    elif not args.transformer and given:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in given)} {'needs' if len(given) == 1 else 'need'} --transformer (or --diffusers); "
                     "with no model at all the command runs the tiny demo")


def _check_needed(parser, args) -> None:
    """The files a transformer of its family needs beside it."""
    if not args.transformer:
        return
    needed = HV15_NEEDED if args.family == "hv15" else NEEDED_WITH_TRANSFORMER
    missing = [f"--{name}" for name in needed if not getattr(args, name)]
    if missing:
        which = f"--transformer {Path(args.transformer).name} is HunyuanVideo 1.5: it" if args.family == "hv15" else "--transformer"
        parser.error(f"{which} needs {' '.join('--' + n for n in needed)} too (missing: {', '.join(missing)}), "
                     "or give --diffusers instead")


def _check_output(parser, output: str) -> None:
    path = Path(output)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"--output must end in {', '.join(VIDEO_SUFFIXES)}, got {output!r}")
    if path.is_dir():
        parser.error(f"--output {output!r} is a folder; name a video file in it")
    folder = path.parent.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        parser.error(f"--output: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--output: cannot write in {existing}")


def _check_diffusers_folder(parser, folder: Path) -> None:
    if not folder.is_dir():
        parser.error(f"--diffusers: {folder} is not a folder")
    lacking = [name for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
               if not (folder / name).is_dir()]
    if lacking:
        parser.error(f"--diffusers: {folder} lacks {', '.join(n + '/' for n in lacking)}; expected a diffusers "
                     "HunyuanVideo folder")


def _check_model_path(parser, option: str, path: Path, variant: str | None) -> str | None:
    """Checks the file or folder an option names; for the transformer, returns its variant (None: a pickle)."""
    if not path.exists():
        parser.error(f"--{option}: {path} does not exist")
    if option == "tokenizers":
        lacking = [name for name in ("llama_tokenizer", "clip_tokenizer") if not (path / name).is_dir()]
        if lacking:
            parser.error(f"--tokenizers: {path} must be a folder holding llama_tokenizer/ and clip_tokenizer/")
        return
    expected = EXPECTED_KINDS[option][1]
    if path.is_dir():
        sub = {"transformer": "transformer", "vae": "vae"}.get(option)
        if sub is None or not ((path / "config.json").is_file() or (path / sub / "config.json").is_file()):
            parser.error(f"--{option}: {path} is a folder without a config.json; expected {expected}")
        return _folder_variant(parser, path, variant) if option == "transformer" else None
    from ..weights.checkpoints import PICKLE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return None  # no header to read; checked when it loads (weights_only)
    if suffix != ".safetensors":
        parser.error(f"--{option}: {path.name} is not a .safetensors file; expected {expected}")
    return _check_header(parser, option, path, variant)


def _folder_variant(parser, folder: Path, variant: str | None) -> str | None:
    """A diffusers transformer's variant from its config; --variant may only repeat it (the loader refuses others)."""
    from ..hunyuan_video_13b.transformer_loading import VARIANT_TITLES

    found = folder_variant(folder)
    if found and variant not in (None, "auto", found):
        parser.error(f"--variant {variant}: the transformer of {folder.name} is configured as {VARIANT_TITLES[found]}")
    return found if variant in (None, "auto") else variant


def _check_header(parser, option: str, path: Path, variant: str | None) -> str | None:
    from ..weights.checkpoint_kinds import guess_checkpoint_kind
    from ..weights.checkpoints import CheckpointError, read_safetensors_header, read_safetensors_metadata, strip_prefix

    kinds, expected = EXPECTED_KINDS[option]
    try:
        header = read_safetensors_header(path)
    except CheckpointError as e:
        parser.error(f"--{option}: {e}")
    found = guess_checkpoint_kind(header)
    if option == "vision" and found in kinds and not any("multi_modal_projector." in key for key in header):
        found = "a vision tower without LLaVA's projector (SigLIP, HunyuanVideo 1.5's?)"
    if found not in kinds:
        parser.error(f"--{option}: {path.name} holds {found}; expected {expected}")
    if option != "transformer":
        return None
    from ..hunyuan_video_13b.transformer_loading import COMFY_PREFIXES, detect_variant

    shapes = {k: tuple(v["shape"]) for k, v in strip_prefix(header, COMFY_PREFIXES).items()}
    try:
        found = detect_variant(shapes, path.name, read_safetensors_metadata(path))
        by_shapes = detect_variant(shapes)  # T2V and I2V v2 share shapes: the name (or --variant) tells them apart
    except (CheckpointError, KeyError) as e:
        parser.error(f"--transformer: {path.name}: {e}")
    if variant in (None, "auto"):
        return found
    allowed = ("t2v", "i2v_v2") if by_shapes == "t2v" else (by_shapes,)
    if variant not in allowed:
        parser.error(f"--variant {variant}: the tensor shapes of {path.name} fit {' or '.join(allowed)} only")
    return variant

