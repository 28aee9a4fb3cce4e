"""One process per GPU: the process group, the rank's device, and diffusers 0.42's CPU trap.

Launch every rank with the same command (`torchrun --nproc_per_node N ...`, or any launcher setting
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT); `init_ranks()` joins the group. On GPUs the
group is "cpu:gloo,cuda:nccl" (diffusers' Ulysses-anything exchanges its sizes over the CPU half, as its
docs advise), on a CPU-only machine "cpu:gloo", which is what the tests run.

diffusers 0.42 places a rank on `rank % torch.accelerator.device_count()`, which is 0 on a CPU-only
torch (ZeroDivisionError; 0.40/0.41 used the device module's count, 1 on CPU). `accelerator_count_fixed`
makes it report 1 there while parallelism is enabled, and changes nothing where an accelerator exists.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank of `world`, its local rank, and the device it computes on."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 decodes, saves and reports; every rank samples."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by a multi-process launcher (torchrun or alike) with more than one rank."""
    return all(name in os.environ for name in LAUNCH_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def default_backend(device_type: str) -> str:
    """NCCL for GPU tensors, gloo for CPU ones. On a CPU-only run the CPU is still named: diffusers gathers the
    Ulysses sizes on `torch.accelerator.current_accelerator()` unless the backend string says "cpu", and a CUDA
    build of torch on a machine without a GPU reports CUDA there (seen in a CPU-only ComfyUI)."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "cpu:gloo"


def init_ranks(device_type: str | None = None, backend: str | None = None) -> Ranks:
    """Join (or reuse) the default process group from the launcher's environment; the rank's device is
    GPU `LOCAL_RANK` where CUDA is present, else the CPU. A GPU run on plain gloo is refused (it would
    be slow and diffusers' all-to-all needs the GPU backend)."""
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(f"no launcher environment ({', '.join(missing)} unset): start every rank with "
                           "torchrun --nproc_per_node N")
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = backend or default_backend(device_type)
    if device_type == "cuda" and "nccl" not in backend:
        raise ValueError(f"backend {backend!r} on GPUs: use 'cpu:gloo,cuda:nccl' (gloo alone runs on the CPU)")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) here: "
                             "start at most one rank per GPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, device)


def close_ranks() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def accelerator_count_fixed():
    """`torch.accelerator.device_count()` reports 1 on a machine without an accelerator (diffusers 0.42's
    `_resolve_parallel_config` divides by it); untouched where one exists."""
    original = torch.accelerator.device_count
    if original() > 0:
        yield
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original
