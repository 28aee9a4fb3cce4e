"""The VRAM planner's choices for HunyuanVideo 1.5 at the real sizes, per card size (planned, not measured).

    python3 benchmarks/planner_hv15.py

Builds the real 8.3B transformer (diffusers' default config: 54 double blocks, 16 heads x 128) and the real
VAE (in fp16, for `plan_memory`'s decode tiling) on `meta`, so no memory is needed, and asks
`plan_memory` (offload auto) what it does at 848x480x121 and 1280x720x121 for each amount of free GPU
memory, with bf16 weights (weight_dtype auto: the planner may store the block linears in fp8 to fit) and
fp8 weights, the CFG branches one after the other (batch 1) or batched (batch 2); then the super-resolution DiT
(the same blocks, 98 input channels, CFG 1) at its output sizes, 1280x720x121 (from 480p) and 1904x1072x121
(from 720p, the authors' bucket for 1280x720). Prints per request the
estimate with every block streamed and with all of them resident, then per card: resident blocks of 54,
"+fp8" where the planner chose fp8 storage, "ch" where it runs the feed-forwards in token chunks, and the
estimated sampling peak in GiB; or "does not fit" with the floor it would need. The activation constant is
measured for mask-free attention (vram_planner.py); diffusers' masked path also builds a dense [L, L] mask
(13 GB at 720p x 121), which is not planned.
"""

from __future__ import annotations

import _pack  # noqa: F401  (registers the pack as hunyuan_video_suite)
import torch
from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import BLOCK_CONTAINERS
from hunyuan_video_suite.pipelines.memory.vram_planner import (
    HV15_PROFILE,
    DoesNotFit,
    GiB,
    ModelFacts,
    Request,
    plan_memory,
    sampling_bytes,
)

SIZES = ((848, 480, 121), (1280, 720, 121))
SR_SIZES = ((1280, 720, 121), (1904, 1072, 121))  # the SR stage's outputs: 480p -> 720p, 720p -> 1080p
CARDS_GB = (8, 12, 16, 24, 32, 48, 80)  # free GPU memory, GiB (what the planner is given)


def model_facts(in_channels: int = 65) -> dict[str, ModelFacts]:
    with torch.device("meta"):
        model = HunyuanVideo15Transformer3DModel(in_channels=in_channels, out_channels=32).to(torch.bfloat16)
    bf16 = ModelFacts.from_model(model, BLOCK_CONTAINERS, HV15_PROFILE)
    return {"bf16": bf16, "fp8": bf16.as_fp8()}


def vae_bytes() -> int:
    with torch.device("meta"):
        vae = AutoencoderKLHunyuanVideo15().to(torch.float16)
    return sum(p.numel() * p.element_size() for p in vae.parameters())


def cell(free: int, facts: ModelFacts, request: Request, vae: int) -> str:
    try:
        plan = plan_memory(free, facts, request, offload="auto", allow_fp8=True, vae_bytes=vae)
    except DoesNotFit as refusal:
        return f"does not fit ({refusal.needed / GiB:.1f})"
    flags = (" +fp8" if plan.quantize else "") + (" ch" if plan.chunk_tokens else "")
    return f"{plan.resident_blocks}/{plan.total_blocks}{flags}, {plan.sampling_bytes / GiB:.1f}"


def main() -> None:
    facts, vae = model_facts(), vae_bytes()
    bf16 = facts["bf16"]
    print(f"device: meta (planner estimates, not measurements); transformer {sum(bf16.block_bytes) / GiB:.2f} GiB in "
          f"{len(bf16.block_bytes)} blocks + {bf16.other_bytes / GiB:.2f} GiB other weights (bf16); VAE "
          f"{vae / GiB:.2f} GiB (fp16)")
    print("cell: resident blocks of 54 [+fp8: stored fp8 to fit] [ch: feed-forwards in token chunks], estimated "
          "sampling peak GiB")
    for width, height, frames in SIZES:
        table(f"{width}x{height}x{frames}", facts, vae, width, height, frames, (("sequential", 1), ("batched", 2)))
    sr_facts = model_facts(in_channels=98)
    for width, height, frames in SR_SIZES:
        table(f"super-resolution DiT, output {width}x{height}x{frames}", sr_facts, vae, width, height, frames,
              (("1 (off)", 1),))


def table(title: str, facts: dict[str, ModelFacts], vae: int, width: int, height: int, frames: int, cfgs) -> None:
    header = " | ".join(f"{gb} GB free" for gb in CARDS_GB)
    print(f"\n{title}")
    print(f"| weights | CFG | all streamed | all resident | {header} |")
    print("|" + "---|" * (4 + len(CARDS_GB)))
    for weights, model in facts.items():
        for cfg, batch in cfgs:
            request = Request.for_profile(HV15_PROFILE, width, height, frames, batch, latent_channels=32)
            streamed = sampling_bytes(model, request, 0, chunked=True) / GiB
            resident = sampling_bytes(model, request, len(model.block_bytes)) / GiB
            cells = " | ".join(cell(gb * GiB, model, request, vae) for gb in CARDS_GB)
            print(f"| {weights} | {cfg} | {streamed:.1f} | {resident:.1f} | {cells} |")


if __name__ == "__main__":
    main()
