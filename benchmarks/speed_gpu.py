"""Speed on a CUDA GPU at the real sizes: the 13B T2V transformer (random weights, bf16) built on `meta` from
the real checkpoint layout, then materialised on the GPU; ours per setting against plain diffusers.

    python3 benchmarks/speed_gpu.py                                   # 960x544x129 and 1280x720x129
    python3 benchmarks/speed_gpu.py --sizes 1280x720x129 --steps 3 --settings diffusers,off,auto
    python3 benchmarks/speed_gpu.py --smoke                           # the same code on the CPU, toy sizes

Prints per size: seconds per step and peak GPU memory for plain diffusers `HunyuanVideoPipeline` and
for our sampler per setting, the ratio to diffusers and to the FLOP ideal, then each attention
kernel's achieved TFLOP/s on the real joint-attention shape (padded+masked vs trimmed). A setting whose
kernel is not installed here is reported as such, not measured again as SDPA. Without CUDA (and without
--smoke) it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import PACK_ROOT  # noqa: E402
from _pack import pipelines as _import  # noqa: E402

LAYOUTS = PACK_ROOT.parent / "shared" / "comfy" / "checkpoint_layouts.json"
TEXT_TOKENS, PROMPT_TOKENS = 256, 40  # padded length, and a typical real prompt's tokens
SPEC_TFLOPS = 790.0  # sustained bf16 dense TFLOP/s of an H100 that SPEC §7's ideal assumes
SETTINGS = {  # key: (title, speed options; None for plain diffusers)
    "diffusers": ("plain diffusers HunyuanVideoPipeline", None),
    "off": ("ours, every feature off (masked, as diffusers)", dict(attention="masked")),
    "sdpa": ("ours, mask-free sdpa", dict(attention="sdpa")),
    "auto": ("ours, mask-free auto (flash if installed)", dict(attention="auto")),
    "sage": ("ours, mask-free sage", dict(attention="sage")),
    "compile": ("ours, mask-free auto + compile", dict(attention="auto", compile=True)),
}


def real_config(layouts: Path) -> dict:
    shapes = {k: tuple(v) for k, v in json.loads(layouts.read_text())["files"]["hunyuan_video_t2v_720p_bf16"].items()}
    return _import("hunyuan_video_13b.transformer_loading").derive_config(shapes, "t2v")


def smoke_config() -> dict:
    config = real_config(LAYOUTS)
    config.update(num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1, text_embed_dim=32,
                  pooled_projection_dim=16, rope_axes_dim=_import("hunyuan_video_13b.transformer_loading").rope_axes_for(10))
    return config


def build_model(config: dict, device, dtype):
    """The transformer built on `meta` (no memory), then given uninitialised storage on `device` and random values."""
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config).to(dtype)  # cast on meta: no fp32 copy on the GPU
    model = model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.02, generator=generator)
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.zero_()
    return model.eval()


def flops_per_step(config: dict, video_tokens: int, text_tokens: int) -> float:
    """Matmul FLOPs of one transformer call: 2 per weight per token in the blocks, plus QK^T and PV."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = int(hidden * config["mlp_ratio"])
    tokens = video_tokens + text_tokens
    double = 2 * (4 * hidden * hidden + 2 * hidden * mlp) * tokens  # both streams: qkv+out and the MLP
    single = 2 * (3 * hidden * hidden + hidden * mlp + (hidden + mlp) * hidden) * tokens
    attention = 4 * tokens * tokens * hidden
    return config["num_layers"] * (double + attention) + config["num_single_layers"] * (single + attention)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else float("nan")


def _peak_reserved_gb(device) -> float:
    """What the allocator held at its peak: includes dropped tensors still in use by queued work."""
    return torch.cuda.max_memory_reserved() / 2**30 if torch.device(device).type == "cuda" else float("nan")


def attention_tflops(config: dict, tokens: int, device, dtype, repeats: int = 5) -> list[tuple[str, float]]:
    """Achieved TFLOP/s of the joint attention at the real shape, per usable backend."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    attention = _import("speed.attention")
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    rows = []
    for label, requested, padded in [
        ("masked (diffusers: padded text + mask)", "masked", True),
        ("sdpa, trimmed", "sdpa", False),
        ("flash, trimmed", "flash", False),
        ("sage, trimmed", "sage", False),
    ]:
        choice = attention.choose_backend(requested, device, dtype)
        if choice.notice:
            rows.append((f"{label}: {choice.notice}", float("nan")))
            continue
        length = tokens - PROMPT_TOKENS + TEXT_TOKENS if padded else tokens
        q, k, v = (torch.randn(1, length, heads, head_dim, device=device, dtype=dtype) for _ in range(3))
        mask = None
        if padded:
            mask = torch.ones(1, 1, 1, length, dtype=torch.bool, device=device)
            mask[..., tokens:] = False
        backend = AttentionBackendName(choice.dispatcher_name or "native")
        dispatch_attention_fn(q, k, v, attn_mask=mask, backend=backend)
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            dispatch_attention_fn(q, k, v, attn_mask=mask, backend=backend)
        _sync(device)
        seconds = (time.perf_counter() - started) / repeats
        useful = 4 * tokens * tokens * heads * head_dim  # the work a trimmed call does; padding is waste
        rows.append((label, useful / seconds / 1e12))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="960x544x129,1280x720x129", help="WxHxF, comma separated")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up step)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--layouts", type=Path, default=LAYOUTS)
    parser.add_argument("--peak-tflops", type=float, default=SPEC_TFLOPS, help="for the FLOP ideal")
    parser.add_argument("--smoke", action="store_true", help="run the same code on the CPU with a toy model")
    args = parser.parse_args(argv)
    keys = args.settings.split(",")
    unknown = set(keys) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {', '.join(sorted(unknown))}; choose from {', '.join(SETTINGS)}")
    if args.smoke:
        device, dtype, config, sizes = "cpu", torch.float32, smoke_config(), [(64, 32, 5)]
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (the GPU figures in RESULTS.md stay 'planned')")
        return 0
    else:
        device, dtype, config = "cuda", torch.bfloat16, real_config(args.layouts)
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    t2v = _import("hunyuan_video_13b.t2v")
    speed = _import("speed.options")
    set_compiled = _import("speed.compile").set_compiled
    attention = _import("speed.attention")
    LoadedTransformer = _import("hunyuan_video_13b.transformer_loading").LoadedTransformer
    TextEmbeds = _import("hunyuan_video_13b.prompt_encoding").TextEmbeds

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run, toy model)"
    model = build_model(config, device, dtype)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"{name}; T2V transformer {billions:.2f}B parameters, random weights, {dtype}; {args.steps} timed steps")
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.int64)
    mask[:, :PROMPT_TOKENS] = 1
    embeds = TextEmbeds(
        torch.randn(1, TEXT_TOKENS, config["text_embed_dim"], generator=generator), mask,
        torch.randn(1, config["pooled_projection_dim"], generator=generator),
    ).to(device, dtype)
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=model, vae=None,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)

    for width, height, frames in sizes:
        video_tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
        ideal = flops_per_step(config, video_tokens, PROMPT_TOKENS) / (args.peak_tflops * 1e12)
        print(f"\n{width}x{height}x{frames}: {video_tokens} video tokens + {PROMPT_TOKENS} prompt tokens; "
              f"FLOP ideal {ideal:.2f} s/step at {args.peak_tflops:g} TFLOP/s")

        def diffusers_run(steps):
            set_compiled(model, False)  # the previous size's last setting left the blocks compiled
            pipe(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled,
                 prompt_attention_mask=embeds.attention_mask, height=height, width=width, num_frames=frames,
                 num_inference_steps=steps, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
                 output_type="latent")

        def ours_run(options):
            def run(steps):
                request = t2v.T2VRequest(width=width, height=height, num_frames=frames, steps=steps, seed=0)
                transformer = LoadedTransformer(model, "t2v", "bench", speed.SpeedOptions(**options))
                t2v.generate_t2v(transformer, embeds, request, device=device)
            return run

        baseline = None
        print(f"{'setting':56} {'s/step':>8} {'x diffusers':>12} {'x ideal':>8} {'peak GB':>8} {'reserved':>9}")
        with torch.no_grad():
            for key in keys:
                title, options = SETTINGS[key]
                if options is not None and attention.choose_backend(options.get("attention", "masked"), device,
                                                                    dtype).notice:
                    print(f"{title:56} not installed here: not measured", flush=True)
                    continue
                run = diffusers_run if options is None else ours_run(options)
                run(1)  # warm-up: kernels chosen, compile done
                _reset_peak(device)
                _sync(device)
                started = time.perf_counter()
                run(args.steps)
                _sync(device)
                per_step = (time.perf_counter() - started) / args.steps
                baseline = per_step if key == "diffusers" else baseline
                ratio = f"{per_step / baseline:12.3f}" if baseline else f"{'-':>12}"
                print(f"{title:56} {per_step:8.2f} {ratio} {per_step / ideal:8.2f} "
                      f"{_peak_gb(device):8.1f} {_peak_reserved_gb(device):9.1f}", flush=True)
        speed_tokens = video_tokens + PROMPT_TOKENS
        print(f"joint attention, {speed_tokens} tokens, {config['num_attention_heads']} heads x "
              f"{config['attention_head_dim']}: achieved TFLOP/s (useful work)")
        for label, tflops in attention_tflops(config, speed_tokens, device, dtype):
            print(f"  {label:44} {tflops:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
