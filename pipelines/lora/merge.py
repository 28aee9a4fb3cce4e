"""Merged LoRAs, the optional fast mode: `W = W0 + sum_i s_i * delta_i` written into a plain linear layer's weight.

Why optional: deltas added at every call (side_path.py) cost a weight patch or two thin matmuls per layer and
call; a merged layer costs nothing while sampling, but every strength change is a pass over the layer's weight
(done where the weight is: fast on a GPU, slow for the full 13B on a CPU) and the original weight is kept as a
CPU copy to undo it (the targeted weights' size again, in RAM). The merge is always recomputed from that copy in
float32 and rounded once to the layer's dtype, and removal restores the copy, so no sequence of changes drifts.
fp8 layers are never merged (it would mean requantising); they keep adding the deltas at each call.
"""

from __future__ import annotations

import torch
from torch import nn

from .lowrank import LowRank


class MergedLayer:
    """One `nn.Linear` with LoRA deltas (index, LowRank) merged into its weight and bias."""

    def __init__(self, layer: nn.Linear, deltas: list[tuple[int, LowRank]]):
        self.layer, self.deltas = layer, deltas
        self.weight = layer.weight.detach().to("cpu", copy=True)
        self.bias = layer.bias.detach().to("cpu", copy=True) if layer.bias is not None else None
        self.merged_at: tuple[float, ...] | None = None  # the strengths the weight now holds

    @staticmethod
    def fits(layer: nn.Module, deltas: list[tuple[int, LowRank]]) -> bool:
        """A plain linear layer, with a bias wherever a delta brings one."""
        return type(layer) is nn.Linear and (layer.bias is not None or all(d.bias is None for _, d in deltas))

    def merge(self, strengths: list[float]) -> None:
        if self.merged_at == tuple(strengths):
            return
        weight = self.layer.weight
        with torch.inference_mode():
            merged = self.weight.to(weight.device, torch.float32, copy=True)
            for index, delta in self.deltas:
                merged += strengths[index] * _delta_on(delta, weight.device)
            weight.data.copy_(merged)
            if self.bias is not None:
                bias = self.bias.to(weight.device, torch.float32, copy=True)
                for index, delta in self.deltas:
                    if delta.bias is not None:
                        bias += strengths[index] * delta.bias.to(weight.device, torch.float32)
                self.layer.bias.data.copy_(bias)
        self.merged_at = tuple(strengths)

    def restore(self) -> None:
        with torch.inference_mode():
            self.layer.weight.data.copy_(self.weight)
            if self.bias is not None:
                self.layer.bias.data.copy_(self.bias)
        self.merged_at = None


def _delta_on(delta: LowRank, device: torch.device) -> torch.Tensor:
    """The dense delta at strength 1, computed on `device` in float32 (the up @ down product is the costly part)."""
    out = torch.zeros((), device=device)
    if delta.down is not None:
        out = delta.scale * (delta.up.to(device, torch.float32) @ delta.down.to(device, torch.float32))
    if delta.weight is not None:
        out = out + delta.weight.to(device, torch.float32)
    return out
