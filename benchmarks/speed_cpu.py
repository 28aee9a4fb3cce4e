"""Speed on the CPU: our T2V sampler against plain diffusers `HunyuanVideoPipeline`, same weights, same process.

    python3 benchmarks/speed_cpu.py            # ~5 minutes on a 2-core machine
    python3 benchmarks/speed_cpu.py --quick    # fewer repeats, for a smoke run

Prints, per setting: CPU seconds per step (process time, one thread: robust on a shared machine; the
settings run interleaved, every other round in reverse order), its ratio to plain diffusers (the
median over rounds of the ratio within a round), wall
seconds per step, the peak resident-memory rise while sampling, and transformer calls per step; then
the cache presets at 50 steps. A small random-weight model of the real architecture stands in for the 13B one, so the cache
skip counts are what the presets do on random weights, not on the real model (see RESULTS.md).
"""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pack import cpu_benchmark_args  # noqa: E402
from _pack import pipelines as _import  # noqa: E402


def small_transformer(text_dim: int, pooled_dim: int, seed: int = 0):
    """The real block structure at a size a CPU runs in tens of milliseconds per step: 4 heads x 32,
    2 double + 2 single blocks, diffusers' default initialisation."""
    from diffusers import HunyuanVideoTransformer3DModel

    rope_axes_for = _import("hunyuan_video_13b.transformer_loading").rope_axes_for
    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=32, num_layers=2,
        num_single_layers=2, num_refiner_layers=1, text_embed_dim=text_dim, pooled_projection_dim=pooled_dim,
        rope_axes_dim=rope_axes_for(32),
    ).eval()


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond from /proc."""

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def main(argv=None) -> int:
    args = cpu_benchmark_args(__doc__, argv)
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    tiny = _import("demo.tiny")
    prompt_encoding = _import("hunyuan_video_13b.prompt_encoding")
    t2v = _import("hunyuan_video_13b.t2v")
    speed = _import("speed.options")
    LoadedTransformer = _import("hunyuan_video_13b.transformer_loading").LoadedTransformer

    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    model = small_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size)
    prompt = "A cat walks on the grass, realistic style."
    positive = prompt_encoding.encode_prompt(encoders, prompt)
    width, height, frames, steps = 256, 256, 17, 8
    repeats = 2 if args.quick else 10
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    print(f"CPU, {torch.get_num_threads()} thread(s); small model (4x32 heads, 2+2 blocks); {width}x{height}x{frames} "
          f"= {tokens} video tokens + {int(positive.attention_mask.sum())} of {positive.attention_mask.shape[1]} text "
          f"tokens; {steps} steps, best of {repeats} interleaved rounds")

    pipe = HunyuanVideoPipeline(
        text_encoder=encoders.llm, tokenizer=encoders.llm_tokenizer, transformer=model, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=encoders.clip,
        tokenizer_2=encoders.clip_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)

    def diffusers_run():
        pipe(
            prompt_embeds=positive.prompt_embeds, pooled_prompt_embeds=positive.pooled,
            prompt_attention_mask=positive.attention_mask, height=height, width=width, num_frames=frames,
            num_inference_steps=steps, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )

    compiled_model = copy.deepcopy(model)  # its own copy, so the eager runs never meet compiled blocks

    def ours(options, info):
        request = t2v.T2VRequest(width=width, height=height, num_frames=frames, steps=steps, seed=0)
        transformer = LoadedTransformer(compiled_model if options.compile else model, "t2v", "bench", options)
        return lambda: t2v.generate_t2v(transformer, positive, request, on_info=info.append)

    Options = speed.SpeedOptions
    settings = [
        ("plain diffusers HunyuanVideoPipeline", diffusers_run, None),
        ("ours, defaults (mask-free, auto)", *_ours_run(ours, Options())),
        ("ours, masked attention as diffusers", *_ours_run(ours, Options(attention="masked"))),
        ("ours, mask-free attention (sdpa)", *_ours_run(ours, Options(attention="sdpa"))),
        ("ours, mask-free + first_block cache", *_ours_run(ours, Options(attention="sdpa", cache="first_block"))),
        ("ours, mask-free + teacache_fast", *_ours_run(ours, Options(attention="sdpa", cache="teacache_fast"))),
        ("ours, mask-free + compile", *_ours_run(ours, Options(attention="sdpa", compile=True))),
    ]
    with torch.no_grad():
        cpu_times = {title: [] for title, _, _ in settings}
        wall_times = {title: [] for title, _, _ in settings}
        rises = {title: 0.0 for title, _, _ in settings}
        for title, run, _ in settings:
            run()  # warm-up (and compile, where asked)
        for round_index in range(repeats):
            # every other round runs the settings in reverse, so no setting always follows the same one
            for title, run, _ in settings[:: 1 if round_index % 2 == 0 else -1]:
                gc.collect()
                with PeakRSS() as memory:
                    wall, cpu = time.perf_counter(), time.process_time()
                    run()
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                cpu_times[title].append(cpu / steps)
                wall_times[title].append(wall / steps)
                rises[title] = max(rises[title], memory.rise_mb)
        base = cpu_times[settings[0][0]]
        print(f"{'setting':40} {'cpu s/step':>10} {'x diffusers':>12} {'wall s/step':>11} {'peak RSS rise':>14} "
              f"{'calls/step':>11}")
        for title, _, info in settings:
            # the ratio is the median over rounds of (this setting / diffusers in the same round)
            ratio = statistics.median(mine / theirs for mine, theirs in zip(cpu_times[title], base))
            calls = 1.0 if info is None else (steps - _skipped(info[-1])) / steps
            print(f"{title:40} {min(cpu_times[title]):10.4f} {ratio:12.3f} {min(wall_times[title]):11.4f} "
                  f"{rises[title]:11.1f} MB {calls:11.2f}")

        cache_steps = 50
        print(f"\ncache presets at {cache_steps} steps (same model, 128x128x9):")
        print(f"{'preset':16} {'threshold':>9} {'calls':>6} {'steps':>6} {'fewer calls':>12} {'cpu time vs off':>16}")
        times = {}
        for preset in ("off", "first_block", "teacache", "teacache_fast"):
            info = []
            request = t2v.T2VRequest(width=128, height=128, num_frames=9, steps=cache_steps, seed=0)
            transformer = LoadedTransformer(model, "t2v", "bench", Options(attention="sdpa", cache=preset))
            started = time.process_time()
            t2v.generate_t2v(transformer, positive, request, on_info=info.append)
            times[preset] = time.process_time() - started
            skipped = _skipped(info[-1])
            threshold = _import("speed.step_cache").preset_threshold(preset)
            calls = cache_steps - skipped
            print(f"{preset:16} {threshold:9.2f} {calls:6d} {cache_steps:6d} {cache_steps / calls:11.2f}x "
                  f"{times[preset] / times['off']:16.3f}")
    return 0


def _ours_run(ours, options):
    info = []
    return ours(options, info), info


def _skipped(info_line: str) -> int:
    """Skipped calls from the sampler's speed line ("... N of M transformer calls skipped")."""
    if "transformer calls skipped" not in info_line:
        return 0
    return int(info_line.split("transformer calls skipped")[0].rsplit(": ", 1)[1].split(" of ")[0])


if __name__ == "__main__":
    sys.exit(main())
