"""Preview Options node: which frames the samplers' live previews show, attached to a transformer."""

from __future__ import annotations

import dataclasses

from ..previews import FIRST_FRAME, PREVIEW_FRAMES
from ..types import TRANSFORMER
from .transformer_option import TransformerOption

CATEGORY = "HunyuanVideo Suite/sampling"


class HYVSPreviewOptions(TransformerOption):
    DESCRIPTION = (
        "Chooses what the samplers' live previews show while they sample (previews use ComfyUI's preview method "
        "setting: none, auto, latent2rgb or taesd): the first frame, as core's samplers, or a strip of the first, "
        "middle and last frames side by side. Put it between the transformer loader and a HunyuanVideo Suite sampler."
    )
    CATEGORY = CATEGORY
    OUTPUT_TOOLTIPS = ("The same transformer, previewed this way.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "From the transformer loader."}),
                "preview": (list(PREVIEW_FRAMES), {
                    "default": FIRST_FRAME,
                    "tooltip": "first frame: as core's samplers. strip: the first, middle and last frames side by side "
                    "(three previews a step; with taesd that is three tiny-decoder calls).",
                }),
            }
        }

    def apply(self, transformer, preview):
        if preview not in PREVIEW_FRAMES:
            raise ValueError(f"preview must be one of {', '.join(PREVIEW_FRAMES)}")
        return (dataclasses.replace(transformer, preview=preview),)


NODE_CLASS_MAPPINGS = {"HYVS_PreviewOptions": HYVSPreviewOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_PreviewOptions": "HunyuanVideo Suite: Preview Options"}
