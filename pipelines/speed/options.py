"""Speed options of a transformer and their application around one sampling run.

`SpeedOptions` rides on `LoadedTransformer.speed`; its default is the fast exact path: mask-free
attention on the fastest exact kernel installed (same result as diffusers' masked attention to
float precision), no cache (caches change the output), eager. `open_speed` installs what the options ask for on the model for the
run and takes it off again afterwards (compiled blocks stay compiled, as compiling is the slow part),
so one loaded model can serve samplers with different options.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from .attention import BACKENDS, MaskFreeAttention, choose_backend, text_lengths
from .compile import set_compiled
from .step_cache import CACHE_PRESETS, THRESHOLD_PRESETS, StepCache


@dataclass(frozen=True)
class SpeedOptions:
    attention: str = "auto"  # see attention.BACKENDS; "masked" runs diffusers' padded path
    cache: str = "off"  # see step_cache.CACHE_PRESETS
    cache_threshold: float | None = None  # None: the preset's published threshold
    compile: bool = False

    def validate(self) -> None:
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {', '.join(BACKENDS)}; got {self.attention!r}")
        if self.cache not in CACHE_PRESETS:
            raise ValueError(f"cache must be one of {', '.join(CACHE_PRESETS)}; got {self.cache!r}")
        if self.cache_threshold is not None and not self.cache_threshold >= 0:
            raise ValueError(f"cache_threshold must be 0 or more, got {self.cache_threshold}")


class SpeedSession:
    """The options installed on one model; wrap each model call in `call(...)`."""

    def __init__(self, model, options: SpeedOptions, variant: str, steps: int, device):
        options.validate()
        self.options = options
        self.steps = steps
        self.attention = self.cache = None
        self._lengths: dict[int, tuple[torch.Tensor, tuple[int, ...] | None]] = {}
        choice = choose_backend(options.attention, device, model.dtype,
                                context_parallel=hasattr(model, "_hyvs_sequence_parallel"))
        self.notice = choice.notice
        self.attention_title = choice.title
        try:
            self.cache = StepCache(model, options.cache, options.cache_threshold, variant)
            self.attention = MaskFreeAttention.for_model(model).install(choice) if choice.mask_free else None
            set_compiled(model, options.compile)
        except Exception:
            self.close()  # a refused option leaves the model as it was
            raise

    def _lengths_of(self, mask: torch.Tensor) -> tuple[int, ...] | None:
        """Text lengths of `mask`, read to the host once per mask tensor (not once per step).

        None (the masked path) when a row has no valid token, which the trimmed path cannot express."""
        known = self._lengths.get(id(mask))
        if known is None or known[0] is not mask:
            lengths = text_lengths(mask)
            known = (mask, lengths if min(lengths) > 0 else None)
            self._lengths[id(mask)] = known
        return known[1]

    @contextmanager
    def call(self, attention_mask: torch.Tensor, branch: str, step_index: int):
        """One transformer call: `attention_mask` is the call's text mask [B, L] (keep one tensor for the
        whole run), `branch` names its CFG branch ("cond", "uncond"; one cache state each)."""
        with self.cache.call(branch, step_index, self.steps):
            lengths = self._lengths_of(attention_mask) if self.attention is not None else None
            with self.attention.lengths(lengths) if lengths is not None else nullcontext():
                yield

    def summary(self) -> str:
        parts = [f"attention {self.attention_title}"]
        if self.cache.enabled:
            threshold = f" {self.cache.threshold:g}" if self.cache.preset in THRESHOLD_PRESETS else ""
            parts.append(f"cache {self.cache.preset}{threshold}: {self.cache.stats.text()}")
        if self.options.compile:
            parts.append("compiled blocks")
        text = "speed: " + "; ".join(parts)
        return f"{text} ({self.notice})" if self.notice else text

    def close(self) -> None:
        if self.attention is not None:
            self.attention.remove()
        if self.cache is not None:
            self.cache.remove()


@contextmanager
def open_speed(transformer, steps: int, device):
    """Install `transformer.speed` (a LoadedTransformer, or a bare model: default options) for one run."""
    model = getattr(transformer, "model", transformer)
    options = getattr(transformer, "speed", None) or SpeedOptions()
    session = SpeedSession(model, options, getattr(transformer, "variant", "t2v"), steps, device)
    try:
        yield session
    finally:
        session.close()
