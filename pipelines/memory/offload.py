"""Block offload: the transformer's first N blocks stay on the GPU, the others live in CPU memory
(pinned when there is room) and are copied in just ahead of use on a side CUDA stream.

Why not diffusers' `apply_group_offloading(use_stream=True)`: it offloads *every* block (there is no
"keep N resident" setting, so the planner's choice could not be expressed and a card with room for
half the model would still copy all of it every step), and at apply time it pins a second copy of
all weights. The mechanism here is the same as diffusers' (forward pre-hooks swap each parameter's
`.data` between a CPU copy and a device copy; the next block is prefetched on a side stream while
the current one computes; `record_stream` keeps the allocator from reusing a buffer too early), for
the blocks that the planner leaves off the GPU only, plus one host wait per block that keeps the
host at most one offloaded block ahead of the GPU (see `_after`). Pinned copies are packed into a
few buffers (`pinned_memory`), as per-tensor pinning would take about 1.5x the weights' size in RAM.

The per-block work is a diffusers hook (`ModelHook`), not a torch forward hook: torch runs its
hooks around `forward` even when a step cache's diffusers hook skips the block inside it, so every
skipped block would still be copied. Registered before the cache's hooks (the offloader attaches
before sampling starts), ours sit inside them, and a skipped block is never copied.

On a CPU-only machine the same code runs with CPU as both devices (each onload makes a separate
copy), which is how the tests check that offloaded and resident sampling agree.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .pinned_memory import copy_into_buffers, plan_packing

log = logging.getLogger("hunyuan_video_suite")

OFFLOAD_AUTO, OFFLOAD_OFF = "auto", "off"
# The HunyuanVideo transformer's repeated blocks (diffusers names), in execution order: ~97% of its weights.
TRANSFORMER_BLOCKS = ("transformer_blocks", "single_transformer_blocks")
PIN_HEADROOM_BYTES = 4 * 1024**3  # RAM left free for everything else before pinning is allowed
_HOOK_NAME = "hyvs_block_offload"


@dataclass
class MemoryOptions:
    """The user's memory choices for one transformer (the Memory Options node and the CLI set them).

    offload: "auto" (the planner picks the resident blocks), "off" (the whole model on the GPU), or a
    number of blocks to keep on the GPU (0 = every block offloaded).
    fp8_compute: "off", or "auto" (fp8 matmuls for fp8-stored block linears where the GPU has them).
    """

    offload: str | int = OFFLOAD_AUTO
    fp8_compute: str = "off"

    def validate(self) -> None:
        parse_offload(self.offload)
        if self.fp8_compute not in ("off", "auto"):
            raise ValueError(f"fp8_compute must be 'off' or 'auto', got {self.fp8_compute!r}")


def parse_offload(value) -> str | int:
    """"auto", "off" or a non-negative block count (as int or digits); anything else is refused."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (OFFLOAD_AUTO, OFFLOAD_OFF):
            return text
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"offload must be 'auto', 'off' or a number of resident blocks (0 or more), got {value!r}")


def blocks_in_order(model: nn.Module, containers) -> list[nn.Module]:
    """The repeated blocks in the order the forward pass runs them."""
    return [block for name in containers for block in getattr(model, name, ())]


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _tensors(module: nn.Module):
    """(owner, name, is_parameter) for every parameter and buffer of `module`."""
    for owner in module.modules():
        yield from _tensors_direct(owner)


def _block_tensors(module: nn.Module):
    return (_get(*slot) for slot in _tensors(module))


def _get(owner: nn.Module, name: str, is_param: bool) -> torch.Tensor:
    return owner._parameters[name].data if is_param else owner._buffers[name]


def _set(owner: nn.Module, name: str, is_param: bool, tensor: torch.Tensor) -> None:
    if is_param:
        owner._parameters[name].data = tensor
    else:
        owner._buffers[name] = tensor


@functools.cache
def side_stream(device: torch.device) -> "torch.cuda.Stream":
    """One copy stream per device for every run: the CUDA allocator caches memory per stream, so a new
    stream per run would strand the previous run's cached block copies."""
    return torch.cuda.Stream(device)


def pinning_fits(nbytes: int) -> bool:
    """Pin only when the RAM that stays available afterwards keeps a safety margin."""
    try:
        import psutil
    except ImportError:
        return False
    return psutil.virtual_memory().available - nbytes > PIN_HEADROOM_BYTES


def place_on_host(blocks: list[nn.Module], pin: bool) -> None:
    """Every tensor of `blocks` in CPU memory: packed into pinned buffers when `pin` (tensors pinned by
    an earlier run stay where they are), else plain CPU tensors."""
    slots = [slot for block in blocks for slot in _tensors(block)]
    if pin:
        slots = [slot for slot in slots if not _get(*slot).is_pinned()]
        copy_into_buffers(len(slots), lambda i: _get(*slots[i]), lambda i, copy: _set(*slots[i], copy))
    else:
        for slot in slots:
            _set(*slot, _get(*slot).to("cpu"))


class _OffloadedBlock:
    def __init__(self, block: nn.Module):
        """`block`'s tensors must already be in CPU memory (`place_on_host`)."""
        self.block = block
        self.entries = [(owner, name, is_param, _get(owner, name, is_param)) for owner, name, is_param in _tensors(block)]
        self.onloaded = False
        self.ready: torch.cuda.Event | None = None  # the copy to the device is complete (CUDA only)
        self.done: torch.cuda.Event | None = None  # the block's last run is complete (CUDA only)

    def onload(self, device: torch.device, non_blocking: bool) -> None:
        for owner, name, is_param, cpu in self.entries:
            _set(owner, name, is_param, cpu.to(device, non_blocking=non_blocking, copy=True))
        self.onloaded = True

    def offload(self) -> None:
        for owner, name, is_param, cpu in self.entries:
            _set(owner, name, is_param, cpu)
        self.onloaded = False
        self.ready = None


class BlockOffloader:
    """Keeps the first `resident` blocks (execution order) on `device` with the rest of the model and
    streams the others in one at a time, one block ahead. `attach()` sets it up, `detach()` puts the
    whole model back on `home` (CPU memory, or where ComfyUI keeps idle models)."""

    def __init__(self, model: nn.Module, containers, device, resident: int, pin: bool | None = None, home="cpu"):
        self.model = model
        self.home = torch.device(home)
        self.device = torch.device(device)
        self.blocks = blocks_in_order(model, containers)
        self.resident = max(0, min(int(resident), len(self.blocks)))
        self.containers = tuple(containers)
        self.use_stream = self.device.type == "cuda"
        sizes = [t.numel() * t.element_size() for b in self.blocks[self.resident :] for t in _block_tensors(b)]
        self.pin = (self.use_stream and pinning_fits(plan_packing(sizes).total_bytes)) if pin is None else pin
        self._offloaded: list[_OffloadedBlock] = []
        self._handles = []
        self._stream = None
        self._last_done: torch.cuda.Event | None = None  # completion of the offloaded block that ran last
        self.onload_count = 0  # transfers done (tests and benchmarks read it)
        self.peak_onloaded = 0  # most offloaded blocks on the device at once

    @property
    def offloaded_blocks(self) -> int:
        return len(self.blocks) - self.resident

    def attach(self) -> "BlockOffloader":
        offloaded_ids = {id(b) for b in self.blocks[self.resident:]}
        for name, child in self.model.named_children():
            if name not in self.containers:
                child.to(self.device)
        for owner, name, is_param in _tensors_direct(self.model):
            _set(owner, name, is_param, _get(owner, name, is_param).to(self.device))
        for block in self.blocks[: self.resident]:
            block.to(self.device)
        offloaded = [b for b in self.blocks if id(b) in offloaded_ids]
        try:
            place_on_host(offloaded, self.pin)
        except RuntimeError as e:  # page-locking refused (container limits, WSL): plain memory, slower copies
            if not self.pin:
                raise
            log.warning("block offload: pinning CPU memory failed (%s); using pageable memory", e)
            self.pin = False
            place_on_host(offloaded, False)
        self._offloaded = [_OffloadedBlock(b) for b in offloaded]
        if self.use_stream:
            self._stream = side_stream(self.device)
        if self._offloaded:
            from diffusers.hooks.hooks import HookRegistry

            hook_class = _block_hook_class()
            for index, entry in enumerate(self._offloaded):
                HookRegistry.check_if_exists_or_initialize(entry.block).register_hook(hook_class(self, index), _HOOK_NAME)
            HookRegistry.check_if_exists_or_initialize(self.model).invalidate_child_registries_cache()
            self._handles.append(self.model.register_forward_pre_hook(lambda module, args: self._prefetch(0)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._offloaded:
            from diffusers.hooks.hooks import HookRegistry

            for entry in self._offloaded:
                HookRegistry.check_if_exists_or_initialize(entry.block).remove_hook(_HOOK_NAME, recurse=False)
            HookRegistry.check_if_exists_or_initialize(self.model).invalidate_child_registries_cache()
        for entry in self._offloaded:
            entry.offload()
        self._offloaded = []
        self.model.to(self.home)
        self._stream = self._last_done = None

    def _prefetch(self, index: int) -> None:
        """Start copying offloaded block `index` to the device (side stream on CUDA)."""
        if index >= len(self._offloaded):
            return
        entry = self._offloaded[index]
        if entry.onloaded:
            return
        if self._stream is not None:
            with torch.cuda.stream(self._stream):
                entry.onload(self.device, non_blocking=self.pin)
                entry.ready = torch.cuda.Event()
                entry.ready.record(self._stream)
        else:
            entry.onload(self.device, non_blocking=False)
        self.onload_count += 1
        self.peak_onloaded = max(self.peak_onloaded, sum(e.onloaded for e in self._offloaded))

    def _before(self, index: int) -> None:
        """Block `index` is about to run: its copy is complete before the compute stream reads it."""
        entry = self._offloaded[index]
        self._prefetch(index)  # already under way, unless the block before did not run
        if entry.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(entry.ready)
            for owner, name, is_param, _ in entry.entries:
                _get(owner, name, is_param).record_stream(current)

    def _after(self, index: int) -> None:
        """Once block `index` is queued: wait until the offloaded block that ran before it (in this
        model call or, for the first, the last one of the call before) has finished on the GPU, then
        prefetch the next block and drop this one's device copy.

        The wait is what bounds the memory: the host runs ahead of the GPU, and a device copy dropped
        while its block is still queued cannot be reused (`record_stream`), so without it every block
        the host got ahead by would hold a fresh copy. Waiting for the block *before* keeps the GPU busy
        with this one meanwhile, and at most two offloaded blocks are on the device at once.
        """
        entry = self._offloaded[index]
        if self._stream is not None:
            previous = self._last_done
            entry.done = self._last_done = torch.cuda.Event()
            entry.done.record(torch.cuda.current_stream(self.device))
            if previous is not None:
                previous.synchronize()
        self._prefetch(index + 1)
        entry.offload()


@functools.cache
def _block_hook_class():
    from diffusers.hooks.hooks import ModelHook

    class BlockOffloadHook(ModelHook):
        """Offloaded block `index` of `offloader`: copied in before it runs, dropped after. Kept out of
        torch.compile: regional compile compiles a block's whole call, and the copies, stream waits and
        `.data` swaps gain nothing from tracing, so the compiled graph holds the block's own compute."""

        def __init__(self, offloader: BlockOffloader, index: int):
            super().__init__()
            self.offloader, self.index = offloader, index

        @torch.compiler.disable
        def pre_forward(self, module, *args, **kwargs):
            self.offloader._before(self.index)
            return args, kwargs

        @torch.compiler.disable
        def post_forward(self, module, output):
            self.offloader._after(self.index)
            return output

    return BlockOffloadHook


def _tensors_direct(model: nn.Module):
    """Parameters and buffers held by `model` itself (not by a child)."""
    for name, param in model._parameters.items():
        if param is not None:
            yield model, name, True
    for name, buffer in model._buffers.items():
        if buffer is not None:
            yield model, name, False


@contextmanager
def model_on_device(model: nn.Module, containers, device, resident: int | None, home="cpu"):
    """The model ready to run on `device` for the block's body: wholly (`resident=None`) or with only
    `resident` blocks on it and the others streamed; always back on `home` afterwards."""
    device = torch.device(device)
    if resident is None or resident >= len(blocks_in_order(model, containers)):
        model.to(device)
        try:
            yield None
        finally:
            model.to(home)
        return
    offloader = BlockOffloader(model, containers, device, resident, home=home).attach()
    try:
        yield offloader
    finally:
        offloader.detach()
