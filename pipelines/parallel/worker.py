"""One rank of a worker pool (`pool.py`), in its own process: the same rank code as the render command's launch.

It joins the process group (`ranks.init_ranks`: NCCL on GPU `rank`, gloo on the CPU), then answers jobs until
the pool closes its pipe. A job names the transformer the node holds (`ModelSpec`: its family's loader, file and
load options); the worker loads it the same way once, makes it parallel (`ulysses.parallelize`) and keeps it until
a job names another. Each job then runs the very function the single-GPU node calls (generate_t2v, ...) with the
node's conditioning and request, the run's speed, memory and LoRA options set on the kept transformer, the
memory plan of this rank's GPU, and the step callbacks below. Rank 0 sends the progress, the previews' frames,
the info lines and the latent back; every rank reports how it ended.

Cancel: at each step end rank 0 asks the pool whether to go on; a stop is agreed on through `StopAgreement`, so
every rank leaves at the same step end and the pool is ready for the next job.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from ..memory.sampling_memory import plan_sampling, transformer_on_device
from . import wire
from .ranks import close_ranks, init_ranks

PREVIEW_FRAMES = 3  # first, middle and last latent frame: all any preview mode shows


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the transformer a node holds: `loader(source, variant=..., dtype=weight_dtype,
    device="cpu")`, the family's own loader (both families' `load_transformer`)."""

    loader: Callable
    source: str
    variant: str
    weight_dtype: str


@dataclass
class Job:
    """One sampling run: `run(transformer, *args, device=, on_step=, on_preview=, on_info=, **kwargs)` on the
    transformer `model` names with `fields` set on it (speed, memory, loras); `size` (width, height, frames,
    batch) is what the memory plan is made for; modules among `args`/`kwargs` (an upsampler) go to the rank's
    device for the run; `previews`: rank 0 sends each step's predicted latent."""

    model: ModelSpec
    run: Callable
    args: tuple = ()
    kwargs: dict | None = None
    fields: dict | None = None
    size: tuple[int, int, int, int] = (0, 0, 0, 1)
    attention: str = "auto"
    previews: bool = False


class Stopped(Exception):
    """The run was cancelled; every rank stops at the same step end."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}")
        self.step = step


def preview_frames(x0: torch.Tensor) -> torch.Tensor:
    """The first batch row's first, middle and last latent frames (every preview mode shows some of them)."""
    frames = x0.shape[2]
    return x0[:1, :, sorted({0, frames // 2, frames - 1})].detach().cpu()


def to_cpu(value):
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class Worker:
    def __init__(self, ranks, parallel: dict, conn, agreement: wire.StopAgreement):
        self.ranks, self.parallel, self.conn, self.agreement = ranks, parallel, conn, agreement
        self.kept: dict[int, Any] = {}
        self.spec: ModelSpec | None = None
        self.loaded = None
        self.loads = 0
        self._preview: torch.Tensor | None = None

    # ------------------------------------------------------------------ messages

    def send(self, *message) -> None:
        self.conn.send_bytes(wire.dumps(message))

    def ask(self, kind: str, *message) -> str:
        """Rank 0: a step message, answered 'go' or 'stop' by the pool."""
        self.send(kind, *message)
        return wire.loads(self.conn.recv_bytes())

    def handle(self, data: bytes) -> None:
        try:
            job = wire.receive_job(data, self.kept)
            self._load(job.model, job.attention)
            result = self._sample(job)
        except Stopped as stop:
            self.send("cancelled", stop.step, self.loads)
        except BaseException as e:  # reported to the pool, which stops every worker and raises it in the node
            self.send("error", f"{type(e).__name__}: {e}", traceback.format_exc(), self.loads)
        else:
            self.send("finished", result if self.ranks.is_main else None, self.loads)
        finally:
            self._preview = None
            if self.ranks.device.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ the model

    def _load(self, spec: ModelSpec, attention: str) -> None:
        """The transformer `spec` names, parallel over the ranks; loaded again only when the spec changed."""
        from .ulysses import parallelize

        if spec == self.spec:
            return
        self.loaded = self.spec = None
        gc.collect()
        loaded = spec.loader(spec.source, variant=spec.variant, dtype=spec.weight_dtype, device="cpu")
        parallelize(loaded.model, attention=attention, device=self.ranks.device, **self.parallel)
        self.loaded, self.spec = loaded, spec
        self.loads += 1

    # ------------------------------------------------------------------ one run

    def _sample(self, job: Job):
        transformer = replace(self.loaded, **(job.fields or {}))
        device = self.ranks.device
        self._gate(0)  # a cancel while loading stops before anything moves
        plan = plan_sampling(transformer, *job.size, device)
        if plan is not None:
            self._info(plan.describe())
        main = self.ranks.is_main
        with ExitStack() as stack:
            for module in _modules(job.args, job.kwargs or {}):
                module.to(device)
                stack.callback(module.to, "cpu")
            stack.enter_context(transformer_on_device(transformer, device, plan, home="cpu"))
            result = job.run(transformer, *job.args, device=device, on_step=self._on_step,
                             on_preview=self._on_preview if main and job.previews else None,
                             on_info=self._info if main else None, **(job.kwargs or {}))
        return to_cpu(result) if main else None

    def _gate(self, step: int, total: int = 0) -> None:
        """Every rank at the end of step `step` (0: before the first); raises Stopped where the ranks agreed to."""
        rank = self.ranks.rank
        if rank == 0 and not self.agreement.agreed:
            preview, self._preview = self._preview, None
            message = ("step", step, total, preview) if step else ("ask", step)
            if self.ask(*message) == "stop":
                self.agreement.request(rank, step)
        if step == 0 and rank == 0:
            self.agreement.opened.set()
        elif step == 0:
            self.agreement.opened.wait()  # rank 0's answer; the pool stops every worker if rank 0 fails first
        if not self.agreement.passes(rank, step):
            raise Stopped(step)

    def _on_step(self, done: int, total: int) -> None:
        self._gate(done, total)

    def _on_preview(self, done: int, total: int, x0: torch.Tensor) -> None:
        self._preview = preview_frames(x0)

    def _info(self, text: str) -> None:
        if self.ranks.is_main:
            self.send("info", text)


def _modules(args, kwargs):
    return [value for value in (*args, *kwargs.values()) if isinstance(value, torch.nn.Module)]


def serve(setup: dict, conn, *agreement_parts) -> None:
    """A worker's life: `setup` holds rank, world, port, device_type and the parallelize options."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is ComfyUI's to handle; it closes the pool
    rank, world = setup["rank"], setup["world"]
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(setup["port"]))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if rank:
        logging.disable(logging.WARNING)  # rank 0 says the same
    try:
        ranks = init_ranks(setup["device_type"])
    except BaseException as e:
        conn.send_bytes(wire.dumps(("error", f"{type(e).__name__}: {e}", traceback.format_exc(), 0)))
        return
    worker = Worker(ranks, setup["parallel"], conn, wire.StopAgreement(*agreement_parts))
    worker.send("ready", os.getpid())
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:  # the pool closed (or ComfyUI is gone)
                return
            worker.handle(data)
    finally:
        close_ranks()
