"""An encoded HunyuanVideo 1.5 prompt as the denoise loop takes it.

The 1.5 transformer reads three context streams: Qwen2.5-VL hidden states, byT5 glyph states (the
quoted text of the prompt) and SigLIP image tokens (zeros for T2V). The image tokens belong to the job,
not the prompt, so the sampler attaches them (`with_image`) to the positive and negative prompt alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch

SIGLIP_TOKENS = 729
SIGLIP_DIM = 1152


@dataclass
class TextEmbeds15:
    qwen: torch.Tensor  # [B, L, 3584] hidden_states[-3] of the tokens after the system prompt
    qwen_mask: torch.Tensor  # [B, L] 1 = real token
    byt5: torch.Tensor  # [B, 256, 1472] the glyph encoder's states (zeros when no quoted text)
    byt5_mask: torch.Tensor  # [B, 256]
    image: torch.Tensor | None = None  # [B, 729, 1152] SigLIP last_hidden_state; zeros for T2V

    def with_image(self, image: torch.Tensor) -> "TextEmbeds15":
        batch = self.qwen.shape[0]
        return replace(self, image=image.expand(batch, -1, -1) if image.shape[0] == 1 else image)

    def repeat(self, batch: int) -> "TextEmbeds15":
        """The same prompt for `batch` videos (a prompt encoded once is [1, ...])."""
        if self.qwen.shape[0] == batch:
            return self
        fields = {name: getattr(self, name) for name in ("qwen", "qwen_mask", "byt5", "byt5_mask", "image")}
        return TextEmbeds15(**{k: None if v is None else v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in fields.items()})

    def to(self, device=None, dtype=None) -> "TextEmbeds15":
        def move(t, float_dtype):
            return None if t is None else t.to(device=device, dtype=float_dtype)

        return TextEmbeds15(move(self.qwen, dtype), move(self.qwen_mask, None), move(self.byt5, dtype),
                            move(self.byt5_mask, None), move(self.image, dtype))

    @cached_property
    def image_mask(self) -> torch.Tensor:
        """1 for every image token of an I2V job, 0 for T2V's zeros (the transformer's own rule)."""
        valid = self.image is not None and not bool(torch.all(self.image == 0))
        return torch.full(self.image.shape[:2], int(valid), dtype=self.qwen_mask.dtype, device=self.qwen_mask.device)

    @cached_property
    def attention_mask(self) -> torch.Tensor:
        """The context's tokens in the transformer's order (image, byT5, Qwen): its sum per row is the number
        of valid context tokens, which is all mask-free attention needs. Made once per prompt (one tensor for
        the whole run, so its lengths are read to the host once, not every step)."""
        return torch.cat([self.image_mask, self.byt5_mask, self.qwen_mask], dim=1)

    @property
    def seq_len(self) -> int:
        return self.attention_mask.shape[1]

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The context inputs of `HunyuanVideo15Transformer3DModel.forward`."""
        if self.image is None:
            raise ValueError("attach the image tokens (with_image) before sampling; T2V uses zeros")
        return {
            "encoder_hidden_states": self.qwen,
            "encoder_attention_mask": self.qwen_mask,
            "encoder_hidden_states_2": self.byt5,
            "encoder_attention_mask_2": self.byt5_mask,
            "image_embeds": self.image,
        }

    @staticmethod
    def stack(embeds: list["TextEmbeds15"]) -> "TextEmbeds15":
        if len(embeds) == 1:
            return embeds[0]
        names = ("qwen", "qwen_mask", "byt5", "byt5_mask", "image")
        return TextEmbeds15(**{n: torch.cat([getattr(e, n) for e in embeds]) for n in names})
