"""What a LoRA costs per step on the CPU: the 13B T2V sampler with no LoRA, one rank-32 LoRA on every linear layer
of the blocks (as applied by default: each layer call patches its weight or takes the side path, whichever is
fewer multiply-adds; then with the side path forced on every call; then merged into the weights), and two stacked
LoRAs, in one process.

    python3 benchmarks/lora_cpu.py            # ~5 minutes on a 2-core machine
    python3 benchmarks/lora_cpu.py --quick    # fewer repeats, for a smoke run

The issue's target: a LoRA on the side path costs at most its own low-rank matmuls per step. So besides the
per-step CPU time of each setting and its ratio to no LoRA (median over interleaved rounds of the ratio within a
round), the script times those matmuls alone (`x @ A^T`, then `@ B^T`, at the very input shapes each targeted layer
saw in one step) and prints each setting's extra time per step against them. A random-weight model of the real
block structure at width 768 (6 heads of 128, 2 double + 2 single blocks) stands in for the 13B one; the ratio of
LoRA to base matmul work is 2r(in+out)/(in*out) per layer, so at width 3072 it is a quarter of this model's.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import cpu_benchmark_args  # noqa: E402
from _pack import pipelines as _import  # noqa: E402

RANK = 32
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def small_transformer(text_dim: int, pooled_dim: int, seed: int = 0):
    from diffusers import HunyuanVideoTransformer3DModel

    rope_axes_for = _import("hunyuan_video_13b.transformer_loading").rope_axes_for
    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=6, attention_head_dim=128, num_layers=2,
        num_single_layers=2, num_refiner_layers=1, text_embed_dim=text_dim, pooled_projection_dim=pooled_dim,
        rope_axes_dim=rope_axes_for(128),
    ).eval()


def block_linears(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCKS)}


def random_lora(model, name: str, rank: int, seed: int):
    lowrank = _import("lora.lowrank")
    g = torch.Generator().manual_seed(seed)
    targets = {
        n: lowrank.LowRank(torch.randn(rank, m.in_features, generator=g) * 0.01,
                           torch.randn(m.out_features, rank, generator=g) * 0.01, scale=1.0)
        for n, m in block_linears(model).items()
    }
    return lowrank.LoraWeights(name, "hunyuan_video_13b", targets)


def layer_inputs(model, run_once) -> dict[str, list[torch.Size]]:
    """The input shape of every call of every targeted layer during `run_once` (one sampler step)."""
    seen: dict[str, list[torch.Size]] = {}
    handles = [m.register_forward_pre_hook(lambda m, args, n=n: seen.setdefault(n, []).append(args[0].shape))
               for n, m in block_linears(model).items()]
    run_once()
    for handle in handles:
        handle.remove()
    return seen


def lowrank_matmul_seconds(shapes, lora, repeats: int) -> float:
    """CPU seconds of the LoRA's own matmuls for one step, best of `repeats`: per layer call `x @ A^T`, then
    `@ B^T` accumulated into a layer output (one addmm: the least any side path does)."""
    work = []
    for name, calls in shapes.items():
        delta = lora.targets[name]
        for shape in calls:
            rows = torch.Size(shape[:-1]).numel()
            work.append((torch.randn(shape), delta.down, delta.up.t(), torch.randn(rows, delta.up.shape[0])))
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for x, down, up_t, out in work:
            torch.addmm(out, F.linear(x, down).reshape(out.shape[0], -1), up_t)
        best = min(best, time.process_time() - started)
    return best


def main(argv=None) -> int:
    args = cpu_benchmark_args(__doc__, argv)
    tiny = _import("demo.tiny")
    prompt_encoding = _import("hunyuan_video_13b.prompt_encoding")
    t2v = _import("hunyuan_video_13b.t2v")
    apply = _import("lora.apply")
    LoadedTransformer = _import("hunyuan_video_13b.transformer_loading").LoadedTransformer

    encoders = tiny.tiny_text_encoders(seed=0)
    model = small_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size)
    positive = prompt_encoding.encode_prompt(encoders, "A cat walks on the grass, realistic style.")
    width, height, frames, steps = 256, 256, 17, 4
    repeats = 2 if args.quick else 6
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    style, motion = random_lora(model, "style", RANK, 1), random_lora(model, "motion", RANK, 2)
    linears = block_linears(model)
    print(f"CPU, {torch.get_num_threads()} thread(s); small model (6x128 heads = width 768, 2+2 blocks); "
          f"{width}x{height}x{frames} = {tokens} video tokens; {steps} steps, {repeats} interleaved rounds; "
          f"rank-{RANK} LoRA on all {len(linears)} linear layers of the blocks")

    transformer = LoadedTransformer(model, "t2v", "bench")
    request = t2v.T2VRequest(width=width, height=height, num_frames=frames, steps=steps, seed=0)

    def sample():
        t2v.generate_t2v(transformer, positive, request)

    side_path = _import("lora.side_path").LoraSidePath
    on_the_fly = side_path.prefers_weight

    def setting(loras, merge=False, force_side=False):
        def install():
            if loras:
                apply.apply_loras(model, loras, merge=merge)
            else:
                apply.remove_loras(model)
            # the side path on every layer, as a design comparison: the default picks per layer and call
            side_path.prefers_weight = (lambda self, x: False) if force_side else on_the_fly
        return install

    settings = [
        ("no LoRA", setting([])),
        (f"1 LoRA rank {RANK} (default: per call)", setting([(style, 0.8)])),
        (f"1 LoRA rank {RANK}, side path forced", setting([(style, 0.8)], force_side=True)),
        (f"1 LoRA rank {RANK}, merged", setting([(style, 0.8)], merge=True)),
        (f"2 LoRAs rank {RANK} stacked (default)", setting([(style, 0.8), (motion, 0.5)])),
    ]
    with torch.no_grad():
        one_step = t2v.T2VRequest(width=width, height=height, num_frames=frames, steps=1, seed=0)
        shapes = layer_inputs(model, lambda: t2v.generate_t2v(transformer, positive, one_step))
        own = lowrank_matmul_seconds(shapes, style, repeats=3)
        cpu_times = {title: [] for title, _ in settings}
        for _, install in settings:
            install()
            sample()  # warm-up
        for round_index in range(repeats):
            # every other round in reverse, so no setting always follows the same one
            for title, install in settings[:: 1 if round_index % 2 == 0 else -1]:
                install()  # outside the timed part: apply_loras' fast path, a reinstall or a merge
                gc.collect()
                started = time.process_time()
                sample()
                cpu_times[title].append((time.process_time() - started) / steps)
        apply.remove_loras(model)
        side_path.prefers_weight = on_the_fly

    base = cpu_times["no LoRA"]
    print(f"{'setting':42} {'cpu s/step':>10} {'x no LoRA':>10} {'extra s/step':>13}")
    for title, _ in settings:
        ratio = statistics.median(mine / none for mine, none in zip(cpu_times[title], base))
        extra = statistics.median(mine - none for mine, none in zip(cpu_times[title], base))
        print(f"{title:42} {min(cpu_times[title]):10.4f} {ratio:10.3f} {extra:13.4f}")
    default = statistics.median(m - n for m, n in zip(cpu_times[settings[1][0]], base))
    forced = statistics.median(m - n for m, n in zip(cpu_times[settings[2][0]], base))
    patched = sum(s[:-1].numel() * (linears[n].in_features + linears[n].out_features)
                  > linears[n].in_features * linears[n].out_features for n, calls in shapes.items() for s in calls)
    layer_calls = sum(len(calls) for calls in shapes.values())
    base_flops = sum(2 * s[:-1].numel() * linears[n].in_features * linears[n].out_features
                     for n, calls in shapes.items() for s in calls)
    lora_flops = sum(2 * s[:-1].numel() * RANK * (linears[n].in_features + linears[n].out_features)
                     for n, calls in shapes.items() for s in calls)
    print(f"\nthe LoRA's own low-rank matmuls, timed alone: {own:.4f} s/step ({lora_flops / base_flops:.1%} of the "
          f"blocks' linear FLOPs)\ndefault: {patched} of {layer_calls} layer calls a step patch the weight, the "
          f"others take the side path; extra {default:.4f} s/step = {default / own:.2f}x the LoRA's own matmuls\n"
          f"side path forced everywhere: extra {forced:.4f} s/step = {forced / own:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
