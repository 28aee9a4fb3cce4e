"""The LoRA deltas of one linear layer, added on the fly at every call, never stored in its weight (SPEC-lora §6.2).

Why not merged into the weight: the layer's weights are never touched, so one code path serves bf16/fp16/fp32
`nn.Linear` and the pack's fp8 `ScaledFp8Linear` alike (no requantisation, no clipping), removing a LoRA returns
the base bit for bit, and a strength is a number in a buffer, not a re-merge.

Each call takes whichever of two exact ways does fewer multiply-adds for its input `x` (rows x in -> out):
- side path, `out + sum_i s_i * (x @ A_i^T) @ (scale_i * B_i)^T`: 2 rows r (in + out), best for few rows
  (modulation and embedder layers, short sequences, small images);
- weight patch, `x @ (W + sum_i s_i * scale_i * B_i A_i)^T`: 2 out r in, independent of the rows, best for video
  tokens. It is what an fp8 layer does anyway (its weight is dequantised at every call), and on an H200 the side
  path's extra pass over a 12288-wide output cost 27-40% of a 3072 -> 12288 bf16 layer at 8k-32k rows, where
  the patch reads and writes the weight once. fp8 matmuls (`fp8_compute`) need the fp8 weight: always the side path.

The LoRAs on one layer are concatenated along the rank, so stacked LoRAs cost one pair of thin matmuls; each rank
row carries the index of its LoRA, and the strengths are one small float32 buffer written in place: a compiled
block reads it as an input and is not recompiled when a strength changes. Every tensor is a (non-persistent)
buffer of this module, a child of the layer, so `module.to(...)` and the block offloader move it with its block,
and the model's state dict is unchanged.

The layer's class is swapped for a subclass whose forward adds the deltas (`attach`) rather than given a forward
hook: torch.compile does not guard on hooks (`skip_nnmodule_hook_guards`), so a block compiled before a LoRA
arrived, or a sibling block's compiled graph, would silently run without it; the class it does guard on. The
layer stays an `nn.Linear` / `ScaledFp8Linear` for every `isinstance` check, with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights.fp8_linear import ScaledFp8Linear, dequantize_fp8
from .lowrank import LowRank

ATTRIBUTE = "lora_side_path"  # the child's name on its target layer


class LoraSidePath(nn.Module):
    """Deltas of several LoRAs (index, LowRank) on one layer, in `dtype` on `device`; `count` LoRAs in all."""

    def __init__(self, parts: list[tuple[int, LowRank]], count: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        low = [(i, d) for i, d in parts if d.down is not None]
        biases = [(i, d) for i, d in parts if d.bias is not None]
        dense = [(i, d) for i, d in parts if d.weight is not None]
        self.dense_owners = tuple(i for i, _ in dense)  # python ints: a fixed loop for torch.compile

        def buffer(name, tensor):
            self.register_buffer(name, tensor.to(device=device, dtype=dtype) if tensor is not None else None,
                                 persistent=False)

        # strengths stay float32 whatever the compute dtype (a bf16 strength would round 0.7 to 0.699)
        self.register_buffer("strength", torch.zeros(count, device=device), persistent=False)
        buffer("down", torch.cat([d.down.float() for _, d in low]) if low else None)
        # alpha / rank goes into B once, in float32, so the forward multiplies by the strength only
        buffer("up", torch.cat([d.up.float() * d.scale for _, d in low], dim=1) if low else None)
        buffer("bias", torch.stack([d.bias.float() for _, d in biases]) if biases else None)
        buffer("dense", torch.stack([d.weight.float() for _, d in dense]) if dense else None)
        owners = [i for i, d in low for _ in range(d.down.shape[0])]
        self.register_buffer("rank_owner", torch.tensor(owners, dtype=torch.long, device=device), persistent=False)
        bias_owners = [i for i, _ in biases]
        self.register_buffer("bias_owner", torch.tensor(bias_owners, dtype=torch.long, device=device), persistent=False)

    def prefers_weight(self, x: torch.Tensor) -> bool:
        """Whether patching the weight costs fewer multiply-adds than the side path for input `x`."""
        if self.down is None or self.dense_owners:
            return True  # a bias or dense delta only: nothing to gain on the side
        out_features, in_features = self.up.shape[0], self.down.shape[1]
        rows = x.numel() // in_features
        return rows * (in_features + out_features) > out_features * in_features

    def patch(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`weight` and `bias` (already in the compute dtype) plus every delta times its strength."""
        dtype = weight.dtype
        strength = self.strength.to(dtype)
        if self.down is not None:
            weight = torch.addmm(weight, self.up.to(dtype) * strength[self.rank_owner], self.down.to(dtype))
        for k, owner in enumerate(self.dense_owners):
            weight = weight + strength[owner] * self.dense[k].to(dtype)
        if self.bias is not None:
            extra = strength[self.bias_owner] @ self.bias.to(dtype)
            bias = extra if bias is None else bias + extra
        return weight, bias

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The side path: the layer's output `out` for `x` plus every delta's."""
        strength = self.strength.to(x.dtype)
        if self.down is not None:
            hidden = F.linear(x, self.down.to(x.dtype)).mul_(strength[self.rank_owner])
            # the add rides in the second matmul (addmm's beta = 1) instead of another pass over the output
            rows = torch.addmm(out.reshape(-1, out.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                               self.up.to(x.dtype).t())
            out = rows.view(out.shape)
        if self.bias is not None:
            out = out + strength[self.bias_owner] @ self.bias.to(x.dtype)
        for k, owner in enumerate(self.dense_owners):
            out = out + strength[owner] * F.linear(x, self.dense[k].to(x.dtype))
        return out

    def extra_repr(self) -> str:
        rank = 0 if self.down is None else self.down.shape[0]
        return f"rank={rank}, biases={len(self.bias_owner)}, dense={len(self.dense_owners)}"


class LoraLinear(nn.Linear):
    """An `nn.Linear` carrying LoRA deltas."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = getattr(self, ATTRIBUTE)
        if side.prefers_weight(x):
            return F.linear(x, *side.patch(self.weight, self.bias))
        return side(x, super().forward(x))


class LoraScaledFp8Linear(ScaledFp8Linear):
    """A `ScaledFp8Linear` carrying LoRA deltas, added in the layer's compute dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = getattr(self, ATTRIBUTE)
        if side.prefers_weight(x) and not (self.fp8_compute and self._scaled_mm_fits(x)):
            weight = dequantize_fp8(self.weight, self.scale_weight, x.dtype)
            return F.linear(x, *side.patch(weight, self.bias.to(x.dtype) if self.bias is not None else None))
        return side(x, super().forward(x))


WITH_SIDE_PATH = {nn.Linear: LoraLinear, ScaledFp8Linear: LoraScaledFp8Linear}
BASE = {lora: base for base, lora in WITH_SIDE_PATH.items()}


def attach(layer: nn.Module, side: LoraSidePath) -> None:
    """Give `layer` (exactly an nn.Linear or a ScaledFp8Linear) the side path `side`."""
    layer.add_module(ATTRIBUTE, side)
    layer.__class__ = WITH_SIDE_PATH[type(layer)]


def detach(layer: nn.Module) -> None:
    """Take the side path off `layer`: it is its plain class again, with its own tensors only."""
    del layer._modules[ATTRIBUTE]
    layer.__class__ = BASE[type(layer)]
