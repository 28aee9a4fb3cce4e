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

No mask: the processors run mask-free (`speed/attention.py`), on the local text lengths. A batch whose prompts
differ in valid length shards each row's valid text on its own (shorter rows padded at the end, never read);
attention then runs row by row on every rank. Every rank runs the same sampler with the same seed, so latents
and scheduler stay identical. A family that calls the blocks itself (HunyuanCustom, reference tokens in the
video stream) runs its loop through `SequenceParallel.run`; it gathers after `proj_out` and drops the
reference tokens from the whole sequence. Step caches decide on statistics summed over the ranks
(`sum_over_ranks`, installed on the model for `speed/step_cache.py`), so every rank skips alike.

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
from ..speed.step_cache import set_statistics_reduce
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
    """This call's split of the video tokens: global length, this rank's first token and count, every rank's count."""

    total: int
    start: int
    length: int
    sizes: tuple[int, ...]


def _split_of(total: int, world: int, rank: int) -> _Split:
    sizes = tuple(len(chunk) for chunk in torch.arange(total).tensor_split(world))
    return _Split(total, sum(sizes[:rank]), sizes[rank], sizes)


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
        self._lengths: tuple[int, ...] = ()
        self._stack: ExitStack | None = None
        model.forward = self.forward
        set_statistics_reduce(model, self.sum_over_ranks)

    @property
    def active(self) -> bool:
        """Whether the model's calls run sequence parallel (`remove` ends it, `parallelize` starts it again)."""
        return self.model.__dict__.get("forward") == self.forward

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks sharing this sequence: the step caches' skip statistics, so that every
        rank measures the whole sequence and takes the same skip."""
        total = tensor.clone()
        torch.distributed.all_reduce(total, group=self.mesh.get_group())
        return total

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
        return self.run(self._forward, *args, **kwargs)

    def run(self, call, *args, **kwargs):
        """`call(*args, **kwargs)`, the model's forward or a family's own block loop (HunyuanCustom's), with the
        sequence sharded at its first block and gathered after `proj_out`. Runs inside a speed session's call
        (the mask-free attention's text lengths per batch row)."""
        lengths = self.attention.current_lengths
        if lengths is None:
            raise RuntimeError("sequence parallel runs mask-free attention only: set the speed option attention "
                               "to 'sdpa', 'flash' or 'sage' (not 'masked')")
        self.check()
        set_statistics_reduce(self.model, self.sum_over_ranks)  # again after a remove() and a new parallelize()
        with ExitStack() as stack:
            self._stack, self._split, self._lengths = stack, None, tuple(lengths)
            for name in self.layout.blocks:
                for block in getattr(self.model, name, ()):
                    stack.callback(block.register_forward_pre_hook(self._enter_block).remove)
            stack.callback(self.model.proj_out.register_forward_hook(self._gather).remove)
            try:
                return call(*args, **kwargs)
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

    def _local_text(self) -> tuple[tuple[int, ...], int]:
        """This rank's valid text tokens per row and the local text tensor's length. Where rows differ, the
        mask-free attention runs row by row, one all-to-all each, on every rank alike: a rank whose rows happen
        to get equal shares keeps one padding token so that it takes the row-by-row path too."""
        local = tuple(_split_of(n, self.world, self.rank).length for n in self._lengths)
        width = max(local)
        if len(set(self._lengths)) > 1 and len(set(local)) == 1:
            width += 1
        return local, width

    def _shard_text(self, text: torch.Tensor, width: int) -> torch.Tensor:
        """Each row's valid tokens (a prefix, the text trimmed to the longest row) split over the ranks,
        shorter rows padded at the end, where the attention never reads."""
        if len(self._lengths) != text.shape[0]:
            raise ValueError(f"{len(self._lengths)} text lengths for a batch of {text.shape[0]}")
        if len(set(self._lengths)) == 1:
            return self._shard(text[:, : self._lengths[0]], "the text")
        rows = [self._shard(text[i : i + 1, :n], "the text") for i, n in enumerate(self._lengths)]
        return torch.cat([torch.nn.functional.pad(row, (0, 0, 0, width - row.shape[1])) for row in rows])

    def _begin(self, args: list, rope) -> None:
        """The first block of this call: the video and text streams sharded, unless they enter as this rank's
        shards already (HunyuanCustom's step cache resumes at its last block from the shards a full step
        kept: its stream is shorter than its RoPE rows); attention from here on reads the local text lengths."""
        video, text = args[0], args[1]
        total = rope[0].shape[0] if rope is not None else video.shape[1]
        self._split = _split_of(total, self.world, self.rank)
        local, width = self._local_text()
        if video.shape[1] == total:
            args[0] = self._shard(video, "the video sequence")
            args[1] = self._shard_text(text, width)
        elif (video.shape[1], text.shape[1]) != (self._split.length, width):
            raise ValueError(f"the first block got {video.shape[1]} video and {text.shape[1]} text tokens: neither "
                             f"the whole sequence ({total}) nor this rank's shard ({self._split.length}, {width})")
        self._stack.enter_context(self.attention.lengths(local))

    def _enter_block(self, module, args):
        args = list(args)
        index = self.layout.rope_arg
        rope = args[index] if len(args) > index else None
        if self._split is None:
            self._begin(args, rope)
        split = self._split
        if rope is not None and rope[0].shape[0] == split.total and split.total != split.length:
            args[index] = tuple(r[split.start : split.start + split.length] for r in rope)
        elif rope is not None and rope[0].shape[0] != args[0].shape[1]:
            raise ValueError(f"RoPE has {rope[0].shape[0]} rows for {args[0].shape[1]} local tokens")
        index = self.layout.first_frame_arg
        if index is not None and len(args) > index and isinstance(args[index], int):
            args[index] = max(0, min(args[index] - split.start, split.length))
        return tuple(args)

    def _gather(self, module, args, output):
        """The whole sequence back on every rank. Uneven shares (848x480 has 53 token columns) are padded to the
        longest for one equal all-gather, then trimmed: gloo gathers equal sizes only, and diffusers'
        `unshard_anything` hands it uneven ones."""
        from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

        if not self.anything:
            return EquipartitionSharder.unshard(output, 1, self.mesh)
        if self._split is None:
            return PartitionAnythingSharder.unshard_anything(output, 1, self.mesh)
        sizes = self._split.sizes
        longest = max(sizes)
        if output.shape[1] != sizes[self.rank]:
            raise RuntimeError(f"rank {self.rank} holds {output.shape[1]} output tokens, its share is "
                               f"{sizes[self.rank]}")
        if longest == min(sizes):
            return EquipartitionSharder.unshard(output, 1, self.mesh)
        padding = output.new_zeros(output.shape[0], longest - output.shape[1], *output.shape[2:])
        whole = EquipartitionSharder.unshard(torch.cat([output, padding], dim=1), 1, self.mesh)
        return torch.cat([whole[:, rank * longest:rank * longest + size] for rank, size in enumerate(sizes)], dim=1)

    def remove(self) -> None:
        """Give the model its own forward back (the parallel config stays: diffusers cannot undo it)."""
        if self.active:
            del self.model.forward
        set_statistics_reduce(self.model, None)


def parallelize(model, degree: int | None = None, anything: bool = True, attention: str = "sdpa", device=None,
                mode: str = "ulysses", cfg_parallel: bool = False):
    """Run `model` (a diffusers HunyuanVideo or 1.5 transformer, same weights on every rank) over the whole process
    group: each call's sequence shared by `degree` ranks (default: all of them, or of each half with
    `cfg_parallel`) in `mode` "ulysses", "ring" or "unified" (ring x ulysses, split by `mesh.plan_mesh`), and with
    `cfg_parallel` a batched call's guidance branches on the two halves of the ranks (`cfg.CfgParallel`).
    Installs the mask-free processors first (on the `attention` kernel; a run's speed options may switch the
    kernel later), then `enable_parallelism` on a (cfg, ring, ulysses) mesh. A refused plan (odd ranks with
    cfg_parallel, ring or unified without a kernel returning the softmax statistics) leaves the model untouched.
    Call once per model, on every rank, after `init_ranks()`; a family other than the 13B one registers its
    mask-free and sequence layouts before (HunyuanVideo 1.5: `hunyuan_video_15.attention.install()`).
    Returns the wrapper now on `model.forward`: the CfgParallel with `cfg_parallel`, else the SequenceParallel."""
    from .cfg import CfgParallel
    from .mesh import build_mesh, check_kernel, plan_mesh

    if not torch.distributed.is_initialized():
        raise RuntimeError("parallelize needs the process group: call init_ranks() on every rank first")
    heads = model.config.num_attention_heads
    plan = plan_mesh(torch.distributed.get_world_size(), heads, mode, cfg_parallel, anything, degree)
    existing = getattr(model, "_hyvs_parallel", None)
    if existing is not None:
        done, wrapper = existing
        if done != plan:
            raise ValueError(f"this model already runs {done.mode} on {done.title()}: load it afresh to run "
                             f"{plan.mode} on {plan.title()}")
        model.forward = wrapper.forward
        return wrapper
    if getattr(model, "_parallel_config", None) is not None:
        raise ProcessorOrderError(
            "enable_parallelism was already called on this model, before its mask-free attention processors were "
            "installed: those would run without the parallel config. Load the model afresh and call parallelize() "
            "only")
    if plan.mode == "ulysses" and plan.ulysses > 1:
        check_degree(heads, plan.ulysses, anything)
    layout = _LAYOUTS.get(type(model).__name__)
    if layout is None:
        raise ValueError(f"no sequence layout for {type(model).__name__}: register its family's first")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    choice = choose_backend(attention, device, model.dtype, context_parallel=True)
    if not choice.mask_free:
        raise ValueError("parallel runs need mask-free attention: choose attention 'sdpa', 'flash', 'sage' or "
                         "'auto', not 'masked'")
    check_kernel(plan.mode, choice)
    mask_free = MaskFreeAttention.for_model(model).install(choice)
    if not mask_free._ours:
        mask_free.remove()
        del model._hyvs_mask_free  # made with the default layout: the family's must be registered first
        raise ValueError(f"no attention processor of {type(model).__name__} is known to the mask-free layout: "
                         "install its family's attention layout before parallelize()")
    mesh = build_mesh(plan, device.type)
    own_forward, wrapper = model.forward, None
    config = plan.context_config(mesh)
    if config is not None:
        with accelerator_count_fixed():
            model.enable_parallelism(config=config, cp_plan={})
        wrapper = SequenceParallel(model, model._parallel_config, layout, plan.anything)
    if plan.cfg > 1:
        wrapper = CfgParallel(model, mesh, own_forward, wrapper)
    # the outermost wrapper (`active`, `run(call, ...)`): what a family's own block loop (HunyuanCustom) goes through
    model._hyvs_sequence_parallel = wrapper
    model._hyvs_parallel = (plan, wrapper)
    return wrapper

