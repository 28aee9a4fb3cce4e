"""An encoded prompt as the denoise loop takes it.

The loop needs only four things of a family's prompt type: `to(device, dtype)`, `attention_mask` (its
per-row sum is the valid context length mask-free attention reads), `seq_len`, `model_kwargs()` (the
transformer's context inputs) and `stack(list)` (branches batched into one call). This is the 13B
family's; HunyuanVideo 1.5 has its own (`hunyuan_video_15/text_embeds.py`).
"""

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

    @property
    def seq_len(self) -> int:
        return self.prompt_embeds.shape[1]

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The context inputs of `HunyuanVideoTransformer3DModel.forward`."""
        return {
            "encoder_hidden_states": self.prompt_embeds,
            "encoder_attention_mask": self.attention_mask,
            "pooled_projections": self.pooled,
        }

    @staticmethod
    def stack(embeds: list["TextEmbeds"]) -> "TextEmbeds":
        if len(embeds) == 1:
            return embeds[0]
        return TextEmbeds(*(torch.cat([getattr(e, f) for e in embeds]) for f in ("prompt_embeds", "attention_mask", "pooled")))
