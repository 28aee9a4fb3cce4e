"""Counting the bytes that tensors created by a piece of code hold at its peak, exactly, on any device.

The planner's constants come from this count. It works on the `meta` device too, where a 13B
model at 720p x 129 frames "runs" in seconds without memory, so the constants are measured at the
real sizes (see benchmarks/planner_constants.py). What it counts: every storage an op creates while
the mode is active, alive as long as any tensor seen viewing it is alive. What it does not count:
kernel workspaces (cuBLAS, cuDNN) and allocator rounding, which the planner covers with a reserve.

Written here because torch's CPU profiler reports allocations without a reliable order, and CUDA's
`max_memory_allocated` needs a GPU.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorBytes(TorchDispatchMode):
    """`with PeakTensorBytes() as m: ...` then `m.peak`: most bytes held at once by tensors made inside."""

    def __init__(self):
        super().__init__()
        self._storages: dict[int, tuple[int, list]] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            known = self._storages.get(key)
            if known is not None and any(r() is not None for r in known[1]):
                known[1].append(weakref.ref(tensor))
            elif key not in inputs:
                # New, or a freed storage's address reused by the allocator: counted at its own size.
                self._storages[key] = (storage.nbytes(), [weakref.ref(tensor)])
        self._update()
        return out

    def _update(self) -> None:
        dead = [key for key, (_, refs) in self._storages.items() if all(r() is None for r in refs)]
        for key in dead:
            del self._storages[key]
        self.live = sum(nbytes for nbytes, _ in self._storages.values())
        self.peak = max(self.peak, self.live)


class FusedAttentionStandIn(torch.overrides.TorchFunctionMode):
    """Attention as the GPU's fused kernels hold it (the output only, no L x L scores), for counting on
    `meta`, where torch would otherwise pick the math path and materialize every score."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            kwargs = kwargs or {}
            query = args[0] if args else kwargs["query"]
            value = args[2] if len(args) > 2 else kwargs["value"]
            return query.new_empty((*query.shape[:-1], value.shape[-1]))
        return func(*args, **(kwargs or {}))
