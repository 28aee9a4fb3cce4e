"""What the HunyuanVideo 1.5 super-resolution stage costs beyond its transformer calls, on the CPU.

    python3 benchmarks/sr_cpu_hv15.py [--rounds 5]

A small random-weight SR DiT (98 input channels, 2 double blocks of 2 heads x 24) and the tiny 720p latent
upsampler lift a 848x480 base latent of 2 latent frames to 1280x720 with the recipe (6 steps, shift 2), with
the real padded context (1000 Qwen + 256 byT5 + 729 SigLIP tokens). Process time is split into the
transformer's calls (forward hooks), the upsampler, and the rest (resize, noise, the 66-channel condition, the
scheduler). Prints the best of --rounds for each and the stage's total over its transformer calls.
"""

from __future__ import annotations

import argparse
import time

import _pack  # noqa: F401  (registers the pack as hunyuan_video_suite)
import torch
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_upsampler import tiny_upsampler
from hunyuan_video_suite.pipelines.hunyuan_video_15.super_resolution import generate_sr, sr_request
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15, keep_timesteps_exact
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from speed_cpu_hv15 import BYT5_TOKENS, POSITIVE_TOKENS, QWEN_TOKENS, prompt_embeds

TEXT_DIM, BYT5_DIM = 64, 48


def timed(module: torch.nn.Module, spent: list[float]) -> None:
    """Add each forward's process time to `spent`."""
    module.register_forward_pre_hook(lambda *_: spent.append(-time.process_time()))
    module.register_forward_hook(lambda *_: spent.append(time.process_time()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = tiny_transformer15(TEXT_DIM, BYT5_DIM, 1152, sr=True, seed=0)
    keep_timesteps_exact(model)
    transformer = LoadedTransformer15(model=model, variant=Variant("720p_sr_distilled"), source="bench")
    upsampler = tiny_upsampler("720p", seed=0)
    positive = prompt_embeds(POSITIVE_TOKENS, 1, TEXT_DIM, BYT5_DIM)
    latents = torch.randn(1, 32, 2, 480 // 16, 848 // 16, generator=torch.Generator().manual_seed(0))
    request = sr_request(transformer.variant, seed=1)
    model_time, upsampler_time = [], []
    timed(model, model_time)
    timed(upsampler, upsampler_time)
    best = None
    for _ in range(args.rounds):
        model_time.clear()
        upsampler_time.clear()
        started = time.process_time()
        generate_sr(transformer, upsampler, positive, latents, request)
        total = time.process_time() - started
        row = (total, sum(model_time), sum(upsampler_time), len(model_time) // 2)
        best = row if best is None or row[0] < best[0] else best
    total, calls_s, up_s, calls = best
    rest = total - calls_s - up_s
    print(f"device: CPU, one torch thread; SR DiT 98 in-channels, 2 blocks of 2x24 (random), context {QWEN_TOKENS} Qwen + "
          f"{BYT5_TOKENS} byT5 + 729 SigLIP; 848x480 -> 1280x720, 2 latent frames, {request.steps} steps; best of "
          f"{args.rounds} (process time)")
    print(f"total {total:.3f} s | transformer {calls_s:.3f} s in {calls} calls | upsampler {up_s:.3f} s | rest "
          f"{rest:.3f} s | total / transformer calls {total / calls_s:.3f}x, rest / total {rest / total:.1%}")


if __name__ == "__main__":
    main()
