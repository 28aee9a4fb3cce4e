"""Peak VRAM and seconds per step per offload setting, real-size T2V on random weights (CUDA only).

    python3 benchmarks/gpu_offload.py [--steps 3] [--weights bf16|fp8] [--sizes 960x544x129,1280x720x129]
    python3 benchmarks/gpu_offload.py --smoke      # the same code on the CPU, toy model (no figures)

The 13B model is built on `meta` from ../shared/comfy/checkpoint_layouts.json, then given random
weights in CPU memory (about 26 GB for bf16, 13 GB for fp8: needs that much RAM). For each setting
(off = all resident, auto = the planner's choice, and fixed resident-block counts) it runs `denoise`
for --steps steps (the first one is a warm-up and not timed) and prints the planner's line, the
measured peak (torch.cuda.max_memory_allocated) next to the planner's estimate, and s/step, with the
slowdown against the fully resident run. Without CUDA (and without --smoke) it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _pack
import torch
from hunyuan_video_suite.pipelines.denoise.flow_matching import SamplingSettings, denoise, initial_noise
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import (
    LoadedTransformer,
    derive_config,
    rope_axes_for,
)
from hunyuan_video_suite.pipelines.memory.offload import MemoryOptions
from hunyuan_video_suite.pipelines.memory.sampling_memory import BLOCK_CONTAINERS, plan_sampling, transformer_on_device
from hunyuan_video_suite.pipelines.memory.vram_planner import DoesNotFit
from hunyuan_video_suite.pipelines.weights.fp8_linear import quantize_linears

SETTINGS = ("off", "auto", 40, 20, 0)


SMOKE = dict(num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=3, text_embed_dim=32,
             pooled_projection_dim=16, rope_axes_dim=rope_axes_for(10))
SMOKE_FREE = 2**40  # the toy model's "card": everything fits, so only the fixed settings offload


def real_size_model(weights: str, smoke: bool = False) -> LoadedTransformer:
    from diffusers import HunyuanVideoTransformer3DModel

    shapes = {k: tuple(v) for k, v in json.loads(_pack.LAYOUTS.read_text())["files"]["hunyuan_video_t2v_720p_bf16"].items()}
    config = {**derive_config(shapes, "t2v"), **(SMOKE if smoke else {})}
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config).to(torch.bfloat16)
    model = model.to_empty(device="cpu")  # bf16 from the start: 26 GB of RAM, never 51 GB of float32
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.bfloat16) * 0.02)
    if weights == "fp8":
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, names, torch.bfloat16)
    return LoadedTransformer(model=model.eval(), variant="t2v", source=f"random {weights}")


def run(transformer, size, setting, steps, device):
    width, height, frames = size
    cuda = device.type == "cuda"
    transformer.memory = MemoryOptions(offload=setting)
    if cuda:
        torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(device)[0] if cuda else SMOKE_FREE
    try:
        plan = plan_sampling(transformer, width, height, frames, 1, device, free)
    except DoesNotFit as refusal:
        return None, f"refused: {refusal}"
    config = transformer.model.config
    embeds = TextEmbeds(torch.randn(1, 256, config.text_embed_dim), torch.ones(1, 256, dtype=torch.int64),
                        torch.randn(1, config.pooled_projection_dim)).to(device, torch.bfloat16)
    latents = initial_noise((1, 16, (frames - 1) // 4 + 1, height // 8, width // 8), 0).to(device)
    times = []
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with transformer_on_device(transformer, device, plan):
        for step in range(steps):
            _sync(device)
            started = time.perf_counter()
            denoise(transformer.model, latents, embeds, None, SamplingSettings(steps=1))
            _sync(device)
            times.append(time.perf_counter() - started)
    if cuda:  # reserved: also what dropped block copies still held while queued work used them
        peak = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved(device) / 2**30:.1f} GiB reserved")
    else:
        peak = "n/a on CPU"
    per_step = sum(times[1:]) / max(len(times) - 1, 1)
    return per_step, f"{plan.describe()} | measured peak {peak}, estimate {plan.sampling_bytes / 2**30:.1f} GiB"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--weights", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--sizes", default="960x544x129,1280x720x129")
    parser.add_argument("--smoke", action="store_true", help="run the same code on the CPU with a toy model")
    args = parser.parse_args()
    if args.smoke:
        device, args.sizes = torch.device("cpu"), "64x32x5"
        print(f"device: CPU (smoke run, toy model, no figures), weights {args.weights}")
    elif not torch.cuda.is_available():
        print("no CUDA device here: this benchmark runs only on a GPU (its figures stay 'planned' until then)")
        return 0
    else:
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(device)}, weights {args.weights}")
    transformer = real_size_model(args.weights, smoke=args.smoke)
    for size_text in args.sizes.split(","):
        size = tuple(int(v) for v in size_text.split("x"))
        baseline = None
        for setting in SETTINGS:
            per_step, line = run(transformer, size, setting, args.steps, device)
            if per_step is None:
                print(f"{size_text} offload={setting}: {line}")
                continue
            baseline = baseline if baseline is not None or setting != "off" else per_step
            ratio = f", {per_step / baseline:.2f}x the resident step" if baseline else ""
            print(f"{size_text} offload={setting}: {per_step:.2f} s/step{ratio} | {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
