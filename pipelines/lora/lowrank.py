"""The one form every LoRA file is read into, whatever its key convention (SPEC-lora §6.1).

A file becomes, per target module of the pack's diffusers model (e.g. `transformer_blocks.0.attn.to_q`), one
`LowRank`: down `A` [rank, in], up `B` [out, rank] and `scale` = alpha / rank, applied once (1.0 where the file
has no alpha: its B already holds it), plus the bias and full-weight deltas some converters write (ComfyUI's
`.diff_b` / `.diff`; a LoKr/LoHa expanded to its dense delta). Fused layers of a file (the 13B `img_attn_qkv`,
the single blocks' `linear1`) arrive here already split by rows of B onto their targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LowRank:
    down: torch.Tensor | None  # A [rank, in_features]; None for a dense-only delta
    up: torch.Tensor | None  # B [out_features, rank]
    scale: float = 1.0  # alpha / rank
    bias: torch.Tensor | None = None  # [out_features], added to the output
    weight: torch.Tensor | None = None  # [out_features, in_features], a dense weight delta

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight delta at strength 1 (for merging and for tests)."""
        out = torch.zeros((), dtype=dtype)
        if self.down is not None:
            out = self.scale * (self.up.to(dtype) @ self.down.to(dtype))
        if self.weight is not None:
            out = out + self.weight.to(dtype)
        return out


@dataclass
class LoraWeights:
    name: str  # the file's name, for messages
    family: str  # "hunyuan_video_13b" or "hunyuan_video_15"
    targets: dict[str, LowRank]  # module name in the pack's diffusers model -> its delta
    unmatched: list[str] = field(default_factory=list)  # file keys that match no module (reported, as ComfyUI does)
