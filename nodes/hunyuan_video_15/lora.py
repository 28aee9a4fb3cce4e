"""The LoRA node of HunyuanVideo 1.5 (T2V, I2V and the super-resolution DiT): the shared node on the 1.5 type."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.lora_keys import read_lora
from ..shared.lora import LoraNode
from ..types import HV15_TRANSFORMER


class HYVSHV15LoraLoader(LoraNode):
    DESCRIPTION = ("Adds a LoRA to a HunyuanVideo 1.5 transformer: musubi, ComfyUI (fused qkv) or diffusers files, "
                   "e.g. lightx2v's 4-step LoRA (4 steps, shift 7, cfg 1 on the 480p T2V cfg-distilled model). Chain "
                   "several to stack them; the model is never reloaded and a strength change re-runs only this node "
                   "and the sampler.")
    CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
    TRANSFORMER_TYPE = HV15_TRANSFORMER
    RETURN_TYPES = (HV15_TRANSFORMER,)
    FAMILY_TITLE = "HunyuanVideo 1.5"
    FILTER_TOOLTIP = ("Which blocks this LoRA reaches; empty: all of its modules. HunyuanVideo 1.5 has double-stream "
                      "blocks only (54): 'double' (all of them, leaving out modules outside the blocks), "
                      "'double:0-26' (the first half, counted from 0, ranges inclusive), 'double:0-9,40-53'. 'single' "
                      "is refused: this model has none.")
    read_lora = staticmethod(read_lora)


NODE_CLASS_MAPPINGS = {"HYVS_HV15LoraLoader": HYVSHV15LoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_HV15LoraLoader": "HunyuanVideo Suite: HV1.5 LoRA"}
