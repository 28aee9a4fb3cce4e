"""Pinned host copies for block offload: packed buffers hold the 13B model's offloaded weights at
about their own size (per-tensor pinning would round each up to a power of two), views never overlap,
originals are let go as soon as they are copied, and offloaded sampling from packed copies is exact."""

import json
import random
import weakref
from math import prod

import pytest
import torch
from conftest import SHARED
from engine.test_offload import REQUEST, _embeds, _model, _sample
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import BLOCK_CONTAINERS
from hunyuan_video_suite.pipelines.memory import pinned_memory
from hunyuan_video_suite.pipelines.memory.offload import BlockOffloader
from hunyuan_video_suite.pipelines.memory.pinned_memory import ALIGN_BYTES, copy_into_buffers, plan_packing

LAYOUT = json.loads((SHARED / "comfy" / "checkpoint_layouts.json").read_text())["files"]["hunyuan_video_t2v_720p_bf16"]


def _block_sizes(bytes_per_element):
    return [prod(shape) * bytes_per_element for name, shape in LAYOUT.items()
            if name.startswith(("double_blocks.", "single_blocks."))]


def _power_of_two_at_least(n):
    return 1 << (n - 1).bit_length()


@pytest.mark.parametrize("bytes_per_element", [2, 1], ids=["bf16", "fp8"])
def test_the_13b_blocks_pin_at_about_their_own_size(bytes_per_element):
    sizes = _block_sizes(bytes_per_element)
    raw = sum(sizes)
    assert raw > 12e9 * bytes_per_element  # the 13B model's 60 blocks: 12.5 billion weights
    per_tensor = sum(_power_of_two_at_least(n) for n in sizes)
    assert per_tensor > 1.3 * raw  # what tensor.pin_memory() would take
    assert raw <= plan_packing(sizes).total_bytes <= 1.02 * raw


def test_places_are_aligned_inside_their_buffer_and_never_overlap():
    rng = random.Random(5)
    sizes = [rng.choice([0, 1, 7, 4096, 3 * 1024**2, 300 * 1024**2, 2 * 1024**3 + 5]) for _ in range(60)]
    packing = plan_packing(sizes)
    assert all(n & (n - 1) == 0 for n in packing.buffer_bytes)
    spans = {}
    for size, (buffer, offset) in zip(sizes, packing.places):
        assert offset % ALIGN_BYTES == 0 and offset + size <= packing.buffer_bytes[buffer]
        spans.setdefault(buffer, []).append((offset, offset + size))
    for intervals in spans.values():
        intervals.sort()
        assert all(end <= start for (_, end), (start, _) in zip(intervals, intervals[1:]))


def test_copies_are_views_of_shared_buffers_and_originals_are_let_go():
    generator = torch.Generator().manual_seed(0)
    slots = [torch.randn(shape, generator=generator).to(dtype) for shape, dtype in
             [((3, 5), torch.float32), ((7,), torch.bfloat16), ((), torch.float32), ((4, 4), torch.float16), ((0, 3), torch.float32)]]
    slots.append(torch.randn(16, 16, generator=generator).to(torch.float8_e4m3fn))
    expected = [t.clone() for t in slots]
    originals = [weakref.ref(t) for t in slots]

    def write(index, copy):
        slots[index] = copy

    packing = copy_into_buffers(len(slots), lambda i: slots[i], write, pin=False)
    for copy, want in zip(slots, expected):
        assert copy.dtype == want.dtype and copy.shape == want.shape and copy.is_contiguous()
        assert torch.equal(copy.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))
    assert len({t.untyped_storage().data_ptr() for t in slots}) == len(packing.buffer_bytes) < len(slots)
    assert all(ref() is None for ref in originals)


def test_offloaded_sampling_from_packed_copies_is_exact(monkeypatch):
    """The pinned path on a CPU-only machine: buffers packed exactly as on a GPU host, only not page-locked."""
    monkeypatch.setattr(pinned_memory, "_buffer", lambda nbytes, pin: torch.empty(nbytes, dtype=torch.uint8))
    transformer = _model()
    reference, _ = _sample(transformer, None)
    offloader = BlockOffloader(transformer.model, BLOCK_CONTAINERS, "cpu", resident=1, pin=True).attach()
    try:
        latents = generate_t2v(transformer, _embeds(), T2VRequest(**REQUEST))
        offloaded = [*transformer.model.transformer_blocks[1:], *transformer.model.single_transformer_blocks]
        weights = [p for block in offloaded for p in block.parameters()]
        storages = {p.untyped_storage().data_ptr() for p in weights}
    finally:
        offloader.detach()
    torch.testing.assert_close(latents, reference, rtol=0, atol=0)
    assert offloader.onload_count == 4 * REQUEST["steps"]
    assert len(storages) <= 3 < len(weights)  # the offloaded weights live in a few packed buffers


def test_a_refused_pin_falls_back_to_pageable_memory(monkeypatch, caplog):
    """Page-locking can be refused (container memlock limits, WSL): offload then runs from plain memory."""
    calls = []

    def refuse_second(nbytes, pin):
        calls.append(pin)
        if len(calls) > 1:
            raise RuntimeError("CUDA error: out of memory (cudaHostAlloc)")
        return torch.empty(nbytes, dtype=torch.uint8)

    monkeypatch.setattr(pinned_memory, "_buffer", refuse_second)
    transformer = _model()
    reference, _ = _sample(transformer, None)
    offloader = BlockOffloader(transformer.model, BLOCK_CONTAINERS, "cpu", resident=1, pin=True).attach()
    try:
        latents = generate_t2v(transformer, _embeds(), T2VRequest(**REQUEST))
    finally:
        offloader.detach()
    torch.testing.assert_close(latents, reference, rtol=0, atol=0)
    assert not offloader.pin and len(calls) == 2
    assert "pinning CPU memory failed" in caplog.text
