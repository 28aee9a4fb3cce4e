"""Speed on the CPU: our HunyuanVideo 1.5 T2V sampler against plain diffusers `HunyuanVideo15Pipeline`, same
weights, same embeds, same starting noise, same process.

    python3 benchmarks/speed_cpu_hv15.py            # ~8 minutes on a 2-core machine
    python3 benchmarks/speed_cpu_hv15.py --quick    # fewer repeats, for a smoke run

First checks that our sampler with every speed feature off (diffusers' masked attention, no cache, one
call per CFG branch) gives diffusers' latents (ours x 1.03682, the VAE scaling diffusers' latent output
keeps), and stops if not. Then prints, per setting: CPU seconds per step (process time, one thread: robust
on a shared machine; the settings run interleaved, every other round in reverse order), its ratio to plain
diffusers (the median over rounds of the ratio within a round), wall seconds per step, the peak
resident-memory rise while sampling, and transformer calls per step (2 with the CFG branches one after
the other, 1 with them batched, fewer where a cache skips); then the cache presets at 50 steps. A small
random-weight model of the real architecture (the real 729 SigLIP, 256 byT5 and 1000 Qwen context tokens,
padded as the real encoders pad them) stands in for the 8.3B one, so the cache skip counts are what the
presets do on random weights, not on the real model (see RESULTS.md).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import cpu_benchmark_args  # noqa: E402
from _pack import pipelines as _import  # noqa: E402
from speed_cpu import PeakRSS, _skipped  # noqa: E402

QWEN_TOKENS, BYT5_TOKENS = 1000, 256  # the real encoders' padded lengths (diffusers' tokenizer max lengths)
POSITIVE_TOKENS, NEGATIVE_TOKENS = 100, 20  # valid Qwen tokens of a typical prompt and of a short negative
TEXT_DIM, BYT5_DIM = 64, 64  # small stand-ins for 3584 and 1472 (SigLIP stays 1152: the sampler's T2V zeros)
SCALING = 1.03682  # diffusers' latent output is ours x the VAE scaling factor


def small_transformer15(seed: int = 0):
    """The real block structure at a size a CPU runs in tens of milliseconds per call: 4 heads x 32, 2 double
    blocks, 1 refiner block, diffusers' default initialisation."""
    from diffusers import HunyuanVideo15Transformer3DModel

    loading = _import("hunyuan_video_15.transformer_loading")
    torch.manual_seed(seed)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=65, out_channels=32, num_attention_heads=4, attention_head_dim=32, num_layers=2,
        num_refiner_layers=1, text_embed_dim=TEXT_DIM, text_embed_2_dim=BYT5_DIM, image_embed_dim=1152,
        rope_axes_dim=loading.rope_axes_for(32),
    ).eval()
    loading.keep_timesteps_exact(model)
    return model


def prompt_embeds(valid: int, seed: int, text_dim: int = TEXT_DIM, byt5_dim: int = BYT5_DIM):
    """Random Qwen states with `valid` real tokens of QWEN_TOKENS, and an empty byT5 input (no quoted text)."""
    TextEmbeds15 = _import("hunyuan_video_15.text_embeds").TextEmbeds15
    generator = torch.Generator().manual_seed(seed)
    return TextEmbeds15(
        qwen=torch.randn(1, QWEN_TOKENS, text_dim, generator=generator),
        qwen_mask=(torch.arange(QWEN_TOKENS) < valid).long()[None],
        byt5=torch.zeros(1, BYT5_TOKENS, byt5_dim),
        byt5_mask=torch.zeros(1, BYT5_TOKENS, dtype=torch.int64),
    )


def main(argv=None) -> int:
    args = cpu_benchmark_args(__doc__, argv)
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline

    sampling = _import("hunyuan_video_15.sampling")
    LoadedTransformer15 = _import("hunyuan_video_15.transformer_loading").LoadedTransformer15
    Variant = _import("hunyuan_video_15.variants").Variant
    Options = _import("speed.options").SpeedOptions
    initial_noise = _import("denoise.flow_matching").initial_noise
    tiny_vae15 = _import("demo.hv15_vae").tiny_vae15

    model = small_transformer15()
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    variant = Variant("480p_t2v")
    recipe = variant.recipe
    positive, negative = prompt_embeds(POSITIVE_TOKENS, 1), prompt_embeds(NEGATIVE_TOKENS, 2)
    width, height, frames, steps = 256, 256, 17, 8
    repeats = 2 if args.quick else 8
    video_tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    print(f"CPU, {torch.get_num_threads()} thread(s); small HV1.5 model (4x32 heads, 2 double blocks); "
          f"{width}x{height}x{frames} = {video_tokens} video tokens + 729 SigLIP (zeros) + {BYT5_TOKENS} byT5 (none "
          f"valid) + {QWEN_TOKENS} Qwen ({POSITIVE_TOKENS} valid; negative {NEGATIVE_TOKENS}) context tokens; cfg "
          f"{recipe.cfg:g}, shift {recipe.flow_shift:g}, {steps} steps, {repeats} interleaved rounds")

    def request(batch_cfg: bool, size=(width, height, frames), count=steps):
        return sampling.Request15(width=size[0], height=size[1], num_frames=size[2], steps=count, cfg=recipe.cfg,
                                  flow_shift=recipe.flow_shift, seed=0, batch_cfg=batch_cfg)

    noise = initial_noise(request(False).latent_shape(), 0)
    pipe = HunyuanVideo15Pipeline(
        text_encoder=None, tokenizer=None, transformer=model, vae=tiny_vae15(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=recipe.flow_shift), text_encoder_2=None, tokenizer_2=None,
        guider=ClassifierFreeGuidance(guidance_scale=recipe.cfg),
    )
    pipe.set_progress_bar_config(disable=True)

    def diffusers_run():
        return pipe(
            prompt_embeds=positive.qwen, prompt_embeds_mask=positive.qwen_mask, prompt_embeds_2=positive.byt5,
            prompt_embeds_mask_2=positive.byt5_mask, negative_prompt_embeds=negative.qwen,
            negative_prompt_embeds_mask=negative.qwen_mask, negative_prompt_embeds_2=negative.byt5,
            negative_prompt_embeds_mask_2=negative.byt5_mask, height=height, width=width, num_frames=frames,
            num_inference_steps=steps, latents=noise.clone(), output_type="latent", return_dict=False,
        )[0]

    def ours(options, batch_cfg, info):
        transformer = LoadedTransformer15(model, variant, "bench", options)
        return lambda: sampling.generate(transformer, positive, negative, request(batch_cfg), on_info=info.append)

    def setting(title, options, batch_cfg):
        info = []
        return title, ours(options, batch_cfg, info), info

    settings = [
        ("plain diffusers HunyuanVideo15Pipeline", diffusers_run, None),
        setting("ours, every feature off (masked, CFG seq.)", Options(attention="masked"), False),
        setting("ours, mask-free (auto), CFG sequential", Options(), False),
        setting("ours, defaults (mask-free auto, CFG batched)", Options(), True),
        setting("ours, masked attention, CFG batched", Options(attention="masked"), True),
        setting("ours, defaults + first_block cache", Options(cache="first_block"), True),
        setting("ours, defaults + teacache_fast", Options(cache="teacache_fast"), True),
    ]
    with torch.no_grad():
        features_off, theirs = settings[1][1](), diffusers_run()
        difference = (features_off * SCALING - theirs).abs().max().item()
        torch.testing.assert_close(features_off * SCALING, theirs, atol=1e-5, rtol=1e-5)
        print(f"check: ours with every feature off x {SCALING} equals diffusers' latents (max |diff| {difference:.1e})")

        cpu_times = {title: [] for title, _, _ in settings}
        wall_times = {title: [] for title, _, _ in settings}
        rises = {title: 0.0 for title, _, _ in settings}
        calls_per_step = {}
        for title, run, _ in settings:
            run()  # warm-up
        for round_index in range(repeats):
            # every other round runs the settings in reverse, so no setting always follows the same one
            for title, run, _ in settings[:: 1 if round_index % 2 == 0 else -1]:
                gc.collect()
                calls.clear()
                with PeakRSS() as memory:
                    wall, cpu = time.perf_counter(), time.process_time()
                    run()
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                cpu_times[title].append(cpu / steps)
                wall_times[title].append(wall / steps)
                rises[title] = max(rises[title], memory.rise_mb)
                calls_per_step[title] = len(calls) / steps
        base = cpu_times[settings[0][0]]
        print(f"{'setting':46} {'cpu s/step':>10} {'x diffusers':>12} {'wall s/step':>11} {'peak RSS rise':>14} "
              f"{'calls/step':>11}")
        for title, _, info in settings:
            # the ratio is the median over rounds of (this setting / diffusers in the same round)
            ratio = statistics.median(mine / theirs for mine, theirs in zip(cpu_times[title], base))
            skipped = 0 if info is None else _skipped(info[-1])
            print(f"{title:46} {min(cpu_times[title]):10.4f} {ratio:12.3f} {min(wall_times[title]):11.4f} "
                  f"{rises[title]:11.1f} MB {calls_per_step[title] - skipped / steps:11.2f}")

        cache_steps = 50
        print(f"\ncache presets at {cache_steps} steps (same model, 128x128x9, mask-free, CFG batched: one call a "
              "step):")
        print(f"{'preset':16} {'threshold':>9} {'calls':>6} {'steps':>6} {'fewer calls':>12} {'cpu time vs off':>16}")
        times = {}
        for preset in ("off", "first_block", "teacache", "teacache_fast"):
            info = []
            transformer = LoadedTransformer15(model, variant, "bench", Options(cache=preset))
            started = time.process_time()
            sampling.generate(transformer, positive, negative, request(True, (128, 128, 9), cache_steps),
                              on_info=info.append)
            times[preset] = time.process_time() - started
            threshold = _import("speed.step_cache").preset_threshold(preset)
            done = cache_steps - _skipped(info[-1])
            print(f"{preset:16} {threshold:9.2f} {done:6d} {cache_steps:6d} {cache_steps / done:11.2f}x "
                  f"{times[preset] / times['off']:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
