"""What a live preview costs, against a sampling step, on the CPU with the tiny model.

    python3 benchmarks/preview_cpu.py            # ~1 minute on a 2-core machine
    python3 benchmarks/preview_cpu.py --quick    # fewer steps, for a smoke run

Samples the tiny 13B-architecture T2V model (pipelines/demo) and times, per step: the step itself (no preview),
the predicted clean latent x0 = x_t - sigma_t * v the sampler then computes, and the picture the node makes of it
(ComfyUI's latent2rgb previewer: ComfyUI's own `latent_preview` when it is importable, else the same computation
restated), for the first frame and for the strip of three frames; the JPEG encoding ComfyUI's server does off the
sampling thread is printed apart. Prints each cost as a percentage of a step (target: <= 3%).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import pipelines as _import  # noqa: E402
from _pack import register_pack  # noqa: E402


class Latent2RGB:
    """ComfyUI 0.3.64's latent_preview.Latent2RGBPreviewer (first batch row, first frame), for a run without ComfyUI."""

    def __init__(self, factors, bias):
        self.factors, self.bias = torch.tensor(factors).transpose(0, 1), torch.tensor(bias)

    def decode_latent_to_preview_image(self, preview_format, x0):
        from PIL import Image

        rgb = torch.nn.functional.linear(x0[0, :, 0].movedim(0, -1), self.factors.to(x0), self.bias.to(x0))
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(0xFF).to(device="cpu", dtype=torch.uint8)
        return "JPEG", Image.fromarray(pixels.numpy()), 512


def previewer(previews):
    fmt = previews.latent_format("hunyuan_video_13b")
    try:
        import latent_preview

        return latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias), "ComfyUI's"
    except ImportError:
        return Latent2RGB(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias), "restated"


def best_of(work, repeats: int = 5) -> float:
    """The fastest of a few runs: on a shared 2-core machine a single run mostly times the scheduler."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--frames", type=int, default=33)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tiny = _import("demo.tiny")
    tiny_transformer = _import("demo.tiny_transformer").tiny_transformer
    t2v = _import("hunyuan_video_13b.t2v")
    encode_prompt = _import("hunyuan_video_13b.prompt_encoding").encode_prompt
    register_pack()
    import importlib

    previews = importlib.import_module("hunyuan_video_suite.nodes.previews")

    encoders = tiny.tiny_text_encoders(seed=0)
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, seed=0).eval()
    positive = encode_prompt(encoders, "a lighthouse in a storm", device="cpu")
    steps = 6 if args.quick else 20
    request = t2v.T2VRequest(width=args.width, height=args.height, num_frames=args.frames, steps=steps, seed=1)
    picture_maker, origin = previewer(previews)

    ends = []
    t2v.generate_t2v(model, positive, request, on_step=lambda done, total: ends.append(time.perf_counter()))
    step = statistics.median(b - a for a, b in zip(ends[1:], ends[2:]))  # the first step carries warm-up

    costs = {"x0": [], previews.FIRST_FRAME: [], previews.STRIP: [], "jpeg": []}

    def on_preview(done, total, x0):
        latent = x0.expand(1, *x0.shape[1:])
        sigma = torch.tensor(0.5)
        costs["x0"].append(best_of(lambda: latent - sigma * latent))  # the sampler's x0 = x_t - sigma_t * v
        for mode in (previews.FIRST_FRAME, previews.STRIP):
            costs[mode].append(best_of(lambda: previews.preview_image(picture_maker, x0, mode)))
        kind, image, _ = previews.preview_image(picture_maker, x0, previews.STRIP)
        start = time.perf_counter()
        image.save(io.BytesIO(), format=kind, quality=95)
        costs["jpeg"].append(time.perf_counter() - start)

    t2v.generate_t2v(model, positive, request, on_preview=on_preview)
    latent_shape = request.latent_shape(16)
    print(f"tiny T2V model, {args.width}x{args.height}, {args.frames} frames (latent {list(latent_shape)}), "
          f"{steps} steps, {torch.get_num_threads()} threads; previewer: {origin} latent2rgb")
    print(f"step: {step * 1000:.1f} ms (median, warm)")
    for name, title in (("x0", "x0 in the sampler"), (previews.FIRST_FRAME, "preview, first frame"),
                        (previews.STRIP, "preview, strip of 3"), ("jpeg", "JPEG (ComfyUI's server thread)")):
        value = statistics.median(costs[name])
        print(f"{title:34s} {value * 1000:8.3f} ms  {100 * value / step:6.2f}% of a step")
    total = statistics.median(costs["x0"]) + statistics.median(costs[previews.FIRST_FRAME])
    print(f"preview cost (x0 + first-frame picture): {100 * total / step:.2f}% of a step (target <= 3%)")


if __name__ == "__main__":
    main()
