"""Checking a read LoRA against the model it is meant for, before anything is sampled.

A target the model lacks, or whose shape differs (e.g. an `img_in` trained on 32 channels on a 33-channel I2V
model), is skipped with a message, as ComfyUI skips it. A LoRA none of whose targets fits is refused outright:
that is a LoRA of the other HunyuanVideo family (a 1.5 LoRA is 2048 wide, a 13B model 3072) or of no
HunyuanVideo model at all, and sampling with nothing applied would look like success.
"""

from __future__ import annotations

import torch
from torch import nn

from .lowrank import LoraWeights, LowRank


class LoraMismatchError(ValueError):
    """A LoRA none of whose modules fits the model it was given."""


def check_against(lora: LoraWeights, model: nn.Module) -> list[str]:
    """Drop from `lora.targets` what `model` cannot take and return one message per key or target not loaded;
    raise `LoraMismatchError` when nothing is left."""
    messages = [f"{lora.name}: key not loaded: {key}" for key in lora.unmatched]
    misfits = []
    for target, low in list(lora.targets.items()):
        problem = misfit(model, target, low)
        if problem:
            misfits.append(f"{target}: {problem}")
            del lora.targets[target]
    messages += [f"{lora.name}: skipped {misfit}" for misfit in misfits]
    if not lora.targets:
        if misfits:
            example = misfits[0]
        elif lora.unmatched:
            example = f"its keys name no module of the {lora.family} family, e.g. {lora.unmatched[0]}"
        else:
            example = "it holds no LoRA weights"
        raise LoraMismatchError(
            f"{lora.name} does not fit this {type(model).__name__} ({lora.family}): none of its modules does "
            f"({example}). Is it a LoRA for the other HunyuanVideo family, or for another model?"
        )
    return messages


def misfit(model: nn.Module, target: str, low: LowRank) -> str | None:
    """Why `model` cannot take `low` at `target`, or None."""
    try:
        module = model.get_submodule(target)
    except AttributeError:
        return "the model has no such module"
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return "the module has no weight"
    expected = tuple(weight.shape[:1]) + ((weight.shape[1:].numel(),) if weight.ndim > 1 else ())
    if (low.down is None) != (low.up is None):
        return "down and up do not pair (one of them is missing)"
    if low.down is not None and low.down.shape[0] != low.up.shape[1]:
        return f"down and up do not pair (ranks {low.down.shape[0]} and {low.up.shape[1]})"
    shapes = []
    if low.down is not None:
        shapes.append((low.up.shape[0], low.down.shape[1]))
    if low.weight is not None:
        shapes.append(tuple(low.weight.shape))
    for shape in shapes:
        if tuple(shape) != expected:
            return f"LoRA shape {tuple(shape)}, the model's {expected}"
    if low.bias is not None:
        if getattr(module, "bias", None) is None:
            return "a bias delta for a module without bias"
        if tuple(low.bias.shape) != expected[:1]:
            return f"LoRA bias {tuple(low.bias.shape)}, the model's {expected[:1]}"
    return None
