"""Memory options for a loaded transformer: block offload and fp8 matmuls (the VRAM planner does the rest)."""

from __future__ import annotations

from dataclasses import replace

from ...pipelines.memory.offload import MemoryOptions
from ..types import TRANSFORMER
from .transformer_option import TransformerOption

OFFLOAD_CHOICES = ["auto", "off", "resident blocks"]


class HYVSMemoryOptions(TransformerOption):
    DESCRIPTION = (
        "How the transformer uses GPU memory. By default the planner keeps as many blocks on the GPU as the "
        "request leaves room for and streams the rest from CPU memory; here you can switch that off or fix the count."
    )
    CATEGORY = "HunyuanVideo Suite/loaders"
    OUTPUT_TOOLTIPS = ("The same transformer with these memory options attached (the weights are shared, not copied).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "From the transformer loader."}),
                "offload": (
                    OFFLOAD_CHOICES,
                    {
                        "default": "auto",
                        "tooltip": "auto: the planner keeps as many of the 60 blocks on the GPU as fit and streams the "
                        "others ahead of use (a 24 GB card runs 544p x 129 frames this way). off: everything on the GPU "
                        "(fastest, needs ~26 GB + activations in bf16). resident blocks: keep exactly that many.",
                    },
                ),
                "resident_blocks": (
                    "INT",
                    {"default": 20, "min": 0, "max": 200, "tooltip": "Blocks kept on the GPU when offload is 'resident blocks' (0 = stream all)."},
                ),
                "fp8_matmul": (
                    ["off", "auto"],
                    {
                        "default": "off",
                        "tooltip": "auto: fp8-stored block linears multiply in fp8 on GPUs that can (RTX 40xx, H100 and "
                        "newer; faster, slightly less exact). Elsewhere they compute in bf16 as with off.",
                    },
                ),
            }
        }

    def apply(self, transformer, offload, resident_blocks, fp8_matmul):
        if offload not in OFFLOAD_CHOICES:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}; got {offload!r}")
        options = MemoryOptions(offload=resident_blocks if offload == "resident blocks" else offload, fp8_compute=fp8_matmul)
        options.validate()
        return (replace(transformer, memory=options),)


NODE_CLASS_MAPPINGS = {"HYVS_MemoryOptions": HYVSMemoryOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_MemoryOptions": "HunyuanVideo Suite: Memory Options"}
