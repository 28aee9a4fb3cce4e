"""Re-measure the VRAM planner's constants at the real sizes, on the `meta` device (no memory needed).

    python3 benchmarks/planner_constants.py

Counts every tensor byte the forward pass creates (pipelines/memory/live_bytes.py), with attention held
as a fused GPU kernel holds it (output only), and prints the measured factor next to the constant
in pipelines/memory/vram_planner.py. Kernel workspaces are not in this count (the planner's RESERVE).
"""

from __future__ import annotations

import json

import _pack
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import derive_config
from hunyuan_video_suite.pipelines.memory import token_chunking, vram_planner
from hunyuan_video_suite.pipelines.memory.live_bytes import FusedAttentionStandIn, PeakTensorBytes

SIZES = ((33, 544, 960), (129, 544, 960), (129, 720, 1280))


def transformer_factor() -> None:
    shapes = {k: tuple(v) for k, v in json.loads(_pack.LAYOUTS.read_text())["files"]["hunyuan_video_t2v_720p_bf16"].items()}
    config = derive_config(shapes, "t2v")
    config.update(num_layers=1, num_single_layers=1)  # one of each block: the peak is per block
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config).to(torch.bfloat16)
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    for chunked in (False, True):
        if chunked:
            token_chunking.enable(model, vram_planner.CHUNK_TOKENS)
        _measure(model, hidden, chunked)


def _measure(model, hidden: int, chunked: bool) -> None:
    constant = vram_planner.ACTIVATION_FACTOR_CHUNKED if chunked else vram_planner.ACTIVATION_FACTOR
    label = "chunked feed-forwards" if chunked else "diffusers' forwards"
    for frames, height, width in SIZES:
        request = vram_planner.Request(width, height, frames)
        meta = dict(device="meta", dtype=torch.bfloat16)
        inputs = dict(
            hidden_states=torch.empty(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, **meta),
            timestep=torch.tensor([500.0], device="meta"), encoder_hidden_states=torch.empty(1, 256, 4096, **meta),
            encoder_attention_mask=torch.ones(1, 256, device="meta", dtype=torch.int64),
            pooled_projections=torch.empty(1, 768, **meta), guidance=torch.tensor([6000.0], **meta),
        )
        with torch.no_grad(), FusedAttentionStandIn(), PeakTensorBytes() as counter:
            model(**inputs)
        factor = counter.peak / (request.tokens * hidden * 2)
        print(f"transformer ({label}) {width}x{height}x{frames}: {request.tokens} tokens, activations "
              f"{counter.peak / 2**30:.2f} GiB, factor {factor:.2f} (planner: {constant})")


def vae_factor() -> None:
    with torch.device("meta"):
        vae = AutoencoderKLHunyuanVideo().to(torch.bfloat16)
    for tile, frames in ((128, 16), (256, 16), (256, 32), (512, 16)):
        latent = torch.empty(1, 16, frames // 4 + 1, tile // 8, tile // 8, device="meta", dtype=torch.bfloat16)
        with torch.no_grad(), FusedAttentionStandIn(), PeakTensorBytes() as counter:
            out = vae.decoder(vae.post_quant_conv(latent))
        voxels = out.shape[2] * out.shape[3] * out.shape[4]
        print(f"VAE tile {tile}px x {out.shape[2]} frames: {counter.peak / 2**30:.2f} GiB, "
              f"{counter.peak / voxels:.0f} B per output voxel (planner: {vram_planner.VAE_BYTES_PER_OUTPUT_VOXEL})")


if __name__ == "__main__":
    print("device: meta (exact tensor-byte count at the real sizes)")
    transformer_factor()
    vae_factor()
