"""Feed-forward parts of the blocks computed over chunks of tokens, to lower the activation peak.

At 720p x 129 frames one single-stream block holds about 18 x tokens x width x 2 bytes at its peak
(12.4 GB): its MLP input and output (4x the width each) and the concatenation with the attention
output (5x) are alive at once. Every linear layer works token by token, so computing
proj_mlp -> activation -> concat -> proj_out (single blocks) and the feed-forwards (double blocks) a
chunk of tokens at a time gives the same numbers and leaves only the attention as a whole-sequence
step. diffusers has feed-forward chunking only for its BasicTransformerBlock, so the HunyuanVideo
blocks get instance-level forwards here; `disable` restores diffusers' own.

The single-block forward below is diffusers 0.42's `HunyuanVideoSingleTransformerBlock.forward`
with steps 1 and 3 reordered and chunked; the attention call is unchanged.
"""

from __future__ import annotations

import types

import torch

DEFAULT_CHUNK_TOKENS = 8192


def _single_block_forward(self, hidden_states, encoder_hidden_states, temb, attention_mask=None,
                          image_rotary_emb=None, *args, **kwargs):
    text_seq_length = encoder_hidden_states.shape[1]
    hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
    norm_hidden_states, gate = self.norm(hidden_states, emb=temb)
    attn_output, context_attn_output = self.attn(
        hidden_states=norm_hidden_states[:, :-text_seq_length, :],
        encoder_hidden_states=norm_hidden_states[:, -text_seq_length:, :],
        attention_mask=attention_mask,
        image_rotary_emb=image_rotary_emb,
    )
    attn_output = torch.cat([attn_output, context_attn_output], dim=1)
    del context_attn_output
    gate = gate.unsqueeze(1)
    out = torch.empty_like(hidden_states)
    for start in range(0, hidden_states.shape[1], self._hyvs_chunk_tokens):
        end = start + self._hyvs_chunk_tokens
        mlp = self.act_mlp(self.proj_mlp(norm_hidden_states[:, start:end]))
        mixed = self.proj_out(torch.cat([attn_output[:, start:end], mlp], dim=2))
        out[:, start:end] = gate * mixed + hidden_states[:, start:end]
    return out[:, :-text_seq_length, :], out[:, -text_seq_length:, :]


def _chunked_feed_forward(self, hidden_states, *args, **kwargs):
    out = None
    for start in range(0, hidden_states.shape[1], self._hyvs_chunk_tokens):
        part = self._hyvs_forward(hidden_states[:, start : start + self._hyvs_chunk_tokens], *args, **kwargs)
        if out is None:
            out = hidden_states.new_empty((*hidden_states.shape[:2], part.shape[2]), dtype=part.dtype)
        out[:, start : start + part.shape[1]] = part
    return out


def enable(model, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
    """Chunk the single blocks' MLP path and the double blocks' feed-forwards of `model`."""
    for block in getattr(model, "single_transformer_blocks", ()):  # HunyuanVideo 1.5 has none
        block._hyvs_chunk_tokens = chunk_tokens
        block.forward = types.MethodType(_single_block_forward, block)
    for block in model.transformer_blocks:
        for ff in (block.ff, block.ff_context):
            ff._hyvs_chunk_tokens = chunk_tokens
            ff._hyvs_forward = type(ff).forward.__get__(ff)
            ff.forward = types.MethodType(_chunked_feed_forward, ff)


def disable(model) -> None:
    """Back to diffusers' own forwards."""
    for module in model.modules():
        if hasattr(module, "_hyvs_chunk_tokens"):
            for name in ("forward", "_hyvs_forward", "_hyvs_chunk_tokens"):
                module.__dict__.pop(name, None)
