"""One video on the ranks of a launch: the process group, quiet ranks, the transformers split over the ranks.

Every rank runs the whole command with the same (checked) options: it loads the same weights, onto its own device,
encodes the prompt and the picture itself (the same models and inputs on every rank; nothing to broadcast, and the
transformer's output is gathered on every rank after each call, so the latents stay equal whatever each rank's
text), and samples with the same seed. Rank 0 decodes, writes the video and reports; the other ranks print nothing
but errors. Every job (13B T2V, I2V, Custom; 1.5 T2V, I2V and the SR stage) goes this one way: the loaded
transformer is handed to `parallelize` before the other models load, so a split it refuses stops the command early.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout

from .job_options import OptionError
from .parallel_options import DEFAULT_PARALLEL


@contextmanager
def rank_session(args, device):
    """The rank this process is (`parallel.ranks.Ranks`), in the process group for the block; None outside a launch.
    A launch that cannot run here (too few GPUs for the ranks) is an OptionError."""
    if args.world == 1:
        yield None
        return
    from ..parallel.ranks import close_ranks, init_ranks

    try:
        ranks = init_ranks(device.type)
    except ValueError as e:
        raise OptionError(str(e)) from None
    try:
        with _quiet(not ranks.is_main):
            yield ranks
    finally:
        close_ranks()


@contextmanager
def _quiet(quiet: bool):
    """On the ranks other than 0: no progress, notices or warnings (rank 0 prints the same). An error still reaches
    the terminal: the command reports it after the block, and native crashes write to the process's own stderr."""
    if not quiet:
        yield
        return
    with ExitStack() as stack:
        devnull = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(redirect_stdout(devnull))
        stack.enter_context(redirect_stderr(devnull))
        logging.disable(logging.WARNING)
        stack.callback(logging.disable, logging.NOTSET)
        yield


def split_transformer(args, ranks, transformer, cfg_parallel: bool):
    """`transformer` (a LoadedTransformer of either family) with its model split over the ranks, on the attention
    kernel of the speed options; a split the model refuses (its heads, its kernel) is an OptionError."""
    from ..parallel.ulysses import parallelize

    chosen = {}
    if args.parallel != DEFAULT_PARALLEL:
        chosen["mode"] = args.parallel
    if cfg_parallel:
        chosen["cfg_parallel"] = True
    try:
        parallelize(transformer.model, attention=args.attention, device=ranks.device, **chosen)
    except ValueError as e:
        raise OptionError(f"--parallel {args.parallel}: {e}") from None
    return transformer


def describe(args, ranks) -> str:
    import torch.distributed as dist

    where = f"({ranks.device.type}, {dist.get_backend()})"
    if not args.cfg_parallel:
        return f"{args.parallel} over {ranks.world} ranks {where}; rank 0 writes the video"
    half = ranks.world // 2
    each = "one rank each" if half == 1 else f"each sequence {args.parallel} over {half}"
    return f"the CFG branches on two halves of {ranks.world} ranks, {each} {where}; rank 0 writes the video"
