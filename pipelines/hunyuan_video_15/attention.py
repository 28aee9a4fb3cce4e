"""Mask-free joint attention and step-cache support for the HunyuanVideo 1.5 transformer.

The 1.5 forward puts the valid context tokens first (image, byT5, Qwen) and passes every block a
mask over the whole padded context (729 + 256 + 1000 tokens); diffusers' processor always builds a
dense [L, L] mask from it, which rules out the fast kernels. Valid tokens being a prefix, the engine's
mask-free path applies (`pipelines/speed/attention.py`): the context is cut to its longest valid length
at the first block, and the blocks attend without a mask, row by row where lengths differ. diffusers'
1.5 processor cannot run without a mask (it pads the mask unconditionally), so the unmasked call is
restated here from diffusers 0.42's `HunyuanVideo15AttnProcessor2_0` minus its mask.

diffusers' cache hooks need the block class in their registry, which 1.5's block is not (0.42), so it
is registered here with the same metadata as the 13B blocks: (hidden_states, encoder_hidden_states) out.
"""

from __future__ import annotations

import functools

import torch

from ..speed.attention import MaskFreeLayout, register_layout, run_rows


def _processor_base():
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0

    return HunyuanVideo15AttnProcessor2_0


def _unmasked_attention(processor, attn, hidden_states, encoder_hidden_states, image_rotary_emb):
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.embeddings import apply_rotary_emb

    def heads(tensor):
        return tensor.unflatten(2, (attn.heads, -1))

    query = attn.norm_q(heads(attn.to_q(hidden_states)))
    key = attn.norm_k(heads(attn.to_k(hidden_states)))
    value = heads(attn.to_v(hidden_states))
    if image_rotary_emb is not None:
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    text_query = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
    text_key = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
    text_value = heads(attn.add_v_proj(encoder_hidden_states))
    out = dispatch_attention_fn(
        torch.cat([query, text_query], dim=1), torch.cat([key, text_key], dim=1), torch.cat([value, text_value], dim=1),
        dropout_p=0.0, is_causal=False, backend=processor._attention_backend, parallel_config=processor._parallel_config,
    )
    out = out.flatten(2, 3).to(query.dtype)
    video, text = out[:, : hidden_states.shape[1]], out[:, hidden_states.shape[1] :]  # text may be empty
    return attn.to_out[1](attn.to_out[0](video)), attn.to_add_out(text)


@functools.cache
def _mask_free_processor_class():
    base = _processor_base()

    class MaskFree15AttnProcessor(base):
        """diffusers' 1.5 processor; without a mask when the run's context lengths are known."""

        def __init__(self, plan):
            super().__init__()
            self.plan = plan

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            lengths = self.plan.lengths
            if lengths is None:
                backend, self._attention_backend = self._attention_backend, None  # the masked path runs on SDPA
                try:
                    return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
                finally:
                    self._attention_backend = backend

            def call(video, text):
                return _unmasked_attention(self, attn, video, text, image_rotary_emb)

            return run_rows(call, hidden_states, encoder_hidden_states, lengths)

    return MaskFree15AttnProcessor


class HunyuanVideo15Layout(MaskFreeLayout):
    def owns(self, processor) -> bool:
        return isinstance(processor, _processor_base())

    def make_processor(self, plan):
        return _mask_free_processor_class()(plan)

    def trim_hook(self, model, trim):
        """Cut the context (argument 1) and its mask (argument 3) as they enter the first block; later
        blocks get the cut context from the block before and never read the mask."""

        def cut(module, args, kwargs):
            args = list(args)
            for index in (1, 3):
                if index < len(args) and args[index] is not None:
                    args[index] = trim(args[index])
            return tuple(args), kwargs

        return model.transformer_blocks[0].register_forward_pre_hook(cut, with_kwargs=True)


@functools.cache
def install() -> None:
    """Register the 1.5 transformer with the engine's mask-free attention and diffusers' cache hooks (once)."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

    register_layout("HunyuanVideo15Transformer3DModel", HunyuanVideo15Layout())
    TransformerBlockRegistry.register(
        model_class=HunyuanVideo15TransformerBlock,
        metadata=TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=1),
    )
