"""HunyuanVideo's 3D RoPE, with RIFLEx on the time axis for videos longer than the model was trained on.

HunyuanVideo was trained on 129-frame clips (25 latent frames at 4x temporal compression); past
that the temporal rotary frequencies wrap around and long videos loop back to their start.
HunyuanVideo-I2V's inference (`hyvideo/inference.py`, `get_rotary_pos_embed` and
`get_1d_rotary_pos_embed_riflex`, after RIFLEx, Zhao et al. 2025) therefore changes one temporal
frequency above 192 frames: the k-th, k = clamp(2 + (frames + 3) // (4 * 25), 4, 8), becomes
0.9 * 2 pi / latent frames, so it spans less than one period over the whole clip. The spatial axes
keep the plain RoPE. Below the threshold every frequency is diffusers' (and the authors') own.

diffusers' `HunyuanVideoRotaryPosEmbed` has no such switch, so `riflex_rope` stands in for the
model's `rope` module for one sampling run; `frequencies` serves wrappers that lay out their own
token positions (HunyuanCustom's reference frame).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

RIFLEX_CHOICES = ("auto", "off")
RIFLEX_TITLES = {
    "auto": "above 192 frames, the temporal RoPE fix of HunyuanVideo-I2V's authors (RIFLEx) so long videos do not loop",
    "off": "plain RoPE at every length",
}
RIFLEX_ABOVE_FRAMES = 192
TRAINED_LATENT_FRAMES = 25
RIFLEX_PERIOD_SHARE = 0.9  # the authors keep the clip within 90% of one period
VAE_TEMPORAL = 4  # frames per latent frame, in the authors' formula for k


def check_riflex(choice: str) -> None:
    if choice not in RIFLEX_CHOICES:
        raise ValueError(f"riflex must be one of {', '.join(RIFLEX_CHOICES)}, got {choice!r}")


def riflex_index(num_frames: int, choice: str = "auto") -> int | None:
    """The authors' k (1-based index of the temporal frequency to lower) for a `num_frames` video, or
    None when RoPE stays plain (192 frames or fewer, or `choice` "off")."""
    check_riflex(choice)
    if choice == "off" or num_frames <= RIFLEX_ABOVE_FRAMES:
        return None
    return max(4, min(8, 2 + (num_frames + 3) // (VAE_TEMPORAL * TRAINED_LATENT_FRAMES)))


def axis_frequencies(dim: int, positions: torch.Tensor, theta: float, k: int | None = None,
                     latent_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin `[N, dim]` of one axis (pairs interleaved, as diffusers and the authors lay them out);
    with `k`, frequency k-1 is RIFLEx's 0.9 * 2 pi / `latent_frames` (the real models have 8 temporal
    frequencies; an axis with fewer, as the tiny demo model's, gets it on its last one)."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device)[: dim // 2].float() / dim)
    if k is not None:
        freqs[min(k, len(freqs)) - 1] = RIFLEX_PERIOD_SHARE * 2 * math.pi / latent_frames
    angles = torch.outer(positions.float(), freqs)
    return angles.cos().repeat_interleave(2, dim=1).float(), angles.sin().repeat_interleave(2, dim=1).float()


def frequencies(rope: nn.Module, positions: torch.Tensor, latent_frames: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin `[N, head_dim]` for token `positions` `[3, N]` (t, h, w) of a video `latent_frames` long (in
    patches) under `rope` (diffusers' module, or the RIFLEx one standing in for it)."""
    k = getattr(rope, "riflex_k", None)
    axes = [axis_frequencies(rope.rope_dim[i], positions[i].to(device), rope.theta, k if i == 0 else None, latent_frames)
            for i in range(3)]
    return torch.cat([a[0] for a in axes], dim=1), torch.cat([a[1] for a in axes], dim=1)


class RiflexRotaryPosEmbed(nn.Module):
    """diffusers' `HunyuanVideoRotaryPosEmbed` with the temporal frequency `riflex_k` lowered."""

    def __init__(self, base: nn.Module, riflex_k: int):
        super().__init__()
        self.patch_size, self.patch_size_t = base.patch_size, base.patch_size_t
        self.rope_dim, self.theta = base.rope_dim, base.theta
        self.riflex_k = riflex_k

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, frames, height, width = hidden_states.shape
        sizes = (frames // self.patch_size_t, height // self.patch_size, width // self.patch_size)
        grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in sizes), indexing="ij")
        return frequencies(self, torch.stack(grid).reshape(3, -1), sizes[0], hidden_states.device)


@contextmanager
def riflex_rope(model: nn.Module, num_frames: int, choice: str = "auto"):
    """`model.rope` replaced by the RIFLEx one for the body when `num_frames` calls for it (else untouched)."""
    k = riflex_index(num_frames, choice)
    if k is None:
        yield
        return
    base = model.rope
    model.rope = RiflexRotaryPosEmbed(base, k)
    try:
        yield
    finally:
        model.rope = base
