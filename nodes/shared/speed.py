"""Speed options node: attention kernel, step cache and compile, attached to a transformer."""

from __future__ import annotations

import dataclasses

from ...pipelines.speed.attention import BACKEND_TITLES, BACKENDS, choose_backend
from ...pipelines.speed.options import SpeedOptions
from ...pipelines.speed.step_cache import CACHE_PRESETS, PRESET_TITLES, RECOMMENDED_PRESET
from .. import host
from ..types import TRANSFORMER
from .transformer_option import TransformerOption

CATEGORY = "HunyuanVideo Suite/sampling"


def _choices_tooltip(titles: dict) -> str:
    return " ".join(f"{name}: {title}." for name, title in titles.items())


class HYVSSpeedOptions(TransformerOption):
    DESCRIPTION = (
        "Makes sampling faster: mask-free attention with the fastest installed kernel, an optional step cache "
        "and torch.compile. Put it between the transformer loader and any HunyuanVideo Suite sampler; "
        "the sampler reports how many transformer calls the cache skipped."
    )
    CATEGORY = CATEGORY
    OUTPUT_TOOLTIPS = ("The same transformer, sampled with these options.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "From the transformer loader."}),
                "attention": (
                    list(BACKENDS),
                    {
                        "default": "auto",
                        "tooltip": "Attention kernel; every choice but masked trims the prompt padding so no mask is "
                        "needed (same result to float precision). A kernel that is not installed falls back to SDPA "
                        "with a notice. " + _choices_tooltip(BACKEND_TITLES),
                    },
                ),
                "cache": (
                    list(CACHE_PRESETS),
                    {
                        "default": "off",
                        "tooltip": "Step cache: skips most of the transformer on steps that change little. "
                        f"{RECOMMENDED_PRESET} halves the calls at 50 steps on real weights. " + _choices_tooltip(PRESET_TITLES),
                    },
                ),
                "cache_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                        "tooltip": "0 uses the preset's published threshold; higher skips more steps and changes the look more.",
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile each transformer block (one-time compile of a minute or two; "
                        "needs a working Triton on GPU).",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def apply(self, transformer, attention, cache, cache_threshold, compile, unique_id=None):
        options = SpeedOptions(
            attention=attention, cache=cache, cache_threshold=cache_threshold or None, compile=bool(compile)
        )
        options.validate()
        choice = choose_backend(attention, host.torch_device(), transformer.dtype)  # probed now, so a missing kernel shows before sampling
        host.send_progress_text(choice.notice or f"attention: {choice.title}", unique_id)
        return (dataclasses.replace(transformer, speed=options),)


NODE_CLASS_MAPPINGS = {"HYVS_SpeedOptions": HYVSSpeedOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_SpeedOptions": "HunyuanVideo Suite: Speed Options"}
