"""Over several GPUs, `auto`/`flash` attention passes over a kernel diffusers cannot split (FlashAttention-3 in
diffusers 0.42 has no context-parallel support) instead of picking it and failing at the first step."""

import torch
from hunyuan_video_suite.pipelines.speed import attention


def test_a_kernel_diffusers_cannot_split_is_passed_over(monkeypatch):
    monkeypatch.setattr(attention, "_usable", lambda name: None)  # as if every kernel were installed
    monkeypatch.setattr(attention, "_test_call", lambda name, device, dtype: None)
    one_gpu = attention.choose_backend("auto", "cuda", torch.bfloat16)
    several = attention.choose_backend("auto", "cuda", torch.bfloat16, context_parallel=True)
    assert one_gpu.dispatcher_name == "_flash_3"
    assert several.dispatcher_name == "flash"
    assert attention._splits_sequence("_flash_3") is not None and attention._splits_sequence("flash") is None
