"""HunyuanCustom's reference tokens on diffusers' `HunyuanVideoTransformer3DModel`.

The Custom checkpoint is the plain HunyuanVideo backbone (no new weights); what differs is the
forward pass: the reference latent (one latent frame at the video's size) is patch-embedded by
the same `x_embedder` (the authors' `img_in`) and its tokens go *before* the video tokens, with
RoPE positions one frame earlier (t = -1) and one whole latent width to the right (w + W). They
take part in every block and are dropped before the final layer. diffusers has no hook for extra
latent tokens, so this wrapper runs the model's own modules (embedders, blocks, output layers) in
that order; only the sequence assembly is ours.

It also keeps the authors' step cache: the hidden state before the last single block, saved on a
full step and reused on the steps their schedule names, where only the last block runs.

Under sequence parallel (`pipelines/parallel/`, the model's `_hyvs_sequence_parallel`) the same loop runs
through the rank's wrapper, which shards the streams at the first block that runs and gathers after
`proj_out`: so the reference tokens are dropped after the output layers (they work token by token), and the
step cache keeps the rank's shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rope import frequencies

REFERENCE_FRAME = -1  # RoPE time of the reference tokens


@dataclass
class LastBlockCache:
    """Text and latent hidden states (reference tokens included) entering the last single block."""

    latent: torch.Tensor | None = None
    text: torch.Tensor | None = None


def token_positions(frames: int, height: int, width: int, reference: bool) -> torch.Tensor:
    """RoPE positions `[3, N]` (t, h, w) of the patch grid; with `reference`, the reference frame's
    grid (t = -1, w shifted by `width`) comes first, as the authors' "timecat-w" layout."""
    t, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float32),
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    video = torch.stack([t, h, w]).reshape(3, -1)
    if not reference:
        return video
    rh, rw = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    ref = torch.stack([torch.full_like(rh, REFERENCE_FRAME), rh, rw + width]).reshape(3, -1)
    return torch.cat([ref, video], dim=1)


def _joint_attention_mask(batch: int, latent_tokens: int, text_mask: torch.Tensor, text_tokens: int, device):
    """Latent tokens plus the first `text_mask.sum()` text tokens, as diffusers' model (and the authors'
    varlen attention) use the text mask in the joint blocks."""
    total = latent_tokens + text_tokens
    effective = latent_tokens + text_mask.sum(dim=1, dtype=torch.int)
    keep = torch.arange(total, device=device).unsqueeze(0) < effective.unsqueeze(1)
    return keep.view(batch, 1, 1, total)


class CustomTransformer:
    """Calls a diffusers HunyuanVideo transformer with HunyuanCustom's reference tokens.

    Takes the same arguments as the model's forward plus `ref_latents` `[B, C, 1, H, W]` (the
    video latent's height and width) and, optionally, a `cache` with `reuse_cache`.
    """

    def __init__(self, model):
        self.model = model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self):
        return self.model.config

    def __call__(self, *args, **kwargs):
        parallel = getattr(self.model, "_hyvs_sequence_parallel", None)
        if parallel is not None and parallel.active:
            return parallel.run(self._call, *args, **kwargs)
        return self._call(*args, **kwargs)

    def _call(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        pooled_projections: torch.Tensor,
        ref_latents: torch.Tensor,
        guidance: torch.Tensor | None = None,
        return_dict: bool = False,
        cache: LastBlockCache | None = None,
        reuse_cache: bool = False,
    ):
        m = self.model
        batch, _, frames, height, width = hidden_states.shape
        p, p_t = m.config.patch_size, m.config.patch_size_t
        grid = (frames // p_t, height // p, width // p)
        if ref_latents.shape[0] != batch or ref_latents.shape[2] != 1 or ref_latents.shape[3:] != hidden_states.shape[3:]:
            raise ValueError(
                f"ref_latents must be one latent frame [B, C, 1, H, W] matching the video latent {tuple(hidden_states.shape)}, "
                f"got {tuple(ref_latents.shape)}"
            )
        if reuse_cache and (cache is None or cache.latent is None):
            raise ValueError("reuse_cache needs a cache filled by an earlier full step")
        device = hidden_states.device
        ref_tokens = grid[1] * grid[2]
        freqs = frequencies(m.rope, token_positions(*grid, reference=True), grid[0], device)
        temb, _ = m.time_text_embed(timestep, pooled_projections, guidance)
        text_tokens = encoder_hidden_states.shape[1]
        mask = _joint_attention_mask(batch, ref_tokens + grid[0] * ref_tokens, encoder_attention_mask, text_tokens, device)
        last = m.single_transformer_blocks[-1]

        if reuse_cache:
            latent, text = cache.latent, cache.text
        else:
            latent = torch.cat([m.x_embedder(ref_latents.to(hidden_states.dtype)), m.x_embedder(hidden_states)], dim=1)
            text = m.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
            for block in m.transformer_blocks:
                latent, text = block(latent, text, temb, mask, freqs)
            for block in m.single_transformer_blocks[:-1]:
                latent, text = block(latent, text, temb, mask, freqs)
            if cache is not None:
                cache.latent, cache.text = latent, text
        latent, _ = last(latent, text, temb, mask, freqs)

        latent = m.proj_out(m.norm_out(latent, temb))[:, ref_tokens:]
        latent = latent.reshape(batch, *grid, -1, p_t, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        out = latent.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)
