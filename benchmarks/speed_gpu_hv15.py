"""Speed and peak memory on a CUDA GPU at the real sizes: the HunyuanVideo 1.5 transformer (8.3B, diffusers'
default config, random bf16 weights) built on `meta` and materialised on the GPU; ours per setting against
plain diffusers `HunyuanVideo15Pipeline`.

    python3 benchmarks/speed_gpu_hv15.py --sizes 848x480x121      # every setting (~5 minutes by FLOP count)
    python3 benchmarks/speed_gpu_hv15.py --sizes 1280x720x121 --settings diffusers,defaults
    python3 benchmarks/speed_gpu_hv15.py --sizes 1280x720x121 --settings sequential,first_block,teacache_fast,offload
    python3 benchmarks/speed_gpu_hv15.py --smoke                  # the same code on the CPU, toy model

Each setting runs one warm-up step, then --steps timed steps (a warm-up step slower than --slow-s is reported
alone, so one slow setting cannot use up a 600 s command). Prints per size and setting: seconds per step, the
ratio to diffusers, transformer calls per step, and the peak GPU memory, allocated and reserved (reserved also
holds what queued work still uses, such as dropped block copies). diffusers' 1.5 attention builds a dense
[B, 1, L, L] mask (about 13 GB at 720p x 121, and SDPA then runs its slower masked kernels): a setting that
runs out of memory is reported as such and the others go on. The context is the real encoders' padded
lengths: Qwen 1000 x 3584 (100 valid; the negative 20), byT5 256 x 1472 (none valid), SigLIP 729 x 1152 zeros
(T2V). "offload" plans as if --offload-gb were free (weights kept bf16) and prints the planner's estimate next
to the measured peak. On random weights the caches skip what they skip in --steps steps, not what they skip
on the real model over 50. Without CUDA (and without --smoke) it says so and exits.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import pipelines as _import  # noqa: E402
from speed_cpu import _skipped  # noqa: E402
from speed_cpu_hv15 import BYT5_TOKENS, NEGATIVE_TOKENS, POSITIVE_TOKENS, QWEN_TOKENS, prompt_embeds  # noqa: E402

SETTINGS = {  # key: (title, speed options, CFG batched)
    "diffusers": ("plain diffusers HunyuanVideo15Pipeline (masked)", None, False),
    "defaults": ("ours, defaults (mask-free auto, CFG batched)", {}, True),
    "sequential": ("ours, mask-free auto, CFG sequential", {}, False),
    "first_block": ("ours, defaults + first_block cache", {"cache": "first_block"}, True),
    "teacache_fast": ("ours, defaults + teacache_fast", {"cache": "teacache_fast"}, True),
    "offload": ("ours, offload auto, CFG sequential", {}, False),
}
SMOKE = dict(num_attention_heads=2, attention_head_dim=24, num_layers=2, num_refiner_layers=1, text_embed_dim=32,
             text_embed_2_dim=24, rope_axes_dim=_import("hunyuan_video_15.transformer_loading").rope_axes_for(24))


def build_model(config: dict, device, dtype):
    """The transformer built on `meta` (no memory), then given uninitialised storage on `device` and random values."""
    from diffusers import HunyuanVideo15Transformer3DModel

    with torch.device("meta"):
        model = HunyuanVideo15Transformer3DModel(**config).to(dtype)  # cast on meta: no fp32 copy on the GPU
    model = model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.02, generator=generator)
            elif name.endswith("weight"):  # norm scales
                param.fill_(1.0)
            else:
                param.zero_()
    _import("hunyuan_video_15.transformer_loading").keep_timesteps_exact(model)
    return model.eval()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    """Nothing queued, nothing cached: the peak that follows is the next run's own."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peaks(device) -> str:
    if torch.device(device).type != "cuda":
        return f"{'n/a':>8} {'n/a':>9}"
    return f"{torch.cuda.max_memory_allocated() / 2**30:8.1f} {torch.cuda.max_memory_reserved() / 2**30:9.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="848x480x121,1280x720x121", help="WxHxF, comma separated")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up step)")
    parser.add_argument("--slow-s", type=float, default=90.0, help="report a slower warm-up step alone")
    parser.add_argument("--offload-gb", type=float, default=12.0, help="free GPU memory the offload setting plans for")
    parser.add_argument("--smoke", action="store_true", help="run the same code on the CPU with a toy model")
    args = parser.parse_args(argv)
    keys = args.settings.split(",")
    unknown = set(keys) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {', '.join(sorted(unknown))}; choose from {', '.join(SETTINGS)}")
    if args.smoke:
        device, dtype, config, sizes = "cpu", torch.float32, SMOKE, [(64, 48, 5)]
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (the GPU figures in RESULTS.md stay 'planned')")
        return 0
    else:
        device, dtype, config = "cuda", torch.bfloat16, {}
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline

    sampling = _import("hunyuan_video_15.sampling")
    LoadedTransformer15 = _import("hunyuan_video_15.transformer_loading").LoadedTransformer15
    Variant = _import("hunyuan_video_15.variants").Variant
    SpeedOptions = _import("speed.options").SpeedOptions
    MemoryOptions = _import("memory.offload").MemoryOptions
    memory = _import("memory.sampling_memory")
    vram_planner = _import("memory.vram_planner")
    initial_noise = _import("denoise.flow_matching").initial_noise
    attention = _import("speed.attention")

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run, toy model, no figures)"
    model = build_model(config, device, dtype)
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    kernel = attention.choose_backend("auto", device, dtype).title
    print(f"{name}; HV1.5 transformer {billions:.2f}B parameters, random weights, {dtype}; mask-free attention "
          f"'auto' here: {kernel}; 1 warm-up + {args.steps} timed steps per setting")
    context_tokens = _import("hunyuan_video_15.text_embeds").SIGLIP_TOKENS + BYT5_TOKENS + QWEN_TOKENS
    text_dim, byt5_dim = model.config.text_embed_dim, model.config.text_embed_2_dim
    positive = prompt_embeds(POSITIVE_TOKENS, 1, text_dim, byt5_dim).to(device, dtype)
    negative = prompt_embeds(NEGATIVE_TOKENS, 2, text_dim, byt5_dim).to(device, dtype)

    for width, height, frames in sizes:
        variant = Variant("720p_t2v" if height >= 720 else "480p_t2v")
        recipe = variant.recipe
        request = sampling.Request15(width=width, height=height, num_frames=frames, cfg=recipe.cfg,
                                     flow_shift=recipe.flow_shift)
        video_tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
        print(f"\n{width}x{height}x{frames} ({variant.name} recipe: cfg {recipe.cfg:g}, shift {recipe.flow_shift:g}): "
              f"{video_tokens} video tokens + {context_tokens} context tokens ({POSITIVE_TOKENS} valid, negative "
              f"{NEGATIVE_TOKENS})")
        noise = initial_noise(request.latent_shape(), 0)
        pipe = HunyuanVideo15Pipeline(
            text_encoder=None, tokenizer=None, transformer=model,
            vae=_import("demo.hv15_vae").tiny_vae15().to(device),  # read for its scale factors only
            scheduler=FlowMatchEulerDiscreteScheduler(shift=recipe.flow_shift), text_encoder_2=None, tokenizer_2=None,
            guider=ClassifierFreeGuidance(guidance_scale=recipe.cfg),
        )
        pipe.set_progress_bar_config(disable=True)

        def diffusers_run(steps, info):
            pipe(prompt_embeds=positive.qwen, prompt_embeds_mask=positive.qwen_mask, prompt_embeds_2=positive.byt5,
                 prompt_embeds_mask_2=positive.byt5_mask, negative_prompt_embeds=negative.qwen,
                 negative_prompt_embeds_mask=negative.qwen_mask, negative_prompt_embeds_2=negative.byt5,
                 negative_prompt_embeds_mask_2=negative.byt5_mask, height=height, width=width, num_frames=frames,
                 num_inference_steps=steps, latents=noise.clone(), output_type="latent", return_dict=False)

        def ours_run(transformer, batch_cfg):
            def run(steps, info):
                request.steps, request.batch_cfg = steps, batch_cfg
                sampling.generate(transformer, positive, negative, request, device=device, on_info=info.append)
            return run

        baseline = None
        print(f"{'setting':48} {'s/step':>8} {'x diffusers':>12} {'calls/step':>10} {'peak GB':>8} {'reserved':>9}")
        for key in keys:
            title, options, batch_cfg = SETTINGS[key]
            if options is None:
                per_step, line = measure(diffusers_run, args, device, calls)
            else:
                transformer = LoadedTransformer15(model, variant, "bench", SpeedOptions(**options),
                                                  MemoryOptions(offload="auto"), weight_dtype="bf16")
                run = ours_run(transformer, batch_cfg)
                if key != "offload":
                    per_step, line = measure(run, args, device, calls)
                else:
                    title = f"{title} ({args.offload_gb:g} GB free)"
                    free = int(args.offload_gb * vram_planner.GiB)
                    try:  # weight_dtype bf16: the planner may not store the blocks in fp8 (that would stay)
                        plan = memory.plan_sampling(transformer, width, height, frames, 1, device, free)
                    except vram_planner.DoesNotFit as refusal:
                        print(f"{title:48} refused by the planner: {refusal}")
                        continue
                    with memory.transformer_on_device(transformer, device, plan, home=device):
                        per_step, line = measure(run, args, device, calls)
                    line += f" | {plan.describe()}; estimate {plan.sampling_bytes / 2**30:.1f} GiB"
            baseline = per_step if key == "diffusers" else baseline
            ratio = f"{per_step / baseline:12.3f}" if per_step is not None and baseline else f"{'-':>12}"
            shown = f"{per_step:8.2f}" if per_step is not None else f"{'-':>8}"
            print(f"{title:48} {shown} {ratio} {line}", flush=True)
    return 0


def measure(run, args, device, calls) -> tuple[float | None, str]:
    """(seconds per step or None, the rest of the row): a warm-up step, then `args.steps` timed ones."""
    info = []
    try:
        with torch.no_grad():
            _reset_peak(device)
            calls.clear()
            started = time.perf_counter()
            run(1, info)  # warm-up: kernels chosen, workspaces allocated
            _sync(device)
            warm_up = time.perf_counter() - started
            steps, note = 1, " (warm-up step only: slower than --slow-s)"
            if warm_up <= args.slow_s:
                _reset_peak(device)
                calls.clear()
                started = time.perf_counter()
                run(args.steps, info)
                _sync(device)
                steps, note = args.steps, ""
                per_step = (time.perf_counter() - started) / steps
            else:
                per_step = warm_up
    except torch.OutOfMemoryError as error:
        return None, f"{'-':>10} {_peaks(device)} out of memory: {str(error).splitlines()[0][:120]}"
    skipped = _skipped(info[-1]) if info else 0
    return per_step, f"{(len(calls) - skipped) / steps:10.2f} {_peaks(device)}{note}"


if __name__ == "__main__":
    sys.exit(main())
