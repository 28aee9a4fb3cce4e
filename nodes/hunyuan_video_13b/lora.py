"""The LoRA node of the 13B family (T2V, I2V v1/v2, HunyuanCustom): the shared node on the 13B transformer type."""

from __future__ import annotations

from ...pipelines.hunyuan_video_13b.lora_keys import read_lora
from ..shared.lora import LoraNode
from ..types import TRANSFORMER


class HYVSLoraLoader(LoraNode):
    DESCRIPTION = ("Adds a LoRA to a HunyuanVideo (13B) transformer: style, character, motion or acceleration LoRAs "
                   "in any convention, on bf16 or fp8 weights, offloaded or compiled. Chain several to stack them; the "
                   "model is never reloaded and a strength change re-runs only this node and the sampler.")
    CATEGORY = "HunyuanVideo Suite/loaders"
    TRANSFORMER_TYPE = TRANSFORMER
    RETURN_TYPES = (TRANSFORMER,)
    FAMILY_TITLE = "HunyuanVideo 13B"
    FILTER_TOOLTIP = ("Which blocks this LoRA reaches; empty: all of its modules. 'double': the 20 double-stream "
                      "blocks only (often better when stacking LoRAs), 'single': the 40 single-stream blocks, "
                      "'double:0-9,12': those double blocks (counted from 0, ranges inclusive), terms joined by "
                      "spaces: 'double:0-4 single:10-19'. With a filter, modules outside the blocks (embedders, "
                      "final layer) are left out.")
    read_lora = staticmethod(read_lora)


NODE_CLASS_MAPPINGS = {"HYVS_LoraLoader": HYVSLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_LoraLoader": "HunyuanVideo Suite: LoRA"}
