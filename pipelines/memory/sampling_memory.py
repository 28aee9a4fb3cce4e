"""Putting models on the compute device the way the VRAM planner decided; what samplers and encoders call.

Any sampler (T2V, I2V, Custom) does:

    plan = plan_sampling(transformer, width, height, frames, batch, device, free_bytes)   # refuses early
    with transformer_on_device(transformer, device, plan):
        latents = denoise(transformer.model, ...)

On a CPU there is no plan (`plan_sampling` returns None) and the whole model runs where it is, as before.
Nodes go through `nodes/host.transformer_on_compute_device`, which does both and reports the plan.
A HunyuanCustom reference adds one latent frame of tokens: plan with `frames + 4`.
`transformer_on_device` also installs the transformer's LoRAs for the run (`lora/run.py`), after any fp8
quantization and before a block offloader attaches, so their tensors stream with their blocks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from ..lora.apply import remove_loras
from ..lora.run import loras_for_run
from ..weights.fp8_linear import quantize_linears, set_fp8_compute
from . import token_chunking
from .offload import TRANSFORMER_BLOCKS as BLOCK_CONTAINERS
from .offload import model_on_device, parse_offload
from .vram_planner import (
    DECODE_TILE_SIZES,
    ENCODER_TOKENS,
    ModelFacts,
    Plan,
    PlannerProfile,
    Request,
    decode_bytes,
    plan_memory,
    plan_resident_layers,
)

LLM_CONTAINERS = ("layers",)


def free_bytes(device: torch.device) -> int | None:
    """Memory this process can still use on a CUDA device: what the driver reports free plus what
    PyTorch's allocator holds cached but unused; None elsewhere (no plan needed on a CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(0, cached))


def plan_sampling(transformer, width: int, height: int, frames: int, batch: int, device, free: int | None = None
                  ) -> Plan | None:
    """The planner's choice for this request on `device` (None on a CPU); raises `DoesNotFit` before
    any work when even full offload cannot fit. fp8 storage may be chosen only when the user left
    weight_dtype on auto. The transformer's LoRAs are installed first, so their tensors count with their blocks."""
    free = free_bytes(device) if free is None else free
    if free is None:
        return None
    loras_for_run(transformer)  # the LoRAs' tensors are part of the blocks the plan places
    model = transformer.model
    options = transformer.memory
    options.validate()
    profile = getattr(transformer, "planner_profile", None) or PlannerProfile()
    facts = ModelFacts.from_model(model, BLOCK_CONTAINERS, profile)
    request = Request.for_profile(profile, width, height, frames, batch, latent_channels=model.config.out_channels)
    allow_fp8 = getattr(transformer, "weight_dtype", "auto") == "auto"
    return plan_memory(free, facts, request, offload=parse_offload(options.offload), allow_fp8=allow_fp8)


@contextmanager
def transformer_on_device(transformer, device, plan: Plan | None, home="cpu"):
    """The transformer ready on `device` as `plan` says (all resident without a plan), fp8 matmuls on
    where asked and supported, its LoRAs (`transformer.loras`) installed; back on `home` afterwards. A plan
    that quantizes converts the block linears to fp8 in place (the model stays fp8 for later runs, as the
    plan line says)."""
    model = transformer.model
    if plan is not None and plan.quantize:
        remove_loras(model)  # quantizing replaces the layers LoRAs sit on; they are installed again below
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, names, model.dtype)
    loras_for_run(transformer)  # before the offloader attaches: the LoRA tensors stream with their blocks
    set_fp8_compute(model, transformer.memory.fp8_compute == "auto", device)
    if plan is not None and plan.chunk_tokens:
        token_chunking.enable(model, plan.chunk_tokens)
    resident = plan.resident_blocks if plan is not None and plan.offload else None
    try:
        with model_on_device(model, BLOCK_CONTAINERS, device, resident, home):
            yield device
    finally:
        set_fp8_compute(model, False)
        token_chunking.disable(model)


@contextmanager
def text_encoders_on_device(encoders, device, free: int | None = None, home="cpu", tokens: int = ENCODER_TOKENS):
    """Both text encoders (and the vision tower, when there is one) on `device` for encoding; the Llama
    layers streamed when they do not all fit in the free memory (an 8 GB card and a bf16 Llama-3-8B);
    all back on `home` afterwards. `tokens`: what the LLM reads per prompt (HunyuanVideo 1.5's Qwen: 1108)."""
    free = free_bytes(device) if free is None else free
    llm = encoders.llm
    whole = [encoders.clip] + ([encoders.vision] if getattr(encoders, "vision", None) is not None else [])
    resident = None
    if free is not None:
        whole_bytes = sum(t.numel() * t.element_size() for module in whole for t in module.parameters())
        resident = plan_resident_layers(free - whole_bytes, ModelFacts.from_llm(llm, LLM_CONTAINERS), tokens)
    for module in whole:
        module.to(device)
    try:
        with model_on_device(llm, LLM_CONTAINERS, device, resident, home):
            yield device
    finally:
        for module in whole:
            module.to(home)


def fit_decode_tiling(tiling, latents_shape, vae, device, free: int | None = None):
    """(tiling, note): the user's tiling, with the spatial tile lowered to the largest size whose
    decode fits the free memory when theirs does not (note says so; None when unchanged)."""
    free = free_bytes(device) if free is None else free
    if free is None:
        return tiling, None
    batch, _, latent_frames, height, width = latents_shape
    request = Request(width * 8, height * 8, (latent_frames - 1) * 4 + 1, batch)
    vae_bytes = sum(p.numel() * p.element_size() for p in vae.parameters())
    asked_tile = tiling.tile_size if tiling.spatial else max(request.width, request.height)
    asked_frames = tiling.tile_frames if tiling.temporal else request.frames
    if decode_bytes(request, asked_tile, vae_bytes, asked_frames) <= free:
        return tiling, None
    for tile in DECODE_TILE_SIZES:
        if tile <= asked_tile and decode_bytes(request, tile, vae_bytes, tiling.tile_frames) <= free:
            overlap = min(tiling.tile_overlap, tile // 4)
            fitted = replace(tiling, spatial=True, temporal=True, tile_size=tile, tile_overlap=overlap - overlap % 8)
            return fitted, f"decode: tiles of {tile}px x {tiling.tile_frames} frames to fit {free / 1024**3:.1f} GB free"
    return tiling, None
