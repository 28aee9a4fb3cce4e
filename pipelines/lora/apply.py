"""Apply LoRAs to a loaded transformer, change their strengths, remove them (issue 20 item 2, SPEC-lora §6.2).

`apply_loras(model, [LoraChoice or (lora, strength[, block_filter]), ...])` gives every targeted linear layer, fp8
or not, its deltas (`side_path.py`: added at each call, to the weight or on the side, never stored in the weights),
each LoRA within its own block filter (one LoRA on the double blocks only, another on every block), and is
idempotent: the same LoRAs with the same filters again only update the strengths (no reinstall, so a compiled
block is not recompiled), a different list replaces what was installed. The samplers do this for every run
(`run.py`). The base weights are never written, so `remove_loras(model)`
returns exactly the base model and no sequence of changes drifts. `merge=True` (merge.py) trades that for speed
on bf16/fp16 layers: merged from a kept copy, restored from it.

Strengths combine linearly, as in ComfyUI: a layer computes `(W + sum_i s_i * scale_i * B_i A_i) x` (+ each
LoRA's bias and dense deltas times its strength), so two LoRAs add and strength 0 is the base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..weights.fp8_linear import ScaledFp8Linear
from .block_filter import BlockFilter, parse_block_filter
from .fit import misfit
from .lowrank import LoraWeights, LowRank
from .merge import MergedLayer
from .side_path import ATTRIBUTE, BASE, WITH_SIDE_PATH, LoraSidePath, attach, detach

log = logging.getLogger("hunyuan_video_suite")

STATE = "hyvs_loras"  # the model attribute holding what is installed


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA as a node or the CLI asks for it; a loaded transformer carries a tuple of these (`loras`) and the
    samplers apply them for the run."""

    lora: LoraWeights
    strength: float = 1.0
    block_filter: str = ""  # block_filter.py's text; "" reaches every block


@dataclass
class AppliedLoras:
    """What `apply_loras` installed on one model, and the handle to change strengths."""

    loras: tuple[LoraWeights, ...]
    strengths: list[float]
    block_filters: tuple[BlockFilter | None, ...]  # per LoRA; None reaches every target
    merge: bool = False
    side_paths: dict[str, LoraSidePath] = field(default_factory=dict)  # target layer name -> its deltas
    merged: dict[str, MergedLayer] = field(default_factory=dict)  # target layer name -> its merged weights
    layers: list[int] = field(default_factory=list)  # per LoRA: the layers it reaches
    skipped: list[str] = field(default_factory=list)  # "lora: module: why", as ComfyUI's "lora key not loaded"

    def set_strength(self, index: int, strength: float) -> None:
        strengths = list(self.strengths)
        strengths[index] = strength
        self.set_strengths(strengths)

    def set_strengths(self, strengths) -> None:
        """The LoRAs' strengths, written in place: no reinstall, no recompile; merged layers are re-merged from
        their original weights. (In inference mode, which may write both normal tensors and the inference
        tensors of a LoRA applied inside a ComfyUI node.)"""
        strengths = [float(s) for s in strengths]
        if len(strengths) != len(self.loras):
            raise ValueError(f"{len(strengths)} strengths given for {len(self.loras)} LoRAs")
        self.strengths = strengths
        values = torch.tensor(strengths)
        with torch.inference_mode():
            for side in self.side_paths.values():
                side.strength.copy_(values)
        for layer in self.merged.values():
            layer.merge(strengths)

    def summary(self, shown: int = 0) -> str:
        """One line for the sampler's info output; `shown`: how many skipped targets it names."""
        parts = []
        for lora, strength, layers, blocks in zip(self.loras, self.strengths, self.layers, self.block_filters):
            where = f"; blocks {blocks.text}" if blocks is not None else ""
            parts.append(f"{lora.name} x{strength:g} ({layers} layers{where})")
        text = "LoRA: " + ", ".join(parts)
        if self.merge:
            text += f"; {len(self.merged)} layers merged, {len(self.side_paths)} added at each call"
        if self.skipped:
            count = len(self.skipped)
            text += f"; {count} target{'s' if count > 1 else ''} skipped"
            if shown:
                text += f" ({'; '.join(self.skipped[:shown])}{', ...' if count > shown else ''})"
        return text

    def attached_to(self, model: nn.Module) -> bool:
        """Whether every layer this installed is still the model's (quantizing a layer replaces it)."""
        layer = model.get_submodule
        sides = all(getattr(layer(name), ATTRIBUTE, None) is side for name, side in self.side_paths.items())
        return sides and all(layer(name) is merged.layer for name, merged in self.merged.items())


def installed_loras(model: nn.Module) -> AppliedLoras | None:
    return model.__dict__.get(STATE)


def apply_loras(model: nn.Module, loras, block_filter: str | BlockFilter | None = None,
                family: str | None = None, merge: bool = False) -> AppliedLoras:
    """Install `loras` on `model`, replacing any installed before.

    `loras`: `LoraChoice`s, or `(LoraWeights, strength)` / `(LoraWeights, strength, block_filter)` tuples. Each
    LoRA reaches the blocks of its own filter (text, block_filter.py, or a parsed filter); one that brings none
    ("" or None) takes `block_filter`, and with neither it reaches every target. `family`, when given, refuses a
    LoRA made for another model family before anything changes. Targets that are missing, not linear or of another
    shape are skipped and listed in `skipped` (logged once per LoRA). `merge`: merge into plain linear layers
    (merge.py) instead of adding at each call; fp8 layers keep adding at each call. Apply between sampling runs,
    not while a block offloader is attached (it moves only the tensors it found when it attached)."""
    loras, filters = _normalized(model, loras, block_filter)
    if family is not None:
        wrong = next((lora for lora, _ in loras if lora.family != family), None)
        if wrong is not None:
            raise ValueError(f"LoRA {wrong.name} is for {wrong.family}, not for this {family} model")
    current = installed_loras(model)
    if _matches(model, current, loras, filters, merge):
        current.set_strengths([s for _, s in loras])
        return current
    remove_loras(model)
    applied = AppliedLoras(tuple(lora for lora, _ in loras), [s for _, s in loras], filters, merge)
    parts: dict[str, list[tuple[int, LowRank]]] = {}
    for index, ((lora, _), blocks) in enumerate(zip(loras, filters)):
        reached, skipped = 0, []
        for name, delta in lora.targets.items():
            if blocks is not None and not blocks.allows(name):
                continue
            why = _unfit(model, name, delta)
            if why:
                skipped.append(f"{lora.name}: {name}: {why}")
                continue
            parts.setdefault(name, []).append((index, delta))
            reached += 1
        applied.layers.append(reached)
        applied.skipped += skipped
        if skipped:
            log.warning("LoRA %s: %d targets not applied (%s%s)", lora.name, len(skipped), "; ".join(skipped[:3]),
                        ", ..." if len(skipped) > 3 else "")
    for name, deltas in parts.items():
        layer = model.get_submodule(name)
        if merge and MergedLayer.fits(layer, deltas):
            applied.merged[name] = MergedLayer(layer, deltas)
            continue
        side = LoraSidePath(deltas, len(loras), _compute_dtype(layer), layer.weight.device)
        attach(layer, side)
        applied.side_paths[name] = side
    applied.set_strengths(applied.strengths)
    model.__dict__[STATE] = applied
    return applied


def installed_matches(model: nn.Module, loras, block_filter: str | BlockFilter | None = None,
                      merge: bool = False) -> bool:
    """Whether `apply_loras(model, loras, block_filter, merge=merge)` would only update strengths."""
    loras, filters = _normalized(model, loras, block_filter)
    return _matches(model, installed_loras(model), loras, filters, merge)


def _normalized(model: nn.Module, loras, default) -> tuple[list[tuple[LoraWeights, float]], tuple]:
    """[(lora, strength)] and each LoRA's parsed filter (checked against `model`), from any accepted item."""
    default = _parsed(default, model)
    pairs, filters = [], []
    for item in loras:
        if isinstance(item, LoraChoice):
            item = (item.lora, item.strength, item.block_filter)
        lora, strength, *own = item
        pairs.append((lora, float(strength)))
        own = _parsed(own[0], model) if own and own[0] not in (None, "") else None
        filters.append(own if own is not None else default)
    return pairs, tuple(filters)


def _parsed(block_filter: str | BlockFilter | None, model: nn.Module) -> BlockFilter | None:
    if isinstance(block_filter, str) or block_filter is None:
        block_filter = parse_block_filter(block_filter)
    if block_filter is not None:
        block_filter.check(model)
    return block_filter


def _matches(model: nn.Module, current: AppliedLoras | None, loras, filters, merge: bool) -> bool:
    return (current is not None and current.block_filters == filters and current.merge == merge
            and len(current.loras) == len(loras) and all(a is b for a, (b, _) in zip(current.loras, loras))
            and current.attached_to(model))


def remove_loras(model: nn.Module) -> None:
    """Take every LoRA off `model`: side paths detached, merged weights restored from their copies, so what is
    left is the base model, bit for bit."""
    current = installed_loras(model)
    for layer in current.merged.values() if current is not None else ():
        layer.restore()
    for layer in list(model.modules()):
        if type(layer) in BASE:
            detach(layer)
    model.__dict__.pop(STATE, None)


def _unfit(model: nn.Module, name: str, delta: LowRank) -> str | None:
    """Why `delta` cannot go on module `name`, or None: `fit.misfit`'s reasons, or a layer that is not linear."""
    why = misfit(model, name, delta)
    if why is None and type(model.get_submodule(name)) not in WITH_SIDE_PATH:
        return f"a {type(model.get_submodule(name)).__name__}, not a linear layer"
    return why


def _compute_dtype(layer: nn.Module) -> torch.dtype:
    return layer.compute_dtype if isinstance(layer, ScaledFp8Linear) else layer.weight.dtype
