"""The user's multi-GPU choice for one loaded transformer, and the checks a run makes before any worker starts.

`ParallelChoice` rides on `LoadedTransformer.parallel` / `LoadedTransformer15.parallel` (the Multi-GPU node sets
it); None or one GPU samples in ComfyUI's own process as before. Everything `check_run` refuses would otherwise
fail on every rank after the workers started and loaded the model, so it is refused here with one message. Only
the standard library is imported at the top: the families' loading modules import this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_GPUS = 8
MODES = ("ulysses", "ring", "unified")  # = mesh.MODES (kept here so importing this module stays light)
DEFAULT_MODE = "ulysses"


@dataclass(frozen=True)
class ParallelChoice:
    """How many local GPUs sample one video and how they split it: `mode` (see `mesh.py`), and with `cfg_parallel`
    the two guidance branches on two halves of the GPUs."""

    gpus: int = 1
    mode: str = DEFAULT_MODE
    cfg_parallel: bool = False

    def validate(self) -> None:
        if not isinstance(self.gpus, int) or not 1 <= self.gpus <= MAX_GPUS:
            raise ValueError(f"gpus must be a whole number from 1 to {MAX_GPUS}, got {self.gpus!r}")
        if self.mode not in MODES:
            raise ValueError(f"parallel must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.cfg_parallel and self.gpus % 2:
            raise ValueError(f"cfg_parallel puts the two guidance branches on two halves of the GPUs: {self.gpus} "
                             "GPUs do not halve, choose an even number")

    @property
    def active(self) -> bool:
        """Whether sampling leaves ComfyUI's process for a pool of workers (two GPUs or more)."""
        return self.gpus > 1

    def parallelize_options(self) -> dict:
        """The keyword arguments `ulysses.parallelize` takes for this choice; its defaults are left out."""
        options = {}
        if self.mode != DEFAULT_MODE:
            options["mode"] = self.mode
        if self.cfg_parallel:
            options["cfg_parallel"] = True
        return options

    def describe(self) -> str:
        halves = ", the guidance branches on two halves of them" if self.cfg_parallel else ""
        return f"{self.mode} over {self.gpus} GPUs{halves}"


def check_run(choice: ParallelChoice, transformer, available: int, device, batched_cfg: bool) -> None:
    """ValueError for a run the workers could not do: more GPUs than `available`, options sequence parallel
    cannot keep (the masked attention path, compiled blocks), a split the model's heads or the attention kernel
    on `device` refuse, CFG parallel on a run without batched guidance branches (`batched_cfg`), or a transformer
    the workers cannot load again (no file behind it)."""
    from ..speed.attention import choose_backend
    from .mesh import check_kernel, plan_mesh
    from .ulysses import check_degree

    choice.validate()
    if choice.gpus > available:
        where = f"{available} CUDA GPU{'s' if available != 1 else ''}" if available else "no CUDA GPU"
        raise ValueError(f"Multi-GPU asks for {choice.gpus} GPUs but this ComfyUI sees {where}: set gpus to at most "
                         f"{max(available, 1)} (1 samples here, as without the node)")
    speed = transformer.speed
    if speed.attention == "masked":
        raise ValueError("Multi-GPU splits mask-free attention only: set the Speed Options attention to auto, sdpa, "
                         "flash or sage (not masked)")
    if speed.compile:
        raise ValueError("Multi-GPU: compiled blocks would keep the first call's split of the sequence; turn the Speed "
                         "Options compile off")
    if choice.cfg_parallel and not batched_cfg:
        raise ValueError("cfg_parallel splits the two guidance branches of one batched model call, and this run has "
                         "none: CFG is off (1, or a distilled model), or the sampler runs its branches one call at a "
                         "time (set cfg_batching to batched or auto). Turn cfg_parallel off")
    model = transformer.model
    heads = model.config.num_attention_heads
    plan = plan_mesh(choice.gpus, heads, choice.mode, choice.cfg_parallel)
    if plan.mode == "ulysses" and plan.ulysses > 1:
        check_degree(heads, plan.ulysses)
    check_kernel(plan.mode, choose_backend(speed.attention, device, model.dtype, context_parallel=True))
    if not Path(transformer.source).exists():
        raise ValueError(f"Multi-GPU: each GPU's worker loads the transformer from its file, and "
                         f"{transformer.source!r} is no file or folder here: load it with a HunyuanVideo Suite loader")
