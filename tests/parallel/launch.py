"""Start a multi-process (gloo) test run: `world` local ranks of `python -m <worker> OUT NAME...` from tests/, each
with the launcher environment torchrun would give it; every rank saves {"results", "failures", ...} to
OUT.rank<N>, and a rank that failed or reported a failure fails the test with its log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, worker: str, names: list[str], out: Path, timeout_s: float) -> list[dict]:
    """Run scenarios `names` with module `worker` (e.g. "parallel.ulysses_worker") on `world` ranks."""
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, "-m", worker, str(out), *names], cwd=TESTS, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout_s)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} of {world} failed:\n{logs[rank][-4000:]}"
    saved = [torch.load(f"{out}.rank{rank}") for rank in range(world)]
    for rank, got in enumerate(saved):
        assert not got["failures"], f"rank {rank} of {world}: " + "\n".join(got["failures"].values())
    return saved
