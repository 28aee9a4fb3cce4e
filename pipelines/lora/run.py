"""A loaded transformer's LoRAs put on its model for one sampling run: what every sampler does first.

A LoRA node (or the CLI's `--lora`) never touches the model: it returns a copy of the loaded transformer with one
more `LoraChoice` in its `loras`, so the base model is loaded once and shared, and a strength change re-runs only
that node and the sampler. Two loaded transformers may therefore share one model object (ComfyUI branches: one
with LoRAs, one without), and the model carries whatever the last run installed. So each run starts by installing
exactly `transformer.loras` (`loras_for_run`): the same LoRAs as the run before only get their strengths written
(no reinstall, no recompile of compiled blocks), other ones replace them, none takes every LoRA off and the run
samples the base model.

Where: `memory/sampling_memory.transformer_on_device` calls it after any fp8 quantization and before a block
offloader attaches, so the LoRA tensors are part of the blocks the offloader streams (nodes and CLI go through it);
each sampler calls it again before its first model call, with its family, which refuses a LoRA of the other family
and gives callers that skip `transformer_on_device` (tests, scripts) the same behaviour. The second call finds
the same LoRAs installed and only writes strengths.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from torch import nn

from .apply import AppliedLoras, apply_loras, installed_loras, installed_matches, remove_loras
from .fit import check_against
from .lowrank import LoraWeights

log = logging.getLogger("hunyuan_video_suite")
SHOWN_MESSAGES = 3  # the info line names this many unloaded keys or skipped targets, the log all of them


def loras_for_run(transformer, family: str | None = None) -> AppliedLoras | None:
    """Install `transformer.loras` on `transformer.model` (or take every LoRA off when it has none) and return what
    is installed (None: no LoRA). A bare model (no `loras` field) is left as it is.

    `family`: the sampler's model family; a LoRA read for the other one is refused before anything changes. A LoRA
    none of whose modules fits the model is refused with `fit.check_against`'s message (LoraMismatchError)."""
    choices = getattr(transformer, "loras", None)
    model = getattr(transformer, "model", transformer)
    if choices is None:
        return installed_loras(model)
    choices = tuple(choices)
    if not choices:
        if installed_loras(model) is not None:
            remove_loras(model)
        return None
    if family is not None:
        wrong = next((c.lora for c in choices if c.lora.family != family), None)
        if wrong is not None:
            raise ValueError(f"LoRA {wrong.name} is for {_title(wrong.family)}, not for this {_title(family)} "
                             f"model: load it with the LoRA node of its family")
    if installed_matches(model, choices):
        return apply_loras(model, choices)  # strengths only
    for choice in choices:
        check_fits(choice.lora, model)
    if _blocks_streamed(model):
        raise RuntimeError("LoRAs must be installed before a block offloader attaches (the offloader streams only "
                           "the tensors it found): sample inside memory/sampling_memory.transformer_on_device")
    applied = apply_loras(model, choices)
    for message in unloaded_keys(applied):
        log.warning("%s", message)
    return applied


def check_fits(lora: LoraWeights, model: nn.Module) -> list[str]:
    """`fit.check_against` without changing `lora` (a read LoRA is shared by every model it goes on): one message per
    key or target not loaded; LoraMismatchError when none of its modules fits `model`."""
    return check_against(replace(lora, targets=dict(lora.targets)), model)


def unloaded_keys(applied: AppliedLoras | None) -> list[str]:
    """The file keys that name no module (ComfyUI's "lora key not loaded") and the targets skipped on this model."""
    if applied is None:
        return []
    keys = [f"{lora.name}: key not loaded: {key}" for lora in applied.loras for key in lora.unmatched]
    return keys + [f"skipped {target}" for target in applied.skipped]


def with_lora_summary(text: str, applied: AppliedLoras | None) -> str:
    """A sampler's info line with the LoRAs of the run (their strengths, layers, block filters), naming the first
    targets skipped and the first file keys not loaded."""
    if applied is None:
        return text
    parts = [text, applied.summary(SHOWN_MESSAGES)]
    names = [f"{lora.name}: {key}" for lora in applied.loras for key in lora.unmatched]
    if names:
        more = ", ..." if len(names) > SHOWN_MESSAGES else ""
        parts.append(f"{len(names)} LoRA key{'s' if len(names) > 1 else ''} not loaded "
                     f"({', '.join(names[:SHOWN_MESSAGES])}{more})")
    return "; ".join(parts)


def _blocks_streamed(model: nn.Module) -> bool:
    """Whether the model's tensors are spread over devices, as a block offloader leaves them while attached (the
    streamed blocks at home, the rest on the GPU); a LoRA installed then would stay at home with its block."""
    devices = {p.device for p in model.parameters()}
    return len(devices) > 1


def _title(family: str) -> str:
    return {"hunyuan_video_13b": "HunyuanVideo 13B", "hunyuan_video_15": "HunyuanVideo 1.5"}.get(family, family)
