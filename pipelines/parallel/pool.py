"""A pool of worker processes, one per local GPU, that keep the transformer loaded between queue items.

ComfyUI is one process and sequence parallelism needs one process per GPU (SPEC-multigpu §6b), so a node that
samples on N GPUs hands its run to N workers started with torch.multiprocessing's spawn context (rank = GPU
index; the process group meets at 127.0.0.1 on a free port; NCCL between GPUs, gloo on the CPU). Each runs
`worker.serve`: the same rank code as the render command's launch, loading the node's transformer once with the
family's loader and keeping it. A run sends every worker the same job (`worker.Job`: the sampling function the
single-GPU node calls, its conditioning and request); rank 0 reports each step, the pool answers whether to go
on (the node's Cancel: every rank then stops at the same step end, `wire.StopAgreement`), and the latent comes
back from rank 0.

Failures never hang ComfyUI: the pool waits on the workers' pipes and their process sentinels together, so a
worker that dies (killed, out of memory, a native crash) is seen the moment it exits. Any worker failure stops
every worker (the others may be waiting for it inside a collective) and names the GPU; the next run starts a
fresh pool. One pool lives at a time (`pool_for`); ComfyUI's exit closes it.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import logging
import runpy
import signal
import socket
import sys
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Callable

import torch

from . import wire
from .worker import Job, ModelSpec

log = logging.getLogger("hunyuan_video_suite")
PACK = __name__.rsplit(".pipelines.", 1)[0]  # the name ComfyUI imported the pack under
PACK_ROOT = str(Path(__file__).resolve().parents[2])
ENTRY = str(Path(__file__).with_name("spawned.py"))


class WorkerDied(RuntimeError):
    """A worker process exited during a run or at its start."""


class WorkerFailed(RuntimeError):
    """A worker raised: its message names the GPU and the error; the traceback is in the log."""


@dataclass
class RunHooks:
    """The node's side of a run: progress (may raise to cancel), the preview's latent frames, info lines and the
    interrupt check (raises when the user cancelled), each called in ComfyUI's process."""

    on_step: Callable[[int, int], None] | None = None
    on_preview: Callable[[int, int, torch.Tensor], None] | None = None
    on_info: Callable[[str], None] | None = None
    check_interrupt: Callable[[], None] | None = None


class WorkerPool:
    """`world` workers on GPUs 0..world-1 (or CPU processes over gloo, `device_type` "cpu"), each parallelizing
    the model with `parallel` (`ulysses.parallelize`'s mode/cfg_parallel options)."""

    def __init__(self, world: int, device_type: str = "cuda", parallel: dict | None = None):
        self.world, self.device_type, self.parallel = world, device_type, dict(parallel or {})
        self.processes: list = []
        self.conns: list = []
        self.loads = [0] * world  # models each worker has loaded, as they last reported
        self.outcomes: dict[int, tuple] = {}  # how each rank ended the last run
        self.spec: ModelSpec | None = None  # what the workers hold
        self._kept = wire.KeptObjects()
        self._agreement: wire.StopAgreement | None = None
        self._pending: deque = deque()

    @property
    def key(self) -> tuple:
        return self.world, self.device_type, tuple(sorted(self.parallel.items()))

    @property
    def alive(self) -> bool:
        return bool(self.processes) and all(p.is_alive() for p in self.processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def where(self, rank: int) -> str:
        return f"GPU {rank}" if self.device_type == "cuda" else f"rank {rank} (CPU)"

    # ------------------------------------------------------------------ life

    def start(self) -> WorkerPool:
        context = torch.multiprocessing.get_context("spawn")
        self._agreement = wire.StopAgreement.create(context, self.world)
        port = _free_port()
        try:
            with _main_module_not_rerun():
                for rank in range(self.world):
                    parent, child = context.Pipe()
                    setup = {"rank": rank, "world": self.world, "port": port, "device_type": self.device_type,
                             "parallel": self.parallel}
                    args = (PACK, PACK_ROOT, setup, child, *self._agreement.parts())
                    entry = {"init_globals": {"WORKER_ARGS": args}, "run_name": "__hyvs_worker__"}
                    process = context.Process(target=runpy.run_path, args=(ENTRY,), kwargs=entry,
                                              name=f"hyvs-worker-{rank}")
                    process.start()
                    child.close()  # the worker's end lives in the worker only: its exit closes the pipe
                    self.processes.append(process)
                    self.conns.append(parent)
            _close_at_exit(self)
            ready = set()
            while len(ready) < self.world:
                rank, message = self._next()
                if message[0] == "error":
                    raise WorkerFailed(f"the multi-GPU worker for {self.where(rank)} could not start: {message[1]}")
                ready.add(rank)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every worker now (they hold nothing worth saving: the model loads again from its file)."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join()
        for conn in self.conns:
            conn.close()
        self.processes, self.conns, self.spec = [], [], None
        self._pending.clear()

    # ------------------------------------------------------------------ a run

    def run(self, job: Job, hooks: RunHooks | None = None, keep=()):
        """`job` on every worker; returns rank 0's result. `keep`: objects of the job the workers keep between
        runs (sent once while the same objects come back). Raises what a hook raised (the node's interrupt) once
        every rank has stopped, WorkerDied / WorkerFailed after stopping every worker."""
        if not self.alive:
            raise RuntimeError("the multi-GPU worker pool is closed: start a new one")
        hooks = hooks or RunHooks()
        self._agreement.reset()
        self.outcomes = {}
        payload = self._kept.job(job, keep)
        cancel: BaseException | None = None
        finals: dict[int, tuple] = {}
        try:
            for conn in self.conns:
                conn.send_bytes(payload)
            while len(finals) < self.world:
                rank, message = self._next()
                kind = message[0]
                if kind in ("ask", "step"):
                    cancel = cancel or _call(hooks.check_interrupt)
                    self.conns[rank].send_bytes(wire.dumps("stop" if cancel else "go"))
                    if kind == "step" and message[3] is not None and hooks.on_preview is not None:
                        cancel = cancel or _call(hooks.on_preview, *message[1:4])
                    if kind == "step":
                        cancel = cancel or _call(hooks.on_step, *message[1:3])
                elif kind == "info":
                    cancel = cancel or _call(hooks.on_info, message[1])
                elif kind == "error":
                    self._failed(rank, message)
                else:
                    finals[rank] = message
                    self.loads[rank] = message[-1]
        except BaseException:
            self.close()
            raise
        self.outcomes = {rank: message[:2] if message[0] == "cancelled" else message[:1]
                         for rank, message in finals.items()}
        self.spec = job.model
        if cancel is not None:
            raise cancel
        return finals[0][1]

    def _next(self) -> tuple[int, tuple]:
        """The next message of any worker as (rank, message); WorkerDied once one has exited."""
        while not self._pending:
            sentinels = {p.sentinel: rank for rank, p in enumerate(self.processes)}
            ready = connection.wait([*self.conns, *sentinels])
            for conn in ready:
                if conn in sentinels:
                    continue
                rank = self.conns.index(conn)
                try:
                    self._pending.append((rank, wire.loads(conn.recv_bytes())))
                except EOFError:
                    self._died(rank)
            for sentinel in ready:
                if sentinel in sentinels:
                    self._died(sentinels[sentinel])
        return self._pending.popleft()

    def _died(self, rank: int) -> None:
        process = self.processes[rank]
        process.join()
        code = process.exitcode
        said = [m for r, m in self._pending if r == rank and m[0] == "error"]
        how = f"exit code {code}" + (f", {signal.Signals(-code).name}" if code is not None and code < 0 else "")
        self.close()
        detail = f": {said[-1][1]}" if said else ""
        raise WorkerDied(f"the multi-GPU worker for {self.where(rank)} stopped ({how}){detail}; every worker was "
                         "stopped, the next run starts them afresh (and loads the model again)")

    def _failed(self, rank: int, message: tuple) -> None:
        """A worker raised: a worker that died meanwhile is the cause (the others fail in its collectives)."""
        for other, process in enumerate(self.processes):
            if other != rank and process.exitcode is not None:
                self._died(other)
        log.error("multi-GPU worker for %s:\n%s", self.where(rank), message[2])
        self.close()
        raise WorkerFailed(f"the multi-GPU worker for {self.where(rank)} failed: {message[1]} (every worker was "
                           "stopped; the next run starts them afresh)")


def _call(hook, *args) -> BaseException | None:
    """Run a node hook; what it raises (the node's interrupt) is returned: the ranks stop first, then it is raised."""
    if hook is None:
        return None
    try:
        hook(*args)
    except BaseException as e:
        return e
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _main_module_not_rerun():
    """Spawn runs the parent's main script again in every child (as __mp_main__) unless the main module was started
    by name; ComfyUI's main.py would load all of ComfyUI, and a CUDA context on GPU 0, in each worker. While the
    workers start, the main module is presented as started by the name '__main__', which spawn leaves alone (the
    workers need nothing from it)."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = spec


_current: WorkerPool | None = None
_started: weakref.WeakSet = weakref.WeakSet()


def pool_for(world: int, device_type: str = "cuda", parallel: dict | None = None) -> WorkerPool:
    """The running pool when it has these settings and every worker is alive; else a fresh one (the old one
    closed first)."""
    global _current
    wanted = WorkerPool(world, device_type, parallel)
    if _current is not None and (_current.key != wanted.key or not _current.alive):
        close_pool()
    if _current is None:
        _current = wanted.start()
    return _current


def close_pool() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


def _close_at_exit(pool: WorkerPool) -> None:
    _started.add(pool)


def _close_all() -> None:
    for pool in list(_started):
        pool.close()


# After multiprocessing's own exit handler (registered when it was imported, above), so this runs first: the
# workers are stopped rather than waited for.
atexit.register(_close_all)
