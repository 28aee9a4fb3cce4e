"""Mask-free joint attention: text padding trimmed, attention kernels chosen and probed.

diffusers' HunyuanVideo forward always pads the prompt to 256 tokens and passes a key mask to every
block's attention, and a mask rules out the FlashAttention/cuDNN kernels. The mask only ever says
"the first N text tokens are valid" (the forward builds it from the mask's *sum*), so:

- the text stream is cut to its longest prompt right after the token refiner (a forward hook on
  `context_embedder`). The refiner itself still sees the full sequence and the mask position by
  position, which keeps HunyuanCustom's non-prefix mask (SPEC §2 quirk) exact;
- the joint attention of the blocks then runs with no mask. A batch whose prompts differ in length
  (batched CFG, batch > 1) runs row by row, each row on its own valid keys: never the dense masked path.

Padded text rows are queries no video token ever reads (the blocks only let valid text tokens be
keys, and the model outputs only the video tokens), so rows past a shorter prompt are left as zeros.
The video part of the sequence is never looked at, so reference tokens or first-frame tokens of the
I2V/Custom variants need nothing from here.

Both points are the 13B layout's (`MaskFreeLayout`); a family whose transformer differs registers its
own (`register_layout`, e.g. HunyuanVideo 1.5, which cuts the text at its first block).

The kernel goes through diffusers' attention dispatcher; only the blocks' joint attention gets the
chosen backend (the refiner keeps its position-wise mask on SDPA).
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch

log = logging.getLogger("hunyuan_video_suite")

BACKENDS = ("masked", "auto", "sdpa", "sage", "flash")
BACKEND_TITLES = {
    "masked": "padded text with a mask, as plain diffusers",
    "auto": "FlashAttention-3, then FlashAttention-2 where installed, else PyTorch SDPA (exact kernels only)",
    "sdpa": "PyTorch scaled_dot_product_attention (picks cuDNN/flash/efficient itself)",
    "sage": "SageAttention (int8 QK, approximate)",
    "flash": "FlashAttention (3 where installed, else 2)",
}


@dataclass
class AttentionChoice:
    """The backend asked for, the one that runs, and the notice when they differ."""

    requested: str
    dispatcher_name: str | None  # diffusers' AttentionBackendName value; None for the masked path
    notice: str = ""

    @property
    def mask_free(self) -> bool:
        return self.dispatcher_name is not None

    @property
    def title(self) -> str:
        return KERNEL_TITLES[self.dispatcher_name]


KERNEL_TITLES = {None: "masked (as diffusers)", "native": "sdpa, mask-free", "_flash_3": "FlashAttention-3, mask-free",
                 "flash": "FlashAttention-2, mask-free", "sage": "SageAttention, mask-free"}
HALF_DTYPES = (torch.bfloat16, torch.float16)


def _usable(name: str) -> str | None:
    """None when diffusers can run backend `name` here, else why not."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except RuntimeError as e:
        return " ".join(str(e).split())
    return None


@functools.cache
def _test_call(name: str, device: str, dtype: torch.dtype) -> str | None:
    """None when one tiny attention call through diffusers runs on backend `name`, else why not: an
    installed kernel can still refuse diffusers' arguments (an older FlashAttention-3 build) or this
    GPU, and that should fall back here, not fail at the first block."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    try:
        q = torch.zeros(1, 16, 1, 128, device=device, dtype=dtype)
        dispatch_attention_fn(q, q, q, backend=AttentionBackendName(name))
    except Exception as e:  # any failure of an optional kernel means: do not use it
        first_line = (str(e).strip().splitlines() or [""])[0]
        return f"{name} failed a test call ({type(e).__name__}: {first_line})"
    return None


def _splits_sequence(name: str) -> str | None:
    """None when diffusers can run backend `name` context parallel (several GPUs), else why not."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    if _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(name)):
        return None
    return f"{name} cannot run split over several GPUs in this diffusers"


def choose_backend(requested: str, device, dtype: torch.dtype = torch.bfloat16,
                   context_parallel: bool = False) -> AttentionChoice:
    """Probe `requested` on `device` for a model computing in `dtype`; a kernel that cannot run there
    falls back to SDPA with a one-line notice. `context_parallel`: the model runs over several GPUs, so a
    kernel diffusers cannot split (FlashAttention-3 in diffusers 0.42) is passed over."""
    if requested not in BACKENDS:
        raise ValueError(f"attention must be one of {', '.join(BACKENDS)}; got {requested!r}")
    if requested == "masked":
        return AttentionChoice(requested, None)
    if requested == "sdpa":
        return AttentionChoice(requested, "native")
    device_type = torch.device(device).type
    candidates = {"auto": ("_flash_3", "flash"), "flash": ("_flash_3", "flash"), "sage": ("sage",)}[requested]
    reasons = []
    for name in candidates:
        if device_type != "cuda":
            reason = f"{name} needs a CUDA GPU, this runs on {device_type}"
        elif dtype not in HALF_DTYPES:
            reason = f"{name} needs bf16 or fp16 weights, this model computes in {str(dtype).replace('torch.', '')}"
        else:
            reason = ((_splits_sequence(name) if context_parallel else None) or _usable(name)
                      or _test_call(name, str(device), dtype))
        if reason is None:
            return AttentionChoice(requested, name)
        reasons.append(reason)
    choice = AttentionChoice(requested, "native")
    if requested != "auto":
        choice.notice = f"attention '{requested}' is not available ({reasons[-1]}); using PyTorch SDPA instead"
        log.warning(choice.notice)
    return choice


def text_lengths(mask: torch.Tensor) -> tuple[int, ...]:
    """Valid text tokens per batch row: the mask's sum, which is all the joint attention reads."""
    return tuple(int(n) for n in mask.sum(dim=1).tolist())


@dataclass
class _Plan:
    """What the model call in progress needs: text lengths per row (None: behave exactly as diffusers)."""

    lengths: tuple[int, ...] | None = None


class MaskFreeLayout:
    """Where one transformer class needs mask-free attention put in: which attention processors are swapped
    (`owns`), for what (`make_processor(plan)`), and where the text is cut to its longest prompt
    (`trim_hook(model, trim)` returns a removable hook; `trim(tensor)` cuts the token axis).

    This is diffusers' HunyuanVideo (13B) layout; other families register theirs (`register_layout`)."""

    def owns(self, processor) -> bool:
        return isinstance(processor, _base_processor())

    def make_processor(self, plan: "_Plan"):
        return _mask_free_processor_class()(plan)

    def trim_hook(self, model, trim):
        return model.context_embedder.register_forward_hook(lambda module, args, output: trim(output))


_LAYOUTS: dict[str, MaskFreeLayout] = {}


def register_layout(model_class_name: str, layout: MaskFreeLayout) -> None:
    _LAYOUTS[model_class_name] = layout


def _base_processor():
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

    return HunyuanVideoAttnProcessor2_0


def run_rows(call, hidden_states, encoder_hidden_states, lengths: tuple[int, ...]):
    """Joint attention without a mask: the whole batch when every row's text is as long as the tensor,
    else row by row on each row's valid text, padded rows left as zeros. `call(video, text)` -> (video, text)."""
    text = encoder_hidden_states.shape[1]
    if all(n == text for n in lengths):
        return call(hidden_states, encoder_hidden_states)
    video_rows, text_rows = [], []
    for row, n in enumerate(lengths):
        video, words = call(hidden_states[row : row + 1], encoder_hidden_states[row : row + 1, :n])
        video_rows.append(video)
        text_rows.append(torch.nn.functional.pad(words, (0, 0, 0, text - n)))
    return torch.cat(video_rows), torch.cat(text_rows)


@functools.cache
def _mask_free_processor_class():
    base = _base_processor()

    class MaskFreeAttnProcessor(base):
        """diffusers' HunyuanVideo processor, called without a mask (row by row where prompt lengths differ)."""

        def __init__(self, plan: _Plan):
            super().__init__()
            self.plan = plan

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            lengths = self.plan.lengths
            if lengths is None or encoder_hidden_states is None:
                if attention_mask is None:
                    return super().__call__(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb)
                # diffusers' masked path: FlashAttention and SageAttention take no mask, so SDPA runs it
                backend, self._attention_backend = self._attention_backend, None
                try:
                    return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
                finally:
                    self._attention_backend = backend

            def call(video, text):
                return super(MaskFreeAttnProcessor, self).__call__(attn, video, text, None, image_rotary_emb)

            return run_rows(call, hidden_states, encoder_hidden_states, lengths)

    return MaskFreeAttnProcessor


class MaskFreeAttention:
    """Mask-free processors and the text trim of one transformer.

    Made once per model and kept on it (`for_model`), so torch.compile's guards on the processors
    hold from one run to the next; `install()`/`remove()` put them in and take them out per run.
    """

    def __init__(self, model):
        self.model = model
        self.layout = _LAYOUTS.get(type(model).__name__) or MaskFreeLayout()
        self._plan = _Plan()
        self._originals = {}
        self._ours = {}
        self._hook = None

    @classmethod
    def for_model(cls, model) -> "MaskFreeAttention":
        existing = getattr(model, "_hyvs_mask_free", None)
        if existing is None:
            existing = cls(model)
            model._hyvs_mask_free = existing
        return existing

    def install(self, choice: AttentionChoice) -> "MaskFreeAttention":
        from diffusers.models.attention_dispatch import AttentionBackendName

        backend = AttentionBackendName(choice.dispatcher_name)
        for name, module in self.model.named_modules():
            processor = getattr(module, "processor", None)
            if processor is None or not (name in self._ours or self.layout.owns(processor)):
                continue
            if processor is not self._ours.get(name):
                self._originals[name] = processor
                processor = self._ours.get(name) or self.layout.make_processor(self._plan)
                self._ours[name] = processor
                module.set_processor(processor)
            processor._attention_backend = backend
        if self._hook is None:
            self._hook = self.layout.trim_hook(self.model, self._trim_text)
        return self

    def _trim_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._plan.lengths is None:
            return tokens
        return tokens[:, : max(self._plan.lengths)]

    @contextmanager
    def lengths(self, lengths: tuple[int, ...]):
        """Model calls inside run mask-free for prompts of these lengths (one per batch row); nests (a
        sequence-parallel call sets its rows' and its local shard's lengths inside the run's)."""
        previous, self._plan.lengths = self._plan.lengths, tuple(lengths)
        try:
            yield
        finally:
            self._plan.lengths = previous

    @property
    def current_lengths(self) -> tuple[int, ...] | None:
        """The text lengths of the model call in progress (None outside one, or on the masked path)."""
        return self._plan.lengths

    def remove(self) -> None:
        """Give the model diffusers' own processors back."""
        modules = dict(self.model.named_modules())
        for name, processor in self._originals.items():
            modules[name].set_processor(processor)
        self._originals.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
