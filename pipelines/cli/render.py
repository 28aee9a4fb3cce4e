"""The main job from the command line: render a text-to-video clip to an .mp4.

    python3 -m pipelines.render --output outputs/clip.mp4              # tiny built-in model, CPU, seconds
    python3 -m pipelines.render --diffusers /models/HunyuanVideo --prompt "..." --output clip.mp4
    python3 -m pipelines.render --transformer t2v.safetensors --vae vae.safetensors \
        --llm llava_llama3_fp8_scaled.safetensors --clip clip_l.safetensors --tokenizers ./tokenizers ...
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from .options import DEFAULT_DTYPE, DEMO_DEFAULTS, MODEL_DEFAULTS, build_parser, check_options, is_demo

DEMO_NOTICE = (
    "DEMO: no model was given, so this ran a tiny random-weight model of the HunyuanVideo architecture on the CPU.\n"
    "      It proves the install works end to end; the video is noise, not a real clip."
)
PROG = "python3 -m pipelines.render"


def parse_args(argv=None):
    """The options, checked: a bad one exits with status 2 and one line, before any model loads."""
    parser = build_parser(PROG, __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    check_options(parser, args)
    args.device = _check_device(parser, args.device)
    return args


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


def _demo_models():
    from ..demo import tiny
    from ..demo.tiny_transformer import tiny_transformer
    from ..hunyuan_video_13b.transformer_loading import LoadedTransformer

    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    text_dim = encoders.llm.config.hidden_size
    pooled_dim = encoders.clip.config.hidden_size
    model = tiny_transformer(text_dim, pooled_dim, vae.config.latent_channels, seed=0)
    return LoadedTransformer(model=model, variant="t2v", source="tiny demo"), vae, encoders


def _real_models(args, dtype):
    """The models the (already checked) options name."""
    from ..hunyuan_video_13b.text_encoder_loading import load_text_encoders_from_files, load_text_encoders_from_folder
    from ..hunyuan_video_13b.transformer_loading import load_transformer
    from ..hunyuan_video_13b.vae_loading import load_vae

    variant, weight_dtype = args.variant or "auto", args.weight_dtype or "auto"
    if args.diffusers:
        root = Path(args.diffusers)
        transformer = load_transformer(root, variant=variant, dtype=weight_dtype)
        return transformer, load_vae(str(root / "vae"), dtype=dtype), load_text_encoders_from_folder(str(root), dtype=dtype)
    tokenizers = Path(args.tokenizers)
    encoders = load_text_encoders_from_files(
        args.llm, args.clip, str(tokenizers / "llama_tokenizer"), str(tokenizers / "clip_tokenizer"), dtype=dtype
    )
    transformer = load_transformer(args.transformer, variant=variant, dtype=weight_dtype)
    return transformer, load_vae(args.vae, dtype=dtype), encoders


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from ..hunyuan_video_13b.prompt_encoding import T2V_NEGATIVE_PROMPT, encode_prompt
    from ..hunyuan_video_13b.t2v import T2VRequest, generate_t2v
    from ..hunyuan_video_13b.transformer_loading import DTYPES
    from ..memory.offload import MemoryOptions
    from ..memory.sampling_memory import plan_sampling, text_encoders_on_device, transformer_on_device
    from ..speed.options import SpeedOptions
    from ..video.decoding import TilingOptions, decode_latents

    demo = is_demo(args)
    device = args.device or torch.device("cuda" if torch.cuda.is_available() and not demo else "cpu")
    defaults = DEMO_DEFAULTS if demo else MODEL_DEFAULTS
    size = {name: defaults[name] if getattr(args, name) is None else getattr(args, name) for name in defaults}
    request = T2VRequest(
        width=size["width"], height=size["height"], num_frames=size["frames"], steps=size["steps"],
        embedded_guidance=args.guidance, true_cfg=args.cfg, flow_shift=args.shift, seed=args.seed, riflex=args.riflex,
    )
    request.validate()
    started = time.perf_counter()
    transformer, vae, encoders = _demo_models() if demo else _real_models(args, DTYPES[args.dtype or DEFAULT_DTYPE])
    transformer = dataclasses.replace(
        transformer, speed=SpeedOptions(args.attention, args.cache, args.cache_threshold, args.compile),
        memory=MemoryOptions(offload=args.offload, fp8_compute=args.fp8_matmul),
    )
    print(f"loaded {transformer.source} ({transformer.variant}) in {time.perf_counter() - started:.1f} s", flush=True)

    plan = plan_sampling(transformer, request.width, request.height, request.num_frames, request.batch_size, device)
    if plan is not None:
        print(plan.describe(), flush=True)
    with text_encoders_on_device(encoders, device):
        positive = encode_prompt(encoders, args.prompt, device)
        negative_prompt = args.negative_prompt.strip() or T2V_NEGATIVE_PROMPT  # the authors' default, as theirs
        negative = encode_prompt(encoders, negative_prompt, device) if args.cfg > 1 else None

    print(f"sampling {request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps on {device}", flush=True)
    with transformer_on_device(transformer, device, plan):
        latents = generate_t2v(
            transformer, positive, request, negative=negative, device=device,
            on_step=lambda done, total: print(f"  step {done}/{total}", flush=True),
            on_info=lambda text: print(text, flush=True),
        )
    vae.to(device)
    tiling = TilingOptions(tile_size=plan.decode_tile) if plan is not None else TilingOptions()
    frames = decode_latents(vae, latents, tiling)[0]
    path = _write_whole(frames, Path(args.output), args.fps)
    print(f"wrote {path} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) in {time.perf_counter() - started:.1f} s")
    if demo:
        print(DEMO_NOTICE)
    return 0


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
    """`main` as a command: Ctrl-C at any point is one line and status 130; a model that fails to load is one line."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no video written", file=sys.stderr)
        return 130
    except ValueError as e:  # CheckpointError included: a file that passed the header check but does not load
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
