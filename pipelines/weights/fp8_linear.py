"""Linear layers whose weights stay in fp8 (one scale per tensor), computed in bf16 or in fp8.

Why a small module of our own: diffusers' layerwise casting stores weights in fp8 but has no
per-tensor scale, so ComfyUI's `scaled_fp8` files (weight / scale_weight, the convention users'
files follow) would lose their scales or have to be expanded first; torchao is not a dependency of
the pack and its fp8 weight-only path re-quantizes instead of taking the file's scales as they are.
A `ScaledFp8Linear` keeps exactly the file's fp8 bytes and scale, and dequantizes one layer at a
time just before its matmul, so the model never exists in bf16 as a whole.

The fp8 weight is a buffer, not a parameter: `model.dtype` (diffusers reads the first floating
parameter) then stays the compute dtype, and nothing tries to give an fp8 tensor a gradient.

Optional fp8 compute (`torch._scaled_mm`): activations are quantized per tensor on the fly and
multiplied with the fp8 weight directly. NVIDIA GPUs of compute capability 8.9 and newer (Ada,
Hopper, Blackwell) have the kernels; elsewhere the layer computes in bf16 as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_SCALED_MM_MULTIPLE = 16  # torch._scaled_mm needs both matrix dims divisible by 16


_QUANTIZE_CHUNK = 1 << 22  # elements converted at a time: 16 MB of float32 scratch


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` as float8_e4m3fn plus its per-tensor scale (ComfyUI's `scaled_fp8`: weight = fp8 * scale).

    Converted in chunks: the whole-tensor expression would hold three float32 copies of a 3072x15360
    weight (0.57 GB) at once while a model loads; the numbers are the same to the bit."""
    flat = weight.detach().reshape(-1)
    low, high = torch.aminmax(flat)
    scale = torch.maximum(low.abs(), high.abs()).float().clamp(min=1e-12) / FP8_MAX
    out = torch.empty(weight.shape, dtype=FP8_DTYPE, device=weight.device)
    out_flat = out.view(-1)
    scratch = torch.empty(min(flat.numel(), _QUANTIZE_CHUNK), dtype=torch.float32, device=weight.device)
    for start in range(0, flat.numel(), _QUANTIZE_CHUNK):
        piece = flat[start : start + _QUANTIZE_CHUNK]
        part = scratch[: piece.numel()]
        out_flat[start : start + piece.numel()].copy_(part.copy_(piece).div_(scale))
    return out, scale.reshape(())


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 times its scale in float32, then `dtype`: the same numbers the old whole-file dequantization gave."""
    return (weight.float() * scale.float()).to(dtype)


def fp8_matmul_available(device: torch.device | str) -> bool:
    """Whether `device` has fp8 tensor-core matmuls (CUDA compute capability 8.9 or newer)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class ScaledFp8Linear(nn.Module):
    """`nn.Linear` with an fp8 weight and a float32 scale; the bias stays in the compute dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.fp8_compute = False  # set by `set_fp8_compute`; only honoured where `_scaled_mm` runs
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device))
        self.register_buffer("scale_weight", torch.ones((), dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device=device), requires_grad=False) if bias else None

    @classmethod
    def like(cls, linear: nn.Linear, compute_dtype: torch.dtype) -> "ScaledFp8Linear":
        return cls(linear.in_features, linear.out_features, linear.bias is not None, compute_dtype, device=linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_compute and self._scaled_mm_fits(x):
            return self._fp8_forward(x)
        weight = dequantize_fp8(self.weight, self.scale_weight, x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, weight, bias)

    def _scaled_mm_fits(self, x: torch.Tensor) -> bool:
        return self.in_features % _SCALED_MM_MULTIPLE == 0 and self.out_features % _SCALED_MM_MULTIPLE == 0

    def _fp8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x quantized per tensor, then one fp8 x fp8 matmul with both scales applied by the kernel."""
        rows = x.reshape(-1, self.in_features)
        # The scale is rounded to x's dtype once and that same value divides x and goes to the kernel
        # (dividing by a rounded scale but passing the float32 one biases every output by up to 2^-8).
        # It is nudged up by one epsilon first, so rounding can never push amax / scale past fp8's 448,
        # and kept at least the dtype's smallest normal, so all-zero input gives zeros, not 0/0 in fp16.
        info = torch.finfo(rows.dtype)
        amax = rows.detach().abs().amax().float()
        x_scale = (amax / FP8_MAX * (1 + info.eps)).to(rows.dtype).clamp(min=info.tiny)
        # .contiguous(): cuBLASLt on Hopper takes only a row-major first operand
        x_fp8 = (rows / x_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).contiguous()
        out = torch._scaled_mm(
            x_fp8, self.weight.t(), scale_a=x_scale.float(), scale_b=self.scale_weight.float(),
            bias=self.bias.to(x.dtype) if self.bias is not None else None, out_dtype=x.dtype,
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 weight, compute={self.compute_dtype}"


def swap_linears(model: nn.Module, names, compute_dtype: torch.dtype) -> None:
    """Replace the `nn.Linear` modules named in `names` (module paths) with empty `ScaledFp8Linear`s."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        if isinstance(linear, nn.Linear):
            setattr(parent, child, ScaledFp8Linear.like(linear, compute_dtype))


def quantize_linears(model: nn.Module, names, compute_dtype: torch.dtype) -> None:
    """Turn the loaded `nn.Linear`s named in `names` into fp8 storage, one layer at a time."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        if not isinstance(linear, nn.Linear):
            continue
        layer = ScaledFp8Linear.like(linear, compute_dtype)
        layer.weight, layer.scale_weight = quantize_fp8(linear.weight)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
        setattr(parent, child, layer)


def fp8_layers(model: nn.Module) -> list[ScaledFp8Linear]:
    return [m for m in model.modules() if isinstance(m, ScaledFp8Linear)]


def set_fp8_compute(model: nn.Module, enabled: bool, device: torch.device | str | None = None) -> bool:
    """Switch fp8 matmuls on for every `ScaledFp8Linear` when `device` supports them (`device=None`
    forces it, for tests on CPU where torch also implements `_scaled_mm`). Returns whether it is on."""
    on = bool(enabled) and (device is None or fp8_matmul_available(device))
    for layer in fp8_layers(model):
        layer.fp8_compute = on
    return on
