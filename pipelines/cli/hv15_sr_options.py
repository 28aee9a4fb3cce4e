"""The render command's HunyuanVideo 1.5 super-resolution stage: its options, and their checks before any weight loads.

With --sr-model (the SR DiT) and --sr-upsampler (the latent upsampler), the base clip is lifted after sampling, as
the authors' generate.py does by default: a 480p base to 720p, a 720p base to 1080p (SPEC-hv15 §5.6). Both files
must be of the resolution the base transformer's asks for, read from their headers (an SR DiT whose name does not
say 720p or 1080p is taken as the one the base needs; the upsampler's kind is in its tensor names). Only the
standard library is imported at the top, as in `options`; each problem is an OptionError naming the flag.
"""

from __future__ import annotations

from pathlib import Path

from .job_options import OptionError, flags, read_config

SR_OPTIONS = ("sr_model", "sr_upsampler", "sr_steps", "sr_shift", "sr_noise_augmentation")
SR_FILE_OPTIONS = SR_OPTIONS[:2]
SR_FOR_BASE = {"480p": "720p", "720p": "1080p"}  # = variants.SR_BASE_RESOLUTION reversed (a test keeps them equal)
DEFAULT_NOISE_AUGMENTATION = 0.7  # = super_resolution.DEFAULT_NOISE_AUGMENTATION
MAX_SR_STEPS = 100  # as the HV1.5 Super-Resolution node
SR_REASON = "the super-resolution stage, --sr-model, lifts a HunyuanVideo 1.5 clip"
SR_FILES = {resolution: (f"hunyuanvideo1.5_{resolution}_sr_distilled_fp16.safetensors",
                         f"hunyuanvideo15_latent_upsampler_{resolution}.safetensors")
            for resolution in ("720p", "1080p")}  # (SR DiT, upsampler), as ComfyUI's repackaged files are named


def add_sr_options(parser, number) -> None:
    """The SR group of `options.build_parser` (`number` is its range-checking argparse type)."""
    group = parser.add_argument_group("HunyuanVideo 1.5 super-resolution (--sr-model and --sr-upsampler)")
    group.add_argument("--sr-model", metavar="PATH", help="the super-resolution DiT that lifts the sampled clip before "
                       f"decoding, as the authors' --sr: after a 480p model {SR_FILES['720p'][0]} (to 720p), after a "
                       f"720p one {SR_FILES['1080p'][0]} (to 1080p; _fp8_scaled files too), or the authors' "
                       "transformer/<720p|1080p>_sr_distilled folder (default: none, no SR stage)")
    group.add_argument("--sr-upsampler", metavar="PATH", help="the latent upsampler of the SR DiT's resolution: "
                       f"{SR_FILES['720p'][1]} or {SR_FILES['1080p'][1]}, or the authors' "
                       "upsampler/<720p|1080p>_sr_distilled folder")
    group.add_argument("--sr-steps", metavar="N", type=number(int, 0, MAX_SR_STEPS, f"from 0 to {MAX_SR_STEPS}"),
                       help="SR denoising steps; 0: the SR recipe's, 6 to 720p, 8 to 1080p (default: 0)")
    group.add_argument("--sr-shift", metavar="SHIFT", type=number(float, 0.1, 100, "from 0.1 to 100"),
                       help="SR flow shift, 0.1-100 (default: the SR recipe's, 2)")
    group.add_argument("--sr-noise-augmentation", metavar="S", type=number(float, 0, 1, "from 0 to 1"),
                       help="noise mixed into the upscaled base latent, (1 - S) x latent + S x noise; the SR DiT "
                       f"stops reading that latent below t = 1000 x S (default: {DEFAULT_NOISE_AUGMENTATION}, the "
                       "authors')")


def check_sr(args, base_variant) -> None:
    """Sets `args.sr_variant`: the SR DiT's variant name (None without --sr-model), after refusing an SR option
    without --sr-model, a missing upsampler, and files that are not the SR stage of `base_variant`'s resolution."""
    args.sr_variant = None
    if not args.sr_model:
        given = [name for name in SR_OPTIONS[1:] if getattr(args, name) is not None]
        if given:
            raise OptionError(f"{flags(given[:1])} is for the super-resolution stage: give --sr-model PATH too (the SR "
                              "DiT), or leave it out")
        return
    resolution = SR_FOR_BASE[base_variant.resolution]
    upsampler = SR_FILES[resolution][1]
    if not args.sr_upsampler:
        raise OptionError(f"--sr-model needs --sr-upsampler PATH too: the {resolution} latent upsampler ({upsampler}) "
                          "that refines the base latent before the SR DiT reads it")
    args.sr_variant = _sr_variant(Path(args.sr_model), resolution, base_variant)
    _check_upsampler(Path(args.sr_upsampler), resolution)


def _sr_variant(path: Path, resolution: str, base) -> str:
    """The SR DiT's variant as the 1.5 loader reads it; one whose name and config do not say is the base's."""
    from ..hunyuan_video_15.transformer_loading import read_variant
    from ..weights.checkpoints import CheckpointError

    if not path.exists():
        raise OptionError(f"--sr-model: {path} does not exist")
    needed = f"{resolution}_sr_distilled"
    wanted = f"a {base.resolution} clip needs {SR_FILES[resolution][0]}"
    try:
        found = read_variant(path, "auto")
    except (CheckpointError, ValueError, OSError):
        if _holds_13b(path):
            raise OptionError(f"--sr-model: {path.name} is a HunyuanVideo 13B transformer; {wanted}, the HunyuanVideo "
                              "1.5 super-resolution DiT") from None
        try:  # an SR DiT whose name does not say 720p or 1080p: the one the base needs
            found = read_variant(path, needed)
        except (CheckpointError, ValueError, OSError) as e:
            message = str(e).replace(f"variant {needed} does not fit these weights: they are", "it holds")
            raise OptionError(f"--sr-model: {message if message.startswith(path.name) else f'{path.name}: {message}'}"
                              ) from None
    if not found.is_sr:
        raise OptionError(f"--sr-model: {path.name} is {found.title}, not a super-resolution DiT; {wanted}")
    if found.resolution != resolution:
        raise OptionError(f"--sr-model: {path.name} is the {found.title} DiT, but the base transformer is "
                          f"{base.resolution}: {wanted} (the {base.resolution} -> {resolution} stage)")
    return found.name


def _holds_13b(path: Path) -> bool:
    """A HunyuanVideo 13B transformer file: a HunyuanVideo transformer's header without 1.5's byT5 input."""
    from ..weights.checkpoint_kinds import guess_checkpoint_kind
    from ..weights.checkpoints import CheckpointError, read_safetensors_header

    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return False
    try:
        header = read_safetensors_header(path)
    except CheckpointError:
        return False
    hv15 = any(key.endswith(("byt5_in.fc1.weight", "cond_type_embed.weight")) for key in header)
    return not hv15 and guess_checkpoint_kind(header) == "a HunyuanVideo transformer"


def _check_upsampler(path: Path, resolution: str) -> None:
    """The upsampler's kind from its header (a pickle is checked as it loads), against the SR DiT's resolution."""
    from ..hunyuan_video_15.upsampler import AUTHORS_CLASSES, WEIGHT_NAMES, derive_upsampler_config
    from ..weights.checkpoints import PICKLE_SUFFIXES, CheckpointError, read_safetensors_header

    if not path.exists():
        raise OptionError(f"--sr-upsampler: {path} does not exist")
    config, file = {}, path
    if path.is_dir():
        config = read_config(path)
        found = [path / name for name in WEIGHT_NAMES if (path / name).is_file()] or sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise OptionError(f"--sr-upsampler: {path} is a folder without one weight file; expected "
                              f"{SR_FILES[resolution][1]} or the authors' upsampler/{resolution}_sr_distilled folder "
                              "(config.json + diffusion_pytorch_model.safetensors)")
        file = found[0]
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return
    if suffix != ".safetensors":
        raise OptionError(f"--sr-upsampler: {file.name} is not a .safetensors file; expected "
                          f"{SR_FILES[resolution][1]}")
    try:
        header = read_safetensors_header(file)
        kind, _ = derive_upsampler_config({key: tuple(entry["shape"]) for key, entry in header.items()}, file.name)
    except CheckpointError as e:
        raise OptionError(f"--sr-upsampler: {e}") from None
    named = config.get("_class_name")
    if named is not None and named != AUTHORS_CLASSES[kind]:
        raise OptionError(f"--sr-upsampler: {path.name}/config.json names {named}, but {file.name} holds the {kind} "
                          f"upsampler ({AUTHORS_CLASSES[kind]})")
    if kind != resolution:
        raise OptionError(f"--sr-upsampler: {file.name} is the {kind} latent upsampler, but the SR DiT is the "
                          f"{resolution} one: it needs {SR_FILES[resolution][1]}")


def check_upsampler_kind(kind: str, sr_variant: str) -> None:
    """Once loaded, for a pickled upsampler (no header to read before)."""
    resolution = sr_variant.split("_")[0]
    if kind != resolution:
        raise OptionError(f"--sr-upsampler: the file holds the {kind} latent upsampler, but the SR DiT is the "
                          f"{resolution} one: it needs {SR_FILES[resolution][1]}")
