"""The main job from the command line: render a text-to-video, image-to-video or HunyuanCustom clip to an .mp4,
with a HunyuanVideo 13B model or a HunyuanVideo 1.5 one (the family read from the transformer file).

    python3 -m pipelines.render --output outputs/clip.mp4              # tiny built-in model, CPU, seconds
    python3 -m pipelines.render --diffusers /models/HunyuanVideo --prompt "..." --output clip.mp4
    python3 -m pipelines.render --transformer t2v.safetensors --vae vae.safetensors \
        --llm llava_llama3_fp8_scaled.safetensors --clip clip_l.safetensors --tokenizers ./tokenizers ...
    ... --transformer i2v.safetensors --vision llava_llama3_vision.safetensors --image first_frame.png
    ... --transformer custom.safetensors --vision llava_llama3_vision.safetensors --reference subject.png
    ... --transformer hunyuanvideo1.5_720p_t2v_fp16.safetensors --vae hunyuanvideo15_vae_fp16.safetensors \
        --llm qwen_2.5_vl_7b_fp8_scaled.safetensors --byt5 byt5_small_glyphxl_fp16.safetensors --tokenizers ./tok
    ... --sr-model hunyuanvideo1.5_1080p_sr_distilled_fp16.safetensors \
        --sr-upsampler hunyuanvideo15_latent_upsampler_1080p.safetensors          # 1.5: lift 720p to 1080p
    ... --lora style.safetensors:0.8 --lora-blocks double --lora fast.safetensors   # LoRAs of the model's family
    torchrun --nproc_per_node 4 -m pipelines.render --diffusers /models/HunyuanVideo ...   # one video on 4 GPUs

The jobs themselves are in `jobs` (13B) and `hv15_jobs` (1.5), the ranks of a multi-GPU launch in `parallel_run`;
this module checks, loads, runs the job and writes the video.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from functools import partial
from pathlib import Path

from .job_options import OptionError, check_variant
from .lora_options import choose_loras, read_loras
from .options import DEFAULT_DTYPE, build_parser, check_options, is_demo, reports_misuse
from .parallel_options import add_parallel_options, check_cfg_parallel, check_parallel
from .parallel_run import describe, rank_session, split_transformer

DEMO_NOTICE = (
    "DEMO: no model was given, so this ran a tiny random-weight model of the HunyuanVideo architecture on the CPU.\n"
    "      It proves the install works end to end; the video is noise, not a real clip."
)
PROG = "python3 -m pipelines.render"


def parse_args(argv=None):
    """The options, checked: a bad one exits with status 2 and one line, before any model loads."""
    parser = build_parser(PROG, __doc__.split("\n\n")[0])
    add_parallel_options(parser)
    args = parser.parse_args(argv)
    check_options(parser, args)
    args.device = _check_device(parser, args.device)
    check_parallel(parser, args, run_device(args), is_demo(args))
    return args


def run_device(args):
    """--device, else the GPU when there is one and a model to run, else the CPU (the demo's)."""
    import torch

    return args.device or torch.device("cuda" if torch.cuda.is_available() and not is_demo(args) else "cpu")


def _check_device(parser, name: str | None):
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        parser.error(f"--device must be cpu, cuda, cuda:N or another torch device, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: no CUDA GPU is usable here (torch {torch.__version__})")
    return device


def _demo_models(variant: str, checked=lambda transformer: transformer):
    """The tiny random-weight model of the job's variant; with a LLaVA text encoder for the image jobs. `checked`
    takes the loaded transformer and returns it with what the options ask of it (the --lora choices)."""
    from ..demo import tiny
    from ..demo.tiny_transformer import tiny_transformer
    from ..hunyuan_video_13b.transformer_loading import LoadedTransformer
    from .jobs import Models

    encoders = tiny.tiny_text_encoders(seed=0, llava=variant != "t2v")
    vae = tiny.tiny_vae(seed=0)
    text_dim = encoders.llm.config.hidden_size
    pooled_dim = encoders.clip.config.hidden_size
    model = tiny_transformer(text_dim, pooled_dim, vae.config.latent_channels, variant=variant, seed=0)
    return Models(checked(LoadedTransformer(model=model, variant=variant, source="tiny demo")), vae, encoders)


def _real_models(args, dtype, checked=lambda transformer: transformer):
    """The models the (already checked) options name; the transformer first, so that a pickled one (no header to
    check before) is checked against the job, and the LoRAs against it (`checked`), before the rest loads."""
    from ..hunyuan_video_13b.text_encoder_loading import load_text_encoders_from_files, load_text_encoders_from_folder
    from ..hunyuan_video_13b.transformer_loading import load_transformer
    from ..hunyuan_video_13b.vae_loading import load_vae
    from ..hunyuan_video_13b.vision_loading import load_vision
    from .jobs import Models

    variant, weight_dtype = args.variant or "auto", args.weight_dtype or "auto"
    transformer = load_transformer(args.diffusers or args.transformer, variant=variant, dtype=weight_dtype)
    if args.model_variant is None:
        check_variant(args, args.job, transformer.variant)
    transformer = checked(transformer)
    if args.diffusers:
        root = Path(args.diffusers)
        encoders = load_text_encoders_from_folder(str(root), dtype=dtype)
        return Models(transformer, load_vae(str(root / "vae"), dtype=dtype), encoders)
    tokenizers = Path(args.tokenizers)
    encoders = load_text_encoders_from_files(
        args.llm, args.clip, str(tokenizers / "llama_tokenizer"), str(tokenizers / "clip_tokenizer"), dtype=dtype
    )
    if args.vision:
        encoders = encoders.with_vision(load_vision(args.vision, dtype=dtype))
    return Models(transformer, load_vae(args.vae, dtype=dtype), encoders)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.family == "hv15":
        from .hv15_jobs import HV15_JOBS as JOBS
    else:
        from .jobs import JOBS
    job = JOBS[args.job]
    request = job.request(args)
    request.validate()
    check_cfg_parallel(args, getattr(request, "cfg", getattr(request, "true_cfg", 1.0)))
    device = run_device(args)
    with rank_session(args, device) as ranks:
        return _render(args, job, request, device if ranks is None else ranks.device, ranks)


def _render(args, job, request, device, ranks) -> int:
    """Load, sample, and (on rank 0 of a launch, or as the only process) decode and write the video."""
    from ..hunyuan_video_13b.transformer_loading import DTYPES
    from ..memory.offload import MemoryOptions
    from ..speed.options import SpeedOptions

    demo = is_demo(args)
    started = time.perf_counter()
    dtype = DTYPES[args.dtype or DEFAULT_DTYPE]
    checked = partial(_with_loras, args, read_loras(args))  # read before the models: a broken file stops it at once
    if ranks is not None:
        checked = partial(_split, args, ranks, checked)
    if demo:
        models = _demo_models(args.model_variant, checked)
    elif args.family == "hv15":
        from .hv15_jobs import load_models15

        models = load_models15(args, dtype, checked)
    else:
        models = _real_models(args, dtype, checked)

    def configured(loaded):
        return dataclasses.replace(
            loaded, speed=SpeedOptions(args.attention, args.cache, args.cache_threshold, args.compile),
            memory=MemoryOptions(offload=args.offload, fp8_compute=args.fp8_matmul),
        )

    transformer = models.transformer = configured(models.transformer)
    loaded = f"{transformer.source} ({getattr(transformer.variant, 'name', transformer.variant)})"
    sr = getattr(models, "sr_transformer", None)
    if sr is not None:
        sr = split_transformer(args, ranks, sr, cfg_parallel=False) if ranks is not None else sr  # CFG 1: one branch
        models.sr_transformer = configured(sr)
        loaded += f", {sr.source} ({sr.variant.name}) and {args.sr_upsampler} ({models.upsampler.kind} upsampler)"
    print(f"loaded {loaded} in {time.perf_counter() - started:.1f} s", flush=True)
    if ranks is not None:
        print(f"several GPUs: {describe(args, ranks)}", flush=True)
    if sr is not None and transformer.loras:
        print("the super-resolution stage runs without the LoRAs (they are for the base transformer)")
    models.decodes = ranks is None or ranks.is_main
    frames = job.render(models, request, args, device)
    if frames is None:  # a rank other than 0: its share is sampled, rank 0 writes the video
        return 0
    path = _write_whole(frames, Path(args.output), args.fps)
    ranks_text = f" on {ranks.world} ranks" if ranks is not None else ""
    print(f"wrote {path} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) in "
          f"{time.perf_counter() - started:.1f} s{ranks_text}")
    if demo:
        print(DEMO_NOTICE)
    return 0


def _split(args, ranks, checked, transformer):
    """The base transformer with its --lora choices, split over the ranks as soon as it is loaded."""
    return split_transformer(args, ranks, checked(transformer), args.cfg_parallel)


def _with_loras(args, loras: list, transformer):
    """The loaded transformer with its --lora choices (the samplers apply them for each run), checked against its
    model as soon as it is loaded: a LoRA that fits nothing stops the command before the other models load."""
    if not loras:
        return transformer
    say = partial(print, flush=True)
    return dataclasses.replace(transformer, loras=choose_loras(args, loras, transformer.model, say))


def _write_whole(frames, path: Path, fps: float) -> Path:
    """Write under a temporary name beside `path`, then rename: an interrupted run leaves no short
    video under the final name and never replaces an existing one."""
    from ..video.video_io import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write_mp4(frames, partial, fps)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def run(argv=None) -> int:
    """`main` as a command: Ctrl-C at any point is one line and status 130; a model that fails to load is one line
    (status 1); a pickled transformer that is not the job's model, and a --lora that is not a LoRA of the loaded
    transformer's family, are refused as bad options (status 2)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no video written", file=sys.stderr)
        return 130
    except OptionError as e:  # found once loaded: a pickled transformer not the job's model, a LoRA that fits nothing
        if reports_misuse():
            print(f"{PROG}: error: {e} (see --help)", file=sys.stderr)
        return 2
    except ValueError as e:  # CheckpointError included: a file that passed the header check but does not load
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
