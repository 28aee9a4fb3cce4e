"""The main job from the command line: render a text-to-video clip to an .mp4.

    python3 -m pipelines.render --output clip.mp4                       # tiny built-in model, CPU, seconds
    python3 -m pipelines.render --diffusers /models/HunyuanVideo --prompt "..." --output clip.mp4
    python3 -m pipelines.render --transformer t2v.safetensors --vae vae.safetensors \
        --llm llava_llama3_fp8_scaled.safetensors --clip clip_l.safetensors --tokenizers ./tokenizers ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import tiny
from .decoding import TilingOptions, decode_latents
from .offload import MemoryOptions, parse_offload
from .prompt_encoding import encode_prompt
from .sampling_memory import plan_sampling, text_encoders_on_device, transformer_on_device
from .t2v import T2VRequest, generate_t2v
from .text_encoder_loading import load_text_encoders_from_files, load_text_encoders_from_folder
from .tiny_transformer import tiny_transformer
from .transformer_loading import DTYPES, WEIGHT_DTYPES, LoadedTransformer, load_transformer
from .vae_loading import load_vae
from .video_io import write_mp4

DEMO_NOTICE = (
    "DEMO: no model was given, so this ran a tiny random-weight model of the HunyuanVideo architecture on the CPU.\n"
    "      It proves the install works end to end; the video is noise, not a real clip."
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m pipelines.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="hunyuan_video.mp4", help="the .mp4 to write")
    parser.add_argument("--prompt", default="A cat walks on the grass, realistic style.")
    parser.add_argument("--negative-prompt", default="", help="used only with --cfg above 1")
    parser.add_argument("--diffusers", help="a diffusers-format HunyuanVideo folder (all components)")
    parser.add_argument("--transformer", help="transformer file (authors' layout) or diffusers folder")
    parser.add_argument("--vae", help="VAE file or diffusers vae folder")
    parser.add_argument("--llm", help="Llama/LLaVA text encoder file (ComfyUI layout)")
    parser.add_argument("--clip", help="CLIP-L file (ComfyUI layout)")
    parser.add_argument("--tokenizers", help="folder with llama_tokenizer/ and clip_tokenizer/ (for --llm/--clip)")
    parser.add_argument("--variant", default="auto")
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="VAE and text encoders")
    parser.add_argument("--weight-dtype", default="auto", choices=WEIGHT_DTYPES,
                        help="transformer storage: auto keeps fp8 files fp8; fp8_e4m3fn stores a bf16 file's blocks in fp8")
    parser.add_argument("--offload", default="auto", type=parse_offload,
                        help="auto (planner), off (all on the GPU) or the number of transformer blocks kept on the GPU")
    parser.add_argument("--fp8-matmul", default="off", choices=("off", "auto"),
                        help="fp8 matmuls for fp8-stored blocks on GPUs that have them (compute capability 8.9+)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float, default=6.0, help="embedded guidance")
    parser.add_argument("--cfg", type=float, default=1.0, help="true CFG scale (1 = off)")
    parser.add_argument("--shift", type=float, default=7.0, help="flow shift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=24.0)
    return parser.parse_args(argv)


def _demo_models():
    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    text_dim = encoders.llm.config.hidden_size
    pooled_dim = encoders.clip.config.hidden_size
    model = tiny_transformer(text_dim, pooled_dim, vae.config.latent_channels, seed=0)
    return LoadedTransformer(model=model, variant="t2v", source="tiny demo"), vae, encoders


def _real_models(args, dtype):
    if args.diffusers:
        root = Path(args.diffusers)
        transformer = load_transformer(root, variant=args.variant, dtype=args.weight_dtype)
        return transformer, load_vae(str(root / "vae"), dtype=dtype), load_text_encoders_from_folder(str(root), dtype=dtype)
    missing = [name for name in ("transformer", "vae", "llm", "clip", "tokenizers") if not getattr(args, name)]
    if missing:
        raise SystemExit(f"give --diffusers, or all of --transformer --vae --llm --clip --tokenizers (missing: {', '.join('--' + m for m in missing)})")
    tokenizers = Path(args.tokenizers)
    encoders = load_text_encoders_from_files(
        args.llm, args.clip, str(tokenizers / "llama_tokenizer"), str(tokenizers / "clip_tokenizer"), dtype=dtype
    )
    transformer = load_transformer(args.transformer, variant=args.variant, dtype=args.weight_dtype)
    return transformer, load_vae(args.vae, dtype=dtype), encoders


def main(argv=None) -> int:
    args = parse_args(argv)
    demo = not (args.diffusers or args.transformer)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not demo else "cpu"))
    defaults = (128, 128, 9, 4) if demo else (960, 544, 129, 50)
    request = T2VRequest(
        width=args.width or defaults[0], height=args.height or defaults[1], num_frames=args.frames or defaults[2],
        steps=args.steps or defaults[3], embedded_guidance=args.guidance, true_cfg=args.cfg, flow_shift=args.shift,
        seed=args.seed,
    )
    request.validate()
    started = time.perf_counter()
    transformer, vae, encoders = _demo_models() if demo else _real_models(args, DTYPES[args.dtype])
    print(f"loaded {transformer.source} ({transformer.variant}) in {time.perf_counter() - started:.1f} s", flush=True)

    transformer.memory = MemoryOptions(offload=args.offload, fp8_compute=args.fp8_matmul)
    plan = plan_sampling(transformer, request.width, request.height, request.num_frames, request.batch_size, device)
    if plan is not None:
        print(plan.describe(), flush=True)
    with text_encoders_on_device(encoders, device):
        positive = encode_prompt(encoders, args.prompt, device)
        negative = encode_prompt(encoders, args.negative_prompt, device) if args.cfg > 1 else None

    print(f"sampling {request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps on {device}", flush=True)
    with transformer_on_device(transformer, device, plan):
        latents = generate_t2v(
            transformer, positive, request, negative=negative, device=device,
            on_step=lambda done, total: print(f"  step {done}/{total}", flush=True),
        )
    vae.to(device)
    tiling = TilingOptions(tile_size=plan.decode_tile) if plan is not None else TilingOptions()
    frames = decode_latents(vae, latents, tiling)[0]
    path = write_mp4(frames, args.output, args.fps)
    print(f"wrote {path} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) in {time.perf_counter() - started:.1f} s")
    if demo:
        print(DEMO_NOTICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
