"""The render command's multi-GPU options, and the checks that run before anything loads.

`torchrun --nproc_per_node N -m pipelines.render ...` starts the same command N times; each copy (a rank) reads the
launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and renders its share of one video
(`parallel_run`). Without a launcher, or with one rank, nothing changes. `--parallel` picks how attention is split
over the ranks (ulysses by default), `--cfg-parallel` runs the two CFG branches on two halves of them.

What cannot work is refused here, the same way on every rank, before a process group is joined or a weight loads:
one line naming the option, exit status 2. Only the standard library is imported at the top, as in `options`.
"""

from __future__ import annotations

import argparse
import os

from .job_options import OptionError

PARALLEL_CHOICES = ("ulysses", "ring", "unified")
DEFAULT_PARALLEL = "ulysses"
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # = ranks.LAUNCH_VARIABLES
# Attention heads per family (Ulysses splits them over the ranks); the demo's tiny model has 2
# (= demo.tiny_transformer.TINY_HEADS, a test keeps them equal). A loaded model is checked again against its config.
HEADS = {"13b": 24, "hv15": 16}
DEMO_HEADS = 2
LAUNCH = "torchrun --nproc_per_node N -m pipelines.render ..."


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"several GPUs, one video (start the command with {LAUNCH})")
    group.add_argument("--parallel", choices=PARALLEL_CHOICES, default=None,
                       help="how attention is split over the ranks: ulysses (heads, any GPU kernel), ring or unified "
                       "(need a GPU kernel returning softmax statistics: flash or sage) (default: ulysses when "
                       "launched on 2 or more ranks)")
    group.add_argument("--cfg-parallel", action="store_true",
                       help="the two CFG branches on two halves of the ranks; needs an even rank count and CFG on")


def launch_world() -> int:
    """The launcher's rank count; 1 without a launcher (every variable set) or with a single rank."""
    if not all(name in os.environ for name in LAUNCH_VARIABLES):
        return 1
    try:
        return max(1, int(os.environ["WORLD_SIZE"]))
    except ValueError:
        return 1


def check_parallel(parser, args: argparse.Namespace, device, demo: bool) -> None:
    """Sets `args.world` (1 outside a launch) and `args.parallel` (the mode, None for one process); parser.error()
    on the first problem. `device` is the torch device the command would run on as one process."""
    args.world = world = launch_world()
    given = [flag for flag, on in (("--parallel", args.parallel), ("--cfg-parallel", args.cfg_parallel)) if on]
    if world == 1:
        if given:
            ranks = "this launch has 1 rank" if "WORLD_SIZE" in os.environ else "no launcher started this process"
            verb = "split" if len(given) > 1 else "splits"
            parser.error(f"{' and '.join(given)} {verb} one video over several processes, but {ranks}: start it "
                         f"with {LAUNCH} (N of 2 or more)")
        return
    args.parallel = args.parallel or DEFAULT_PARALLEL
    if args.attention == "masked":
        parser.error("--attention masked runs diffusers' padded path, which cannot be split over ranks: leave "
                     "--attention auto or give sdpa, flash or sage")
    if args.compile:
        parser.error("--compile: torch.compile cannot trace diffusers' sequence-parallel exchange (the Ulysses "
                     "all-to-all of any length); leave it out on several ranks")
    if args.cfg_parallel:
        _check_cfg_parallel(parser, args, world)
    _check_heads(parser, args, world, demo)
    _check_device(parser, args, device)


def _check_cfg_parallel(parser, args, world: int) -> None:
    """The two CFG branches on two halves of the ranks: an even count, and the job's branches batched in one call
    (every job's sampler can; batched here: each half runs one branch, so the memory is one branch's)."""
    if world % 2:
        parser.error(f"--cfg-parallel puts the two CFG branches on two halves of the ranks: {world} ranks do not "
                     "halve, launch an even number")
    if args.cfg_batching == "sequential":
        parser.error("--cfg-parallel splits the CFG branches of one batched model call: --cfg-batching sequential "
                     "runs them one call at a time; leave --cfg-batching out")
    args.cfg_batching = "batched"


def _check_heads(parser, args, world: int, demo: bool) -> None:
    """Ulysses gives every rank sharing a sequence one or more of the model's attention heads."""
    if args.parallel != "ulysses":
        return
    halves = 2 if args.cfg_parallel else 1
    degree = world // halves
    if degree < 2:
        return
    from ..parallel.ulysses import check_degree

    heads = DEMO_HEADS if demo else HEADS[args.family]
    model = "the demo's tiny model" if demo else "HunyuanVideo 1.5" if args.family == "hv15" else "HunyuanVideo 13B"
    try:
        check_degree(heads, degree)
    except ValueError:
        split = f" (each CFG half of the {world})" if halves > 1 else ""
        parser.error(f"--parallel ulysses shares the attention heads among the ranks of a sequence, and {model} has "
                     f"{heads}, too few for {degree} ranks{split}: launch at most {heads * halves} ranks")


def _check_device(parser, args, device) -> None:
    """Each rank takes its own GPU, LOCAL_RANK; GPUs talk over NCCL (gloo only runs on the CPU)."""
    import torch

    if device.index is not None:
        parser.error(f"--device {device}: each rank takes its own GPU (number LOCAL_RANK); give --device "
                     f"{device.type} or leave it out, and pick the GPUs with CUDA_VISIBLE_DEVICES")
    if device.type == "cpu":
        if args.parallel != "ulysses":
            parser.error(f"--parallel {args.parallel} needs a GPU attention kernel that returns softmax statistics "
                         "(flash or sage); on the CPU use --parallel ulysses")
        return
    if device.type != "cuda":
        parser.error(f"several ranks run on CUDA GPUs or the CPU, not on {device.type}")
    if args.parallel != "ulysses" and args.attention == "sdpa":
        parser.error(f"--parallel {args.parallel} needs an attention kernel that returns softmax statistics: "
                     "--attention sdpa has none, give flash or sage (or use --parallel ulysses)")
    if not torch.distributed.is_nccl_available():
        parser.error(f"several GPUs talk over NCCL, which this torch {torch.__version__} lacks (gloo runs on the CPU "
                     "only): install a CUDA build of torch for Linux")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", args.world))
    if local > torch.cuda.device_count():
        parser.error(f"{local} ranks on this machine but {torch.cuda.device_count()} GPU(s): launch at most one rank "
                     "per GPU (--nproc_per_node)")


def check_cfg_parallel(args, cfg: float) -> None:
    """`--cfg-parallel` needs CFG on: `cfg` is the request's scale (the job's or variant's default where unset), known
    before any model loads."""
    if args.cfg_parallel and cfg <= 1:
        raise OptionError("--cfg-parallel splits the two CFG branches, but CFG is off (scale 1) for this job: give "
                          "--cfg above 1, or leave --cfg-parallel out")
