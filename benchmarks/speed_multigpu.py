"""Many GPUs, one video: seconds per sampling step on N GPUs (Ulysses, ring, unified attention; with and without
CFG parallel) against one GPU, at the real sizes, with random bf16 weights built on `meta` and materialised on
every GPU.

    torchrun --nproc_per_node 8 benchmarks/speed_multigpu.py                  # 13B T2V 1280x720x129, CFG 1
    torchrun --nproc_per_node 8 benchmarks/speed_multigpu.py --family hv15    # HunyuanVideo 1.5 1280x720x121, CFG 6
    torchrun --nproc_per_node 4 benchmarks/speed_multigpu.py --setups ulysses,ring --baseline-s 23.1
    torchrun --nproc_per_node 2 benchmarks/speed_multigpu.py --quick          # 848x480x33
    torchrun --nproc_per_node 1 benchmarks/speed_multigpu.py --setups one     # the one-GPU row alone
    torchrun --nproc_per_node 2 benchmarks/speed_multigpu.py --tiny --device cpu   # toy model on gloo (the test)

Every row runs the pack's sampler (13B `generate_t2v`, 1.5 `generate`) for --warmup + --steps steps with the same
seed, weights, prompt and attention kernel (--attention, the one-GPU row's too); a step is timed from one step's
end to the next, CUDA-synchronised, and the row shows the median of the steps after the warm-up on rank 0's
clock (the ranks wait for each other in every attention call). Peak memory is each rank's own (allocated, then
reserved), weights included, shown as the range over the ranks; "cfg x ring x ulysses" is the rank layout
`parallel.mesh.plan_mesh` chose.

The one-GPU row is measured in the same run and process, before any parallel setup: rank 0 samples alone on its
GPU while the other ranks hold nothing on theirs and wait at a CPU barrier. The baseline thus has the GPU,
torch, kernel, weights and inputs of the parallel rows; "speed-up" is its s/step over a row's, "efficiency" the
speed-up over N. `--baseline-s S` takes a one-GPU s/step measured elsewhere instead (a lease too short for both;
the table says so, and "max |diff|" is then not shown). Each parallel row builds a fresh model on every rank
(diffusers' `enable_parallelism` can be neither undone nor repeated) and calls
`pipelines.parallel.ulysses.parallelize(model, attention=, device=, mode=, cfg_parallel=)`. A setup that cannot
run is printed with the reason: ring and unified on a kernel without softmax statistics (SDPA; they need flash
or sage), unified where the ranks have no ring x Ulysses split, CFG parallel at CFG 1 (13B T2V is guidance-distilled:
--cfg 6 adds true CFG, its branches batched as CFG parallel splits them; or --family hv15, CFG 6). "max |diff|" is the row's final latent
against the one-GPU one: bf16 sums in another order on N ranks, so it shows the same video is computed, not bit
equality. Without CUDA (and without --tiny) it says so and exits.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_gpu  # noqa: E402
import speed_gpu_hv15  # noqa: E402
from _pack import pipelines as _import  # noqa: E402
from speed_cpu_hv15 import NEGATIVE_TOKENS, POSITIVE_TOKENS, prompt_embeds  # noqa: E402

SIZES = {  # family: (full, --quick, --tiny) as (width, height, frames)
    "13b": ((1280, 720, 129), (848, 480, 33), (64, 32, 5)),
    "hv15": ((1280, 720, 121), (848, 480, 33), (64, 48, 5)),
}
SETUPS = {  # key: (title, parallel mode or None for one GPU, CFG parallel)
    "one": ("one GPU (rank 0 alone)", None, False),
    "ulysses": ("Ulysses", "ulysses", False),
    "ring": ("ring", "ring", False),
    "unified": ("unified (ring x Ulysses)", "unified", False),
    "ulysses+cfg": ("Ulysses + CFG parallel", "ulysses", True),
    "ring+cfg": ("ring + CFG parallel", "ring", True),
    "unified+cfg": ("unified + CFG parallel", "unified", True),
}
NEGATIVE_13B = 20  # valid tokens of the 13B negative prompt (true CFG), of 256


def tiny13() -> dict:
    config = speed_gpu.smoke_config()
    config.update(num_attention_heads=4)  # up to 4 ranks
    return config


TINY15 = {**speed_gpu_hv15.SMOKE, "num_attention_heads": 4}


class T2V13:
    """13B T2V with embedded guidance 6 and a 40-token prompt padded to 256; --cfg above 1 adds true CFG with a
    20-token negative prompt, both branches in one batched call (what CFG parallel splits)."""

    def __init__(self, args, device, dtype, size):
        self.device, self.dtype, self.cfg = device, dtype, args.cfg or 1.0
        self.config = tiny13() if args.tiny else speed_gpu.real_config(args.layouts)
        self.positive, self.negative = self._embeds(speed_gpu.PROMPT_TOKENS, 1), self._embeds(NEGATIVE_13B, 2)

    def _embeds(self, valid: int, seed: int):
        TextEmbeds = _import("hunyuan_video_13b.prompt_encoding").TextEmbeds
        generator = torch.Generator().manual_seed(seed)
        mask = (torch.arange(speed_gpu.TEXT_TOKENS) < valid).long()[None]
        return TextEmbeds(torch.randn(1, speed_gpu.TEXT_TOKENS, self.config["text_embed_dim"], generator=generator),
                          mask, torch.randn(1, self.config["pooled_projection_dim"], generator=generator))

    def build(self):
        return speed_gpu.build_model(self.config, self.device, self.dtype)

    def sample(self, model, options: dict, size, steps: int, on_step):
        t2v = _import("hunyuan_video_13b.t2v")
        LoadedTransformer = _import("hunyuan_video_13b.transformer_loading").LoadedTransformer
        SpeedOptions = _import("speed.options").SpeedOptions
        width, height, frames = size
        request = t2v.T2VRequest(width=width, height=height, num_frames=frames, steps=steps, seed=0,
                                 true_cfg=self.cfg, cfg_batching="batched" if self.cfg > 1 else "sequential")
        transformer = LoadedTransformer(model, "t2v", "bench", SpeedOptions(**options))
        negative = self.negative if self.cfg > 1 else None
        return t2v.generate_t2v(transformer, self.positive, request, negative, device=self.device, on_step=on_step)


class T2V15:
    """HunyuanVideo 1.5 T2V with the variant's recipe (CFG 6, both branches in one call, as the authors run
    them) and the real padded context (Qwen 1000 x 3584 with 100 valid tokens, negative 20; byT5; SigLIP)."""

    def __init__(self, args, device, dtype, size):
        self.device, self.dtype = device, dtype
        self.config = TINY15 if args.tiny else {}
        _import("hunyuan_video_15.attention").install()  # the 1.5 mask-free layout, before parallelize
        self.embeds = None
        self.variant = _import("hunyuan_video_15.variants").Variant("720p_t2v" if size[1] >= 720 else "480p_t2v")
        self.cfg = args.cfg or self.variant.recipe.cfg

    def build(self):
        model = speed_gpu_hv15.build_model(self.config, self.device, self.dtype)
        if self.embeds is None:
            text_dim, byt5_dim = model.config.text_embed_dim, model.config.text_embed_2_dim
            self.embeds = (prompt_embeds(POSITIVE_TOKENS, 1, text_dim, byt5_dim),
                           prompt_embeds(NEGATIVE_TOKENS, 2, text_dim, byt5_dim))
        return model

    def sample(self, model, options: dict, size, steps: int, on_step):
        sampling = _import("hunyuan_video_15.sampling")
        LoadedTransformer15 = _import("hunyuan_video_15.transformer_loading").LoadedTransformer15
        SpeedOptions = _import("speed.options").SpeedOptions
        width, height, frames = size
        request = sampling.Request15(width=width, height=height, num_frames=frames, steps=steps, cfg=self.cfg,
                                     flow_shift=self.variant.recipe.flow_shift, batch_cfg=True)
        transformer = LoadedTransformer15(model, self.variant, "bench", SpeedOptions(**options), weight_dtype="bf16")
        positive, negative = self.embeds
        return sampling.generate(transformer, positive, negative if self.cfg > 1 else None, request,
                                 device=self.device, on_step=on_step)


FAMILIES = {"13b": T2V13, "hv15": T2V15}


class StepClock:
    """The end of every step (`on_step`), CUDA-synchronised; s/step is the median after the warm-up steps."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.marks: list[float] = []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self.marks = [self._now()]

    def __call__(self, done: int, total: int) -> None:
        self.marks.append(self._now())

    def median(self, warmup: int) -> float:
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])][warmup:]
        return statistics.median(steps)


@dataclass
class Outcome:
    """One rank's result of one setup: s/step and peaks, or why it did not run; rank 0 keeps its latent."""

    per_step: float | None = None
    peak_gb: float | None = None
    reserved_gb: float | None = None
    skipped: str = ""
    mesh: str = ""  # cfg x ring x ulysses
    latent: torch.Tensor | None = field(default=None, repr=False)


def _free(device) -> None:
    gc.collect()  # the sequence-parallel wrapper and its model refer to each other
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_setup(work, mode: str | None, cfg_parallel: bool, args, size, device, keep_latent: bool) -> Outcome:
    """Build the model, make it parallel (`mode` not None), sample --warmup + --steps steps on this rank."""
    model = work.build()
    mesh = ""
    try:
        if mode is not None:
            plan = _import("parallel.mesh").plan_mesh(dist.get_world_size(), model.config.num_attention_heads, mode,
                                                      cfg_parallel)
            mesh = " x ".join(map(str, plan.shape))
            _import("parallel.ulysses").parallelize(model, attention=args.attention, device=device, mode=mode,
                                                    cfg_parallel=cfg_parallel)
        clock = StepClock(device)
        _free(device)
        clock.start()
        latent = work.sample(model, {"attention": args.attention}, size, args.warmup + args.steps, clock)
        outcome = Outcome(per_step=clock.median(args.warmup), mesh=mesh)
        if torch.device(device).type == "cuda":
            outcome.peak_gb = torch.cuda.max_memory_allocated(device) / 2**30
            outcome.reserved_gb = torch.cuda.max_memory_reserved(device) / 2**30
        if keep_latent:
            outcome.latent = latent.float().cpu()
        return outcome
    except (ValueError, NotImplementedError) as refusal:  # the same inputs on every rank: all refuse alike
        return Outcome(skipped=" ".join(str(refusal).split())[:400], mesh=mesh)
    except torch.OutOfMemoryError as error:
        return Outcome(skipped=f"out of memory: {str(error).splitlines()[0][:200]}", mesh=mesh)
    finally:
        del model
        _free(device)


def _range(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "n/a"
    low, high = min(values), max(values)
    return f"{high:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"


HEADER = (f"{'setup':24} {'N':>2} {'cfg x ring x ulysses':>20} {'s/step':>9} {'speed-up':>8} {'efficiency':>10} "
          f"{'peak GB/rank':>12} {'reserved':>10} {'max |diff|':>10}")


def row(title: str, world: int, outcomes: list[Outcome], baseline: float | None, reference) -> str:
    """One table row from every rank's outcome (rank 0's first)."""
    first = outcomes[0]
    start = f"{title:24} {world:>2} {first.mesh or '-':>20}"
    skipped = next((o.skipped for o in outcomes if o.skipped), "")
    if skipped:
        return f"{start} skipped: {skipped}"
    speedup = baseline / first.per_step if baseline else None
    shown = f"{speedup:8.2f} {speedup / world:10.2f}" if speedup else f"{'-':>8} {'-':>10}"
    diff = "-"
    if reference is not None and first.latent is not None:
        diff = f"{(first.latent - reference).abs().max().item():.1e}"
    return (f"{start} {first.per_step:9.4g} {shown} {_range([o.peak_gb for o in outcomes]):>12} "
            f"{_range([o.reserved_gb for o in outcomes]):>10} {diff:>10}")


def not_run(work, world: int, mode: str | None, cfg_parallel: bool) -> str:
    """Why a parallel setup cannot run with this launch and workload, before any model is built ("" if it can)."""
    if cfg_parallel and work.cfg <= 1:
        return "CFG parallel needs CFG above 1 (13b is guidance-distilled: --cfg 6; or --family hv15)"
    if mode is not None and world < 2:
        return "needs 2 or more ranks (torchrun --nproc_per_node N)"
    return ""


def _join(device: str):
    """This process's rank, joining the launcher's group when there is more than one; and a CPU group for the
    barriers and the results (long timeout: the one-GPU row may take minutes while the others wait)."""
    ranks = _import("parallel.ranks")
    if ranks.launched():
        joined = ranks.init_ranks(torch.device(device).type)
        return joined, dist.new_group(backend="gloo", timeout=timedelta(hours=2))
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(0)
        device = "cuda:0"
    return ranks.Ranks(0, 1, 0, torch.device(device)), None


def _gather(outcome: Outcome, world: int, group) -> list[Outcome]:
    if group is None:
        return [outcome]
    outcomes: list[Outcome | None] = [None] * world
    dist.all_gather_object(outcomes, outcome, group=group)
    return outcomes


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=tuple(FAMILIES), default="13b")
    parser.add_argument("--size", help="WxHxF (default: 1280x720x129 for 13b, 1280x720x121 for hv15)")
    parser.add_argument("--quick", action="store_true", help="848x480x33 (the real model, a short check)")
    parser.add_argument("--tiny", action="store_true", help="a toy model in float32 (with --device cpu: the test)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda where present")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma separated, of {', '.join(SETUPS)}")
    parser.add_argument("--attention", choices=("auto", "sdpa", "flash", "sage"), default="auto",
                        help="the kernel of every row, the one-GPU row's too (ring and unified need flash or sage)")
    parser.add_argument("--cfg", type=float, default=0.0,
                        help="CFG scale (13b: true CFG with a negative prompt, default 1; hv15: the recipe's 6)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (kernels, communicators)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setup (the median is shown)")
    parser.add_argument("--baseline-s", type=float, help="one-GPU s/step measured elsewhere (skips that row)")
    parser.add_argument("--layouts", type=Path, default=speed_gpu.LAYOUTS, help="13b: the real checkpoint layout")
    args = parser.parse_args(argv)
    args.keys = args.setups.split(",")
    unknown = set(args.keys) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu" if args.tiny else None)
    if args.device == "cpu" and not args.tiny:
        parser.error("the real-size models need GPUs: use --tiny on the CPU")
    full, quick, tiny = SIZES[args.family]
    args.size = tuple(int(n) for n in args.size.split("x")) if args.size else tiny if args.tiny else \
        quick if args.quick else full
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.device is None:
        print("no CUDA device: nothing to measure (the multi-GPU figures in RESULTS.md stay 'planned'; "
              "--tiny --device cpu runs the toy model)")
        return 0
    dtype = torch.float32 if args.tiny else torch.bfloat16
    ranks, group = _join(args.device)
    device, size, main_rank = ranks.device, args.size, ranks.is_main
    work = FAMILIES[args.family](args, device, dtype, size)

    def say(line: str) -> None:
        if main_rank:
            print(line, flush=True)

    kernel = _import("speed.attention").choose_backend(args.attention, device, dtype).title
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (toy model: no figures)"
    say(f"{ranks.world} x {name}; {args.family} T2V {'toy' if args.tiny else 'real-size'} transformer, random "
        f"weights, {str(dtype).replace('torch.', '')}; {'x'.join(map(str, size))}, CFG {work.cfg:g}; attention "
        f"'{args.attention}' = {kernel}; {args.warmup} warm-up + {args.steps} timed steps a setup")
    say(HEADER)
    baseline, reference = args.baseline_s, None
    for key in args.keys:
        title, mode, cfg_parallel = SETUPS[key]
        world = 1 if mode is None else ranks.world
        if mode is None and args.baseline_s is not None:
            say(f"{title:24} {1:>2} {'-':>20} {args.baseline_s:9.4g} given by --baseline-s, not measured in this run")
            continue
        reason = not_run(work, ranks.world, mode, cfg_parallel)
        if reason:
            say(row(title, world, [Outcome(skipped=reason)], None, None))
            continue
        if mode is None:  # rank 0 alone; the others wait on the CPU, holding nothing on a GPU
            outcomes = [run_setup(work, None, False, args, size, device, True) if main_rank else Outcome()]
            if group is not None:
                dist.barrier(group=group)
            baseline, reference = outcomes[0].per_step, outcomes[0].latent
        else:
            outcomes = _gather(run_setup(work, mode, cfg_parallel, args, size, device, main_rank), world, group)
        if main_rank:
            say(row(title, world, outcomes, baseline, reference))
    source = "given by --baseline-s" if args.baseline_s is not None else "measured on rank 0 in this run"
    say(f"speed-up: the one-GPU s/step ({source}) over the row's; efficiency: speed-up / N")
    if group is not None:
        dist.barrier(group=group)
        _import("parallel.ranks").close_ranks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
