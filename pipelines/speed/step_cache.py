"""Step caches: skip most of a transformer call when it would change little since the last one.

Two families, both as diffusers hooks on the transformer blocks, so they work for every variant
(T2V, I2V v1/v2, Custom) and keep one state per CFG branch through diffusers' `cache_context`:

- `first_block`: diffusers' First Block Cache. The first block always runs; when its residual moved
  less than the threshold (relative mean absolute change), the other blocks are skipped and their
  cached residual is added. ParaAttention's default for HunyuanVideo is 0.06 (~1.6x on real weights).
- `teacache`: TeaCache (Liu et al. 2024), which diffusers lacks, so it is written here on diffusers'
  hook machinery. Before the first block, the relative L1 change of its modulated input is rescaled
  with the polynomial the authors fitted for HunyuanVideo and accumulated; while the sum stays under
  the threshold the whole block stack is skipped and the last residual reused. The first and last
  steps always run. Published: 0.1 -> 1.6x, 0.15 -> 2.1x at 50 steps (TeaCache4HunyuanVideo).

A threshold of 0 never skips, so both are exact at 0. HunyuanCustom's own fixed 30-step schedule
is a switch of the Custom sampler (`custom_transformer.LastBlockCache`), not a preset here.

Under sequence parallel each rank holds a shard of the tokens: the parallel wrapper installs a sum over
its ranks (`set_statistics_reduce`), and both caches then measure the change over the whole sequence,
so every rank takes the same skip. Without one, the decision is computed exactly as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

CACHE_PRESETS = ("off", "first_block", "teacache", "teacache_fast")
PRESET_TITLES = {
    "off": "every step runs the whole transformer",
    "first_block": "First Block Cache, threshold 0.06 (~1.6x on real weights)",
    "teacache": "TeaCache, threshold 0.1 (~1.6x at 50 steps on real weights)",
    "teacache_fast": "TeaCache, threshold 0.15 (~2.1x at 50 steps on real weights)",
}
THRESHOLD_PRESETS = ("first_block", "teacache", "teacache_fast")
# The published thresholds were measured on T2V; I2V and Custom share the backbone and use them
# unchanged until measured otherwise.
PRESET_THRESHOLDS = {
    variant: {"first_block": 0.06, "teacache": 0.10, "teacache_fast": 0.15}
    for variant in ("t2v", "i2v_v1", "i2v_v2", "custom")
}
RECOMMENDED_PRESET = "teacache_fast"
# TeaCache's rescaling polynomial for HunyuanVideo (highest power first), from the TeaCache paper's code.
TEACACHE_HUNYUAN_COEFFICIENTS = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02)

_TEACACHE_HEAD = "hyvs_teacache_head"
_TEACACHE_BLOCK = "hyvs_teacache_block"
_REDUCE = "_hyvs_cache_reduce"


def set_statistics_reduce(model, reduce) -> None:
    """`reduce(tensor)` sums a tensor over the ranks that share `model`'s sequence (None: one process)."""
    if reduce is None:
        model.__dict__.pop(_REDUCE, None)
    else:
        model.__dict__[_REDUCE] = reduce


def relative_change(current: torch.Tensor, previous: torch.Tensor, reduce=None) -> float:
    """Mean absolute change over the mean absolute previous value; with `reduce`, of the whole sequence (the
    token counts cancel, so the sums of the shards suffice)."""
    if reduce is None:
        return ((current - previous).abs().mean() / previous.abs().mean()).item()  # the one sync a dynamic cache needs
    dtype = torch.promote_types(current.dtype, torch.float32)
    sums = reduce(torch.stack([(current - previous).abs().sum(dtype=dtype), previous.abs().sum(dtype=dtype)]))
    return (sums[0] / sums[1]).item()


def preset_threshold(preset: str, variant: str = "t2v") -> float:
    if preset not in CACHE_PRESETS:
        raise ValueError(f"cache must be one of {', '.join(CACHE_PRESETS)}; got {preset!r}")
    if preset not in THRESHOLD_PRESETS:
        return 0.0
    return PRESET_THRESHOLDS.get(variant, PRESET_THRESHOLDS["t2v"])[preset]


def _blocks(model) -> list[torch.nn.Module]:
    return [*model.transformer_blocks, *getattr(model, "single_transformer_blocks", ())]  # HunyuanVideo 1.5 has no single blocks


def _modulated_input(block, hidden_states, temb) -> torch.Tensor:
    """The first block's attention input: LayerNorm(x) * (1 + scale) + shift from its AdaLN-zero.

    Built from `norm1`'s parts rather than by calling it, because the token-replace (I2V v2) norm
    takes other arguments; as an indicator the plain modulation serves every variant.
    """
    norm = block.norm1
    shift, scale = norm.linear(norm.silu(temb)).chunk(6, dim=1)[:2]
    return norm.norm(hidden_states) * (1 + scale[:, None]) + shift[:, None]


def _teacache_classes():
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from diffusers.hooks.hooks import BaseState, ModelHook

    class TeaCacheState(BaseState):
        def __init__(self):
            self.reset()

        def reset(self):
            self.previous_indicator = None
            self.residual = None
            self.head_input = None
            self.accumulated = 0.0
            self.skipping = False

    class TeaCacheHeadHook(ModelHook):
        _is_stateful = True

        def __init__(self, state_manager, threshold: float, model):
            super().__init__()
            self.state_manager = state_manager
            self.threshold = threshold
            self.model = model
            self._metadata = None

        def initialize_hook(self, module):
            self._metadata = TransformerBlockRegistry.get(module.__class__)
            return module

        def new_forward(self, module, *args, **kwargs):
            arg = self._metadata._get_parameter_from_args_kwargs
            hidden_states = arg("hidden_states", args, kwargs)
            state = self.state_manager.get_state()
            indicator = _modulated_input(module, hidden_states, arg("temb", args, kwargs))
            state.skipping = self._may_skip(state, indicator)
            state.previous_indicator = indicator
            if state.skipping:
                return hidden_states + state.residual, arg("encoder_hidden_states", args, kwargs)
            state.head_input = hidden_states
            return self.fn_ref.original_forward(*args, **kwargs)

        @torch.compiler.disable
        def _may_skip(self, state, indicator) -> bool:
            context = self.state_manager.context
            step, steps = context.step_index, context.num_inference_steps
            edge = step is not None and (step == 0 or (steps is not None and step == steps - 1))
            if state.previous_indicator is None or state.residual is None or edge:
                state.accumulated = 0.0
                return False
            change = relative_change(indicator, state.previous_indicator, self.model.__dict__.get(_REDUCE))
            rescaled = sum(c * change ** (len(TEACACHE_HUNYUAN_COEFFICIENTS) - 1 - i) for i, c in enumerate(TEACACHE_HUNYUAN_COEFFICIENTS))
            state.accumulated += max(rescaled, 0.0)
            if state.accumulated < self.threshold:
                return True
            state.accumulated = 0.0
            return False

        def reset_state(self, module):
            self.state_manager.reset()
            return module

    class TeaCacheBlockHook(ModelHook):
        def __init__(self, state_manager, is_tail: bool):
            super().__init__()
            self.state_manager = state_manager
            self.is_tail = is_tail
            self._metadata = None

        def initialize_hook(self, module):
            self._metadata = TransformerBlockRegistry.get(module.__class__)
            return module

        def new_forward(self, module, *args, **kwargs):
            state = self.state_manager.get_state()
            if state.skipping:
                arg = self._metadata._get_parameter_from_args_kwargs
                return arg("hidden_states", args, kwargs), arg("encoder_hidden_states", args, kwargs)
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.is_tail:
                state.residual = output[0] - state.head_input
                state.head_input = None
            return output

    return TeaCacheHeadHook, TeaCacheBlockHook, TeaCacheState


def _install_head_and_blocks(model, head_hook, block_hook, head_name: str, block_name: str) -> None:
    from diffusers.hooks.hooks import HookRegistry

    blocks = _blocks(model)
    if len(blocks) < 2:
        raise ValueError("this step cache needs at least two transformer blocks")
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(head_hook, head_name)
    for index, block in enumerate(blocks[1:], start=1):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook(index == len(blocks) - 1), block_name)
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()


def _apply_teacache(model, threshold: float):
    from diffusers.hooks.hooks import StateManager

    head_class, block_class, state_class = _teacache_classes()
    state_manager = StateManager(state_class)
    head = head_class(state_manager, threshold, model)
    _install_head_and_blocks(model, head, lambda is_last: block_class(state_manager, is_tail=is_last), _TEACACHE_HEAD,
                             _TEACACHE_BLOCK)
    return head


def _first_block_decision(head, model):
    """diffusers' First Block Cache decision; on the whole sequence's change where a reduce is installed."""
    own = head._should_compute_remaining_blocks

    @torch.compiler.disable
    def should_compute(residual: torch.Tensor) -> bool:
        reduce = model.__dict__.get(_REDUCE)
        previous = head.state_manager.get_state().head_block_residual
        if reduce is None or previous is None:
            return own(residual)
        return relative_change(residual, previous, reduce) > head.threshold

    return should_compute


@dataclass
class CacheStats:
    calls: int = 0
    skipped: int = 0

    def text(self) -> str:
        return f"{self.skipped} of {self.calls} transformer calls skipped"


class StepCache:
    """A preset installed on a transformer for one sampling run; counts the calls it skipped."""

    def __init__(self, model, preset: str, threshold: float | None = None, variant: str = "t2v"):
        self.model = model
        self.preset = preset
        self.threshold = preset_threshold(preset, variant) if threshold is None else float(threshold)
        if self.threshold < 0:
            raise ValueError(f"cache threshold must be 0 or more, got {self.threshold}")
        self.stats = CacheStats()
        self.enabled = preset != "off"
        self._head = None
        if preset == "first_block":
            from diffusers.hooks import FirstBlockCacheConfig
            from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK
            from diffusers.hooks.hooks import HookRegistry

            model.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
            self._head = HookRegistry.check_if_exists_or_initialize(_blocks(model)[0]).get_hook(_FBC_LEADER_BLOCK_HOOK)
            self._head._should_compute_remaining_blocks = _first_block_decision(self._head, model)
        elif preset.startswith("teacache"):
            self._head = _apply_teacache(model, self.threshold)
        if self._head is not None:
            model._reset_stateful_cache()

    @contextmanager
    def call(self, branch: str, step_index: int, steps: int):
        """Wrap one model call of CFG branch `branch` ("cond"/"uncond") at `step_index` of `steps`."""
        self.stats.calls += 1
        if self._head is None:
            yield
            return
        with self.model.cache_context(branch, step_index=step_index, num_inference_steps=steps):
            yield
            state = self._head.state_manager.get_state()
            skipped = not state.should_compute if self.preset == "first_block" else state.skipping
        self.stats.skipped += int(skipped)

    def remove(self) -> None:
        if self._head is None:
            return
        from diffusers.hooks.hooks import HookRegistry

        self.model._reset_stateful_cache()
        if self.preset == "first_block":
            self.model.disable_cache()
        else:
            registry = HookRegistry.check_if_exists_or_initialize(self.model)
            for name in (_TEACACHE_HEAD, _TEACACHE_BLOCK):
                registry.remove_hook(name, recurse=True)
            registry.invalidate_child_registries_cache()
        self._head = None
