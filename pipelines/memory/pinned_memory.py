"""Pinned CPU copies of offloaded weights, packed into a few power-of-two buffers.

Why not `tensor.pin_memory()` per weight (what diffusers' group offloading does): PyTorch's pinned
allocator rounds every allocation up to a power of two, so the 13B model's weights (19, 57, 75 and
94 MB each in bf16) would pin about 1.5x their size, some 38 GB instead of 25.6 GB for a fully
offloaded bf16 model. A buffer whose size already is a power of two is not rounded, so the weights
are packed (largest first, each into the first buffer with room) into 1 GiB buffers, and each weight
becomes a view of one; a buffer that ends up partly filled shrinks to the power of two that holds it.

Buffers are filled one after the other and each weight's original is dropped as soon as it is
copied (the caller swaps the copy in), so packing needs about one buffer of RAM beyond the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

BUFFER_BYTES = 1 << 30
ALIGN_BYTES = 512  # every view starts on this boundary: any dtype's alignment, and DMA-friendly


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


def _power_of_two_at_least(nbytes: int) -> int:
    return 1 << max(0, nbytes - 1).bit_length()


def _power_of_two_at_most(nbytes: int) -> int:
    return 1 << max(0, nbytes.bit_length() - 1)


@dataclass(frozen=True)
class Packing:
    """Buffer sizes (powers of two) and where each tensor goes: (buffer index, byte offset), in input order."""

    buffer_bytes: tuple[int, ...]
    places: tuple[tuple[int, int], ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.buffer_bytes)


def plan_packing(sizes: Sequence[int], buffer_bytes: int = BUFFER_BYTES) -> Packing:
    """First-fit decreasing of `sizes` (bytes) into buffers of `buffer_bytes`; a tensor larger than that
    gets a buffer of its own."""
    used: list[int] = []
    capacity: list[int] = []
    places: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    left = sum(_aligned(n) for n in sizes)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        need = _aligned(sizes[index])
        buffer = next((b for b in range(len(used)) if used[b] + need <= capacity[b]), len(used))
        if buffer == len(used):
            used.append(0)
            capacity.append(max(_power_of_two_at_least(need), min(buffer_bytes, _power_of_two_at_most(left))))
        places[index] = (buffer, used[buffer])
        used[buffer] += need
        left -= need
    return Packing(tuple(_power_of_two_at_least(max(n, 1)) for n in used), tuple(places))


def _buffer(nbytes: int, pin: bool) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)


def copy_into_buffers(count: int, read: Callable[[int], torch.Tensor], write: Callable[[int, torch.Tensor], None],
                      pin: bool = True) -> Packing:
    """Copy `count` tensors into packed CPU buffers (page-locked when `pin`).

    `read(i)` gives tensor i where it is now; `write(i, copy)` receives its copy, a contiguous view of
    a buffer, right after the copy is made (swapping it in there frees the original early).
    """
    sizes = []
    for index in range(count):
        tensor = read(index)
        sizes.append(tensor.numel() * tensor.element_size())
    packing = plan_packing(sizes)
    by_buffer: list[list[int]] = [[] for _ in packing.buffer_bytes]
    for index, (buffer, _) in enumerate(packing.places):
        by_buffer[buffer].append(index)
    for buffer, indices in enumerate(by_buffer):
        storage = _buffer(packing.buffer_bytes[buffer], pin)
        for index in indices:
            tensor = read(index)
            offset = packing.places[index][1]
            copy = storage[offset : offset + sizes[index]].view(tensor.dtype).view(tensor.shape)
            copy.copy_(tensor)
            write(index, copy)
    return packing
