"""An encoded prompt as the denoise loop takes it: text hidden states with their mask, and a pooled vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextEmbeds:
    """One encoded prompt (for the 13B family: Llama hidden states with their mask, and the pooled CLIP vector)."""

    prompt_embeds: torch.Tensor  # [B, L, D]
    attention_mask: torch.Tensor  # [B, L]
    pooled: torch.Tensor  # [B, P]

    def to(self, device=None, dtype=None) -> "TextEmbeds":
        return TextEmbeds(
            self.prompt_embeds.to(device=device, dtype=dtype),
            self.attention_mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )
