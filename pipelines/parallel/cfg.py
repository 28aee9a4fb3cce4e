"""CFG parallel: the two guidance branches of a batched model call on the two halves of the ranks.

The denoise loop batches the branches of one step in one call as [positive rows, negative rows] (Custom's
image branch third). On a mesh with a "cfg" dimension of 2, each half takes its share of the call's batch
rows (`tensor_split`: the positive branch on the first half, the negative on the second), runs them (sequence
parallel over its own ring x ulysses ranks, or whole where a half is one rank) and the halves all-gather
their outputs on the batch axis, so every rank ends the call with every branch and the loop goes on as in
one process. The split knows rows, not branches: a batch of 2 or more videos without CFG splits the same way;
three rows (Custom's image branch) split 2 and 1.

A call of one row is refused: there is nothing to split where CFG is off (cfg 1, the distilled models) or the
sampler runs its branches as separate calls (`cfg_batching` "sequential"), and running the row on both halves
would only double the work. The text lengths the mask-free attention reads are split with the rows; the step
caches' skip statistics are summed over every rank, so both halves skip together, as one process would.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..speed.attention import MaskFreeAttention
from ..speed.step_cache import set_statistics_reduce


class CfgParallel:
    """Splits each call of `model` over the "cfg" dimension of `mesh`, around `sequence` (the half's
    SequenceParallel) when the half shares the sequence. Made by `ulysses.parallelize`, kept on the model; `forward`
    replaces the model's, a family's own block loop goes through `run` (as with a SequenceParallel)."""

    def __init__(self, model, mesh, own_forward, sequence=None):
        self.model = model
        self.mesh = mesh["cfg"]
        self.degree = self.mesh.size()
        self.rank = self.mesh.get_local_rank()
        self.sequence = sequence
        self.attention = MaskFreeAttention.for_model(model)
        self._own_forward = own_forward
        model.forward = self.forward

    @property
    def active(self) -> bool:
        """Whether the model's calls run CFG parallel (`remove` ends it, `parallelize` starts it again)."""
        return self.model.__dict__.get("forward") == self.forward

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over every rank (the mesh is the whole process group): both halves' rows, all tokens."""
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    def forward(self, *args, **kwargs):
        return self.run(self._own_forward, *args, **kwargs)

    def run(self, call, *args, **kwargs):
        """`call(*args, **kwargs)` (the model's forward or a family's own block loop) on this half's rows, every
        half's output rows gathered back."""
        states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        rows = states.shape[0]
        if rows < self.degree:
            raise ValueError(
                f"cfg_parallel splits the guidance branches of one model call over {self.degree} groups of ranks, but "
                f"this call carries {rows} row: the run has no CFG (cfg 1, a distilled model) or runs its branches "
                "one call at a time. Batch the branches (cfg_batching 'batched') with cfg above 1, or drop "
                "cfg_parallel")
        mine = torch.arange(rows).tensor_split(self.degree)[self.rank]
        start, stop = int(mine[0]), int(mine[-1]) + 1

        def take(value):
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows:
                return value[start:stop]
            return value

        def half(*args, **kwargs):
            set_statistics_reduce(self.model, self.sum_over_ranks)  # inside the sequence wrapper, which sets its own
            return call(*args, **kwargs)

        args, kwargs = tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}
        lengths = self.attention.current_lengths
        with self.attention.lengths(lengths[start:stop]) if lengths is not None else nullcontext():
            if self.sequence is not None:
                output = self.sequence.run(half, *args, **kwargs)
            else:
                output = half(*args, **kwargs)
        if isinstance(output, tuple):
            return (self._gather(output[0], rows),) + tuple(output[1:])
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=self._gather(output.sample, rows))

    def _gather(self, sample: torch.Tensor, rows: int) -> torch.Tensor:
        """Every half's rows on every rank. An uneven split pads the shorter halves' rows to one size first (gloo
        all-gathers equal shapes only; every rank knows the sizes, so they are not exchanged)."""
        from diffusers.hooks.context_parallel import EquipartitionSharder

        if rows % self.degree == 0:
            return EquipartitionSharder.unshard(sample, 0, self.mesh)
        sizes = [len(part) for part in torch.arange(rows).tensor_split(self.degree)]
        padding = sample.new_zeros((sizes[0] - sample.shape[0], *sample.shape[1:]))
        gathered = EquipartitionSharder.unshard(torch.cat([sample, padding]), 0, self.mesh)
        return torch.cat([part[:n] for part, n in zip(gathered.chunk(self.degree), sizes)])

    def remove(self) -> None:
        """Give the model its own forward back (the parallel config stays: diffusers cannot undo it)."""
        if self.active:
            del self.model.forward
        set_statistics_reduce(self.model, None)
