"""The LoRA node both local families share: a transformer, a file of ComfyUI's `loras` folder, a strength and an
optional block filter in; the same transformer with that LoRA appended out (each family's module gives it its types
and its file reader).

The node never touches the model: its output is a shallow copy of the loaded transformer whose `loras` has one more
`LoraChoice`, so the base model is loaded once and shared (a branch without the node samples the base model), a
chain of nodes stacks LoRAs, and changing a strength re-runs only this node and the sampler, which installs the
LoRAs for its run (pipelines/lora/run.py). A file is read once per (path, modification time): a strength change
reuses the read LoRA, and the sampler then only writes the new strength (no reinstall, no recompile).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import replace

from ...pipelines.lora.apply import LoraChoice
from ...pipelines.lora.block_filter import parse_block_filter
from ...pipelines.lora.fit import LoraMismatchError
from ...pipelines.lora.formats import LoraFormatError
from ...pipelines.lora.run import check_fits
from .. import host
from ..validation import validate

STRENGTH_RANGE = (-10.0, 10.0)
READ_CACHE_SIZE = 8  # read LoRAs kept (they are shared by every transformer they go on)
_read_cache: OrderedDict = OrderedDict()


class LoraNode:
    """The shared node; a family's subclass sets TRANSFORMER_TYPE, RETURN_TYPES, CATEGORY, FAMILY_TITLE,
    FILTER_TOOLTIP and `read_lora` (its `lora_keys.read_lora`)."""

    TRANSFORMER_TYPE = ""
    FAMILY_TITLE = ""
    FILTER_TOOLTIP = ""
    RETURN_NAMES = ("transformer",)
    OUTPUT_TOOLTIPS = ("The same transformer with this LoRA added to its list (the model is shared, not copied or "
                       "reloaded); the sampler applies every LoRA of the chain for its run.",)
    FUNCTION = "apply"

    @staticmethod
    def read_lora(path):
        raise NotImplementedError

    @classmethod
    def INPUT_TYPES(cls):
        low, high = STRENGTH_RANGE
        return {
            "required": {
                "transformer": (cls.TRANSFORMER_TYPE, {"tooltip": "From the transformer loader, an options node or "
                                "another LoRA node (chain them to stack LoRAs)."}),
                "lora": (host.model_choices("loras", with_diffusers=False), {"tooltip": "A LoRA file in "
                         f"models/loras for {cls.FAMILY_TITLE}, in any circulating convention (musubi/kohya, "
                         "diffusion-pipe, ComfyUI, diffusers; LoHa/LoKr too)."}),
                "strength": ("FLOAT", {"default": 1.0, "min": low, "max": high, "step": 0.01, "tooltip": "How much "
                             "of the LoRA: its delta times this (0: off, negative: the opposite). Stacked LoRAs add: "
                             "W + s1 dW1 + s2 dW2."}),
                "block_filter": ("STRING", {"default": "", "tooltip": cls.FILTER_TOOLTIP}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, strength=None, block_filter=None):
        return validate(cls, {"strength": strength, "block_filter": block_filter},
                        lambda: check_inputs(strength, block_filter))

    def apply(self, transformer, lora, strength, block_filter="", unique_id=None):
        check_inputs(strength, block_filter)
        model = transformer.model
        try:
            blocks = parse_block_filter(block_filter)
            if blocks is not None:
                blocks.check(model)
        except ValueError as e:
            raise ValueError(f"block_filter: {e}") from None
        path = host.resolve_choice("loras", lora)
        if not os.path.isfile(path):
            raise ValueError(f"lora {lora!r} is not a file in ComfyUI's models/loras folder")
        weights = read_cached(path, type(self).read_lora)
        try:
            messages = check_fits(weights, model)
        except LoraMismatchError as e:
            raise ValueError(f"lora {lora!r} is not a {self.FAMILY_TITLE} LoRA: {e}") from None
        note = f"{weights.name}: {len(weights.targets)} modules, strength {strength:g}"
        if messages:
            host.log.warning("LoRA %s", "; ".join(messages))
            note += f"; {len(messages)} not loaded ({messages[0]}{', ...' if len(messages) > 1 else ''})"
        host.send_progress_text(note, unique_id)
        choice = LoraChoice(weights, float(strength), (block_filter or "").strip())
        return (replace(transformer, loras=(*getattr(transformer, "loras", ()), choice)),)


def check_inputs(strength, block_filter) -> None:
    """The inputs' own rules, before any file is read; ValueError naming the input."""
    low, high = STRENGTH_RANGE
    if not low <= strength <= high:
        raise ValueError(f"strength must be between {low:g} and {high:g}, got {strength}")
    try:
        parse_block_filter(block_filter)
    except ValueError as e:
        raise ValueError(f"block_filter: {e}") from None


def read_cached(path: str, read):
    """`read(path)`, kept per (path, modification time, size, reader) so that the same file is read once; a file
    that changed on disk is read again."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, read)
    if key in _read_cache:
        _read_cache.move_to_end(key)
        return _read_cache[key]
    try:
        weights = read(path)
    except LoraFormatError as e:
        raise ValueError(f"lora: {e}") from None
    _read_cache[key] = weights
    while len(_read_cache) > READ_CACHE_SIZE:
        _read_cache.popitem(last=False)
    return weights
