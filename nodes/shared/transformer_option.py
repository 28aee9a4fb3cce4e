"""What every option node between the transformer loader and a sampler shares: the transformer in, the same
transformer out with options attached. Each node adds its DESCRIPTION, CATEGORY, OUTPUT_TOOLTIPS, inputs and `apply`."""

from __future__ import annotations

from ..types import TRANSFORMER


class TransformerOption:
    RETURN_TYPES = (TRANSFORMER,)
    RETURN_NAMES = ("transformer",)
    FUNCTION = "apply"
