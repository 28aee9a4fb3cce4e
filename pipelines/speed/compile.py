"""Regional torch.compile: each transformer block compiled on its own.

The 60 blocks share two shapes of code, so compiling them one by one (diffusers calls this regional
compilation) costs about one block's compile time instead of the whole model's. diffusers'
`compile_repeated_blocks` finds blocks by class name and misses the token-replace blocks of I2V v2
(and any subclass), so the blocks are taken from the model's own block lists instead.
"""

from __future__ import annotations

import torch


def transformer_blocks(model) -> list[torch.nn.Module]:
    return [*model.transformer_blocks, *getattr(model, "single_transformer_blocks", ())]  # HunyuanVideo 1.5 has no single blocks


def is_compiled(model) -> bool:
    return any(block._compiled_call_impl is not None for block in transformer_blocks(model))


def set_compiled(model, enabled: bool) -> None:
    """Compile every block (kept across runs, compiled once) or give them back to eager mode."""
    for block in transformer_blocks(model):
        if enabled and block._compiled_call_impl is None:
            block.compile()
        elif not enabled:
            # nn.Module.compile keeps its compiled callable in this attribute; clearing it runs the block eagerly again.
            block._compiled_call_impl = None
