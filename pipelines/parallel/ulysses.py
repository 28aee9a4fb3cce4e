"""Ulysses sequence parallel for the pack's mask-free transformers, on diffusers' context parallelism.

"Attention-only" mode (SPEC-multigpu §1): `enable_parallelism(ContextParallelConfig(ulysses_degree=N,
ulysses_anything=True), cp_plan={})` gives every attention processor the parallel config (diffusers'
dispatcher then runs the all-to-all around the kernel) and installs no hook of its own. The sequence is
sharded here, per model call:

- at the first block: the video tokens (reference tokens included, they sit in the same stream) and the
  trimmed text tokens, each split by `tensor_split` over the ranks (any length: `ulysses_anything`).
  Text is sharded, never replicated (a replicated text would be counted N times by the all-to-all);
- at every block: the RoPE rows, by exactly the video tokens' split, and the first-frame token count of
  I2V v2's token-replace blocks (the first frame is a prefix, so it lives on the first ranks);
- after `proj_out`: the video tokens gathered back (diffusers' sizes-aware gather), so the forward's
  unpatchify and everything after it see the whole latent on every rank.

No mask: the processors run mask-free (`speed/attention.py`), on the local text length. A batch whose
prompts differ in valid length runs row by row (each row's text trimmed to its own length, then sharded).
Every rank runs the same sampler with the same seed, so latents and scheduler stay identical.

Traps handled: processors must be installed *before* `enable_parallelism` (after, they keep no parallel
config and attention silently sees only the local shard): `parallelize` installs the mask-free ones first,
and every call checks each processor still carries the config (`ProcessorOrderError` otherwise); the
kernel must support context parallelism; the head count must cover the ranks.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

from ..speed.attention import MaskFreeAttention, choose_backend
from .ranks import accelerator_count_fixed


class ProcessorOrderError(RuntimeError):
    """An attention processor lacks the parallel config: it was set after `enable_parallelism`."""


@dataclass(frozen=True)
class SequenceLayout:
    """Where one transformer class's sequence is sharded: its block lists (each block called as
    `block(video, text, temb, mask, rope, ...)`), the positional index of the RoPE (cos, sin) argument,
    and of the first-frame token count (None where the blocks take none)."""

    blocks: tuple[str, ...] = ("transformer_blocks", "single_transformer_blocks")
    rope_arg: int = 4
    first_frame_arg: int | None = 6


# diffusers' class names (no family import): the 13B model's double and single blocks take the first-frame count
# of I2V v2's token-replace blocks; HunyuanVideo 1.5 has double blocks only.
_LAYOUTS: dict[str, SequenceLayout] = {
    "HunyuanVideoTransformer3DModel": SequenceLayout(),
    "HunyuanVideo15Transformer3DModel": SequenceLayout(blocks=("transformer_blocks",), first_frame_arg=None),
}


def register_sequence_layout(model_class_name: str, layout: SequenceLayout) -> None:
    _LAYOUTS[model_class_name] = layout


def check_degree(heads: int, degree: int, anything: bool = True) -> None:
    """ValueError when `degree` ranks cannot share `heads` attention heads."""
    if degree < 2:
        raise ValueError(f"sequence parallel needs 2 or more ranks, got {degree}")
    if degree > heads:
        raise ValueError(f"{degree} ranks but the model has {heads} attention heads: use at most {heads}")
    if heads % degree and not anything:
        raise ValueError(f"{heads} heads do not split over {degree} ranks: use a divisor of {heads} or 'anything'")


@dataclass
class _Split:
    """This call's split of the video tokens: global length, this rank's first token and count."""

    total: int
    start: int
    length: int


def _split_of(total: int, world: int, rank: int) -> _Split:
    sizes = [len(chunk) for chunk in torch.arange(total).tensor_split(world)]
    return _Split(total, sum(sizes[:rank]), sizes[rank])


class SequenceParallel:
    """Ulysses over `world` ranks on one model; made by `parallelize`, kept on the model."""

    def __init__(self, model, config, layout: SequenceLayout, anything: bool):
        self.model = model
        self.config = config
        self.layout = layout
        self.anything = anything
        cp = config.context_parallel_config
        self.mesh = cp._flattened_mesh
        self.world = self.mesh.size()
        self.rank = torch.distributed.get_rank(self.mesh.get_group())
        self.attention = MaskFreeAttention.for_model(model)
        self._forward = model.forward
        self._split: _Split | None = None
        self._stack: ExitStack | None = None
        model.forward = self.forward

    # ------------------------------------------------------------------ checks

    def processors(self):
        for name, module in self.model.named_modules():
            processor = getattr(module, "processor", None)
            if processor is not None and hasattr(processor, "_parallel_config"):
                yield name, processor

    def check(self) -> None:
        """ProcessorOrderError when a processor lost the parallel config (set after `enable_parallelism`),
        ValueError when its kernel cannot run context parallel."""
        from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

        stale = [name for name, p in self.processors() if p._parallel_config is not self.config]
        if stale:
            raise ProcessorOrderError(
                f"{len(stale)} attention processor(s) (first: {stale[0]}) were set after enable_parallelism and "
                "would attend to their local shard only: install the attention processors (mask-free speed "
                "options) before parallelize(), never after")
        for _, p in self.processors():
            backend = p._attention_backend
            backend = AttentionBackendName(backend) if backend is not None else None
            if backend is not None and not _AttentionBackendRegistry._is_context_parallel_available(backend):
                raise ValueError(f"attention kernel '{backend.value}' cannot run sequence parallel: choose attention "
                                 "'sdpa', 'flash' (FlashAttention-2) or 'sage'")
            break

    # ------------------------------------------------------------------ the call

    def forward(self, *args, **kwargs):
        lengths = self.attention.current_lengths
        if lengths is None:
            raise RuntimeError("sequence parallel runs mask-free attention only: set the speed option attention "
                               "to 'sdpa', 'flash' or 'sage' (not 'masked')")
        self.check()
        if len(set(lengths)) == 1:
            return self._call(args, kwargs, lengths)
        rows = [self._call(*_row(args, kwargs, i, len(lengths)), (n,)) for i, n in enumerate(lengths)]
        return _cat_outputs(rows)

    def _call(self, args, kwargs, lengths):
        with ExitStack() as stack:
            stack.enter_context(self.attention.lengths(lengths))
            self._stack, self._split = stack, None
            for name in self.layout.blocks:
                for block in getattr(self.model, name, ()):
                    stack.callback(block.register_forward_pre_hook(self._enter_block).remove)
            stack.callback(self.model.proj_out.register_forward_hook(self._gather).remove)
            try:
                return self._forward(*args, **kwargs)
            finally:
                self._stack = self._split = None

    def _shard(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

        if tensor.shape[1] < self.world:
            raise ValueError(f"{what} has {tensor.shape[1]} tokens, fewer than the {self.world} ranks: every rank "
                             "needs at least one")
        if self.anything:
            return PartitionAnythingSharder.shard_anything(tensor, 1, self.mesh)
        if tensor.shape[1] % self.world:
            raise ValueError(f"{what} has {tensor.shape[1]} tokens, not a multiple of {self.world} ranks: "
                             "enable 'anything'")
        return EquipartitionSharder.shard(tensor, 1, self.mesh)

    def _enter_block(self, module, args):
        args = list(args)
        if self._split is None:  # the first block of this call: shard video and text
            video, text = args[0], args[1]
            self._split = _split_of(video.shape[1], self.world, self.rank)
            args[0] = self._shard(video, "the video sequence")
            args[1] = self._shard(text, "the text")
            self._stack.enter_context(self.attention.lengths((args[1].shape[1],) * args[1].shape[0]))
        split = self._split
        rope = args[self.layout.rope_arg] if len(args) > self.layout.rope_arg else None
        if rope is not None and rope[0].shape[0] == split.total and split.total != split.length:
            args[self.layout.rope_arg] = tuple(r[split.start : split.start + split.length] for r in rope)
        elif rope is not None and rope[0].shape[0] != args[0].shape[1]:
            raise ValueError(f"RoPE has {rope[0].shape[0]} rows for {args[0].shape[1]} local tokens")
        index = self.layout.first_frame_arg
        if index is not None and len(args) > index and isinstance(args[index], int):
            args[index] = max(0, min(args[index] - split.start, split.length))
        return tuple(args)

    def _gather(self, module, args, output):
        from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

        if self.anything:
            return PartitionAnythingSharder.unshard_anything(output, 1, self.mesh)
        return EquipartitionSharder.unshard(output, 1, self.mesh)

    def remove(self) -> None:
        """Give the model its own forward back (the parallel config stays: diffusers cannot undo it)."""
        if self.model.__dict__.get("forward") == self.forward:
            del self.model.forward


def _row(args, kwargs, index: int, batch: int):
    def take(value):
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
            return value[index : index + 1]
        return value

    return tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}


def _cat_outputs(rows):
    first = rows[0]
    if isinstance(first, tuple):
        return (torch.cat([r[0] for r in rows]),) + tuple(first[1:])
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=torch.cat([r.sample for r in rows]))


def parallelize(model, degree: int | None = None, anything: bool = True, attention: str = "sdpa",
                device=None) -> SequenceParallel:
    """Run `model` (a diffusers HunyuanVideo or 1.5 transformer, same weights on every rank) Ulysses-parallel
    over `degree` ranks (default: the whole process group). Installs the mask-free processors first (on the
    `attention` kernel; a run's speed options may switch the kernel later), then `enable_parallelism`.
    Call once per model, on every rank, after `init_ranks()`; a family other than the 13B one registers its
    mask-free and sequence layouts before (HunyuanVideo 1.5: `hunyuan_video_15.attention.install()`)."""
    from diffusers.models._modeling_parallel import ContextParallelConfig

    existing = getattr(model, "_hyvs_sequence_parallel", None)
    if existing is not None:
        model.forward = existing.forward
        return existing
    if getattr(model, "_parallel_config", None) is not None:
        raise ProcessorOrderError(
            "enable_parallelism was already called on this model, before its mask-free attention processors were "
            "installed: those would run without the parallel config. Load the model afresh and call parallelize() "
            "only")
    if not torch.distributed.is_initialized():
        raise RuntimeError("parallelize needs the process group: call init_ranks() on every rank first")
    degree = degree or torch.distributed.get_world_size()
    if degree != torch.distributed.get_world_size():
        raise ValueError(f"degree {degree} must equal the {torch.distributed.get_world_size()} ranks "
                         "(CFG parallel and mixed meshes are not supported yet)")
    check_degree(model.config.num_attention_heads, degree, anything)
    layout = _LAYOUTS.get(type(model).__name__)
    if layout is None:
        raise ValueError(f"no sequence layout for {type(model).__name__}: register its family's first")
    device = device if device is not None else next(model.parameters()).device
    mask_free = MaskFreeAttention.for_model(model).install(choose_backend(attention, device, model.dtype))
    if not mask_free._ours:
        mask_free.remove()
        del model._hyvs_mask_free  # made with the default layout: the family's must be registered first
        raise ValueError(f"no attention processor of {type(model).__name__} is known to the mask-free layout: "
                         "install its family's attention layout before parallelize()")
    config = ContextParallelConfig(ulysses_degree=degree, ulysses_anything=anything)
    with accelerator_count_fixed():
        model.enable_parallelism(config=config, cp_plan={})
    parallel = SequenceParallel(model, model._parallel_config, layout, anything)
    model._hyvs_sequence_parallel = parallel
    return parallel

