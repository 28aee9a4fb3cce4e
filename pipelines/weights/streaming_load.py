"""Building a model tensor by tensor from its file, so no second full copy ever exists in RAM.

The model is made on the `meta` device (no memory), then each tensor is read from the file, renamed
or split, brought to its storage dtype and put in place, before the next one is read.
safetensors' `safe_open` gives tensors backed by the file's memory map (safetensors 0.4+): a tensor
kept in its stored dtype costs no copy at all, so a bf16 file kept bf16 or an fp8 file kept fp8
uses about one file size of RAM (the mapped pages). A tensor that is cast (a bf16 weight quantized
to fp8, an fp8 weight expanded to bf16) is read with plain file reads instead (`TensorSource.read`):
read through the map, its pages would stay in the process's memory until the whole load ends, next
to the cast copy (a bf16 file stored as fp8 peaked at 1.39x the file that way).

Storage rules (what `weight_dtype` asks for, see `plan_storage`):
- fp8 storage: linear weights that the file holds in fp8 stay fp8 with their `scale_weight`
  (`ScaledFp8Linear`); with a bf16/fp16 file, the linears of the transformer blocks (about 97% of
  the 13B weights) are quantized with one scale per tensor as they stream in. Everything else is
  kept in the compute dtype (bf16).
- bf16/fp16/fp32 storage: fp8 weights are dequantized one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints
from .fp8_linear import FP8_DTYPE, ScaledFp8Linear, dequantize_fp8, quantize_fp8, swap_linears

SAFETENSORS_DTYPES = {
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "BF16": torch.bfloat16, "F16": torch.float16,
    "F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
    "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


# ComfyUI's newer fp8 files (its "mixed precision" format) name the per-tensor scales `<layer>.weight_scale` and
# `<layer>.input_scale` and describe each layer in a `<layer>.comfy_quant` tensor; their per-tensor fp8 is the
# `scaled_fp8` convention under other names, so those names are read as `scale_weight`/`scale_input`.
QUANT_INFO = ".comfy_quant"
_SCALE_ALIASES = {".weight_scale": checkpoints.SCALE_SUFFIX, ".input_scale": checkpoints.INPUT_SCALE_SUFFIX}


def _scale_name(key: str) -> str:
    for alias, name in _SCALE_ALIASES.items():
        if key.endswith(alias):
            return key[: -len(alias)] + name
    return key


class TensorSource:
    """The tensors of one weight file by (prefix-stripped) name: shapes and dtypes without reading
    the weights, and each tensor on request. safetensors files are read through `safe_open`
    (memory-mapped); pickled files, which cannot be streamed, come in as an already loaded dict."""

    def __init__(self, path: str | Path, prefixes: tuple[str, ...] = (), drop: tuple[str, ...] = ()):
        """`prefixes`: strip the first one every weight name shares; `drop`: ignore names starting so."""
        self.path = Path(path)
        self._tensors: Mapping[str, torch.Tensor] | None = None
        self._file = None
        self._offsets: dict[str, tuple[int, int]] = {}
        self._reader = None
        self._buffer: torch.Tensor | None = None
        if self.path.suffix.lower() == ".safetensors":
            header = checkpoints.read_safetensors_header(self.path)
            infos = {k: (tuple(v["shape"]), SAFETENSORS_DTYPES.get(v["dtype"], torch.float32)) for k, v in header.items()}
            start = checkpoints.safetensors_data_start(self.path)
            self._offsets = {k: (start + v["data_offsets"][0], start + v["data_offsets"][1]) for k, v in header.items()}
        else:
            self._tensors = checkpoints.load_state_dict(self.path)
            infos = {k: (tuple(v.shape), v.dtype) for k, v in self._tensors.items()}
        infos = {k: v for k, v in infos.items() if not k.startswith(drop)} if drop else infos
        weights = [k for k in infos if not k.endswith(checkpoints.FP8_MARKER)]
        prefix = next((p for p in prefixes if weights and all(k.startswith(p) for k in weights)), "")
        self._names = {_scale_name(k[len(prefix):]): k for k in infos if k.startswith(prefix) and not k.endswith(QUANT_INFO)}
        self.infos = {k: infos[name] for k, name in self._names.items()}

    def keys(self) -> list[str]:
        return list(self.infos)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.infos[key][0]

    def dtype(self, key: str) -> torch.dtype:
        return self.infos[key][1]

    def get(self, key: str) -> torch.Tensor:
        name = self._names[key]
        if self._tensors is not None:
            return self._tensors[name]
        if self._file is None:
            from safetensors import safe_open

            try:
                self._file = safe_open(str(self.path), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types for damaged files
                raise checkpoints.CheckpointError(f"{self.path.name}: not a readable safetensors file ({e})") from e
        return self._file.get_tensor(name)

    def nbytes(self, key: str) -> int:
        shape, dtype = self.infos[key]
        return torch.Size(shape).numel() * dtype.itemsize

    def read(self, key: str, reserve: int = 0) -> torch.Tensor:
        """Tensor `key` read with plain file reads into one buffer that every `read` reuses, for a
        tensor that is about to be cast: none of its pages stay mapped into the process, and one buffer
        instead of a fresh one per tensor keeps the allocator from scattering freed memory (safetensors
        has no call for this; its `safe_open` always maps the file). The tensor is valid until the next
        `read`: cast or copy it first; `reserve` sizes the buffer for the largest tensor still to come,
        so it is allocated once. Pickled sources hand out their loaded tensor."""
        name = self._names[key]
        if self._tensors is not None:
            return self._tensors[name]
        begin, end = self._offsets[name]
        shape, dtype = self.infos[key]
        if self._buffer is None or self._buffer.numel() < end - begin:
            self._buffer = None
            self._buffer = torch.empty(max(end - begin, reserve), dtype=torch.uint8)
        data = self._buffer[: end - begin]
        if self._reader is None:
            self._reader = open(self.path, "rb")
        self._reader.seek(begin)
        if self._reader.readinto(data.numpy()) != end - begin:
            raise checkpoints.CheckpointError(f"{self.path.name}: file is truncated (tensor {name} cut short)")
        return data.view(dtype).reshape(shape)

    def close(self) -> None:
        """Drop the file handles; tensors already handed out keep their own reference to the mapping."""
        self._file = None
        self._tensors = None
        self._buffer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def is_fp8(self) -> bool:
        return any(k.endswith(checkpoints.SCALE_SUFFIX) for k in self.infos) or any(
            dtype in FP8_DTYPES for _, dtype in self.infos.values()
        )


@dataclass(frozen=True)
class StoragePlan:
    """How weights are kept: `storage` (bf16/fp16/fp32, or fp8 for the block linears) and `compute` dtype."""

    storage: torch.dtype
    compute: torch.dtype

    @property
    def fp8(self) -> bool:
        return self.storage == FP8_DTYPE


def _is_scale(key: str) -> bool:
    return key.endswith((checkpoints.SCALE_SUFFIX, checkpoints.INPUT_SCALE_SUFFIX, checkpoints.FP8_MARKER))


def _weight_scale_key(key: str) -> str | None:
    return key[: -len(".weight")] + checkpoints.SCALE_SUFFIX if key.endswith(".weight") else None


def stream_into(
    model: nn.Module,
    source: TensorSource,
    convert: Callable[[str, torch.Tensor], dict[str, torch.Tensor]],
    plan: StoragePlan,
    quantize_prefixes: Iterable[str] = (),
    skip: Callable[[str], bool] = lambda key: False,
) -> list[str]:
    """Fill the `meta` model `model` from `source`, tensor by tensor; returns the names of its tensors
    the file did not provide (empty when complete). `convert(key, tensor)` renames/splits one file
    tensor into model names; `quantize_prefixes` names the module paths whose linears are quantized
    to fp8 when the plan stores fp8 and the file does not."""
    keys = [k for k in source.keys() if not _is_scale(k) and not skip(k)]
    scales = {k: source.get(k).float() for k in source.keys() if k.endswith(checkpoints.SCALE_SUFFIX) and not skip(k)}
    blockwise = next((k for k, scale in scales.items() if scale.numel() != 1), None)
    if blockwise is not None:
        raise checkpoints.CheckpointError(f"{source.path.name}: {blockwise} holds {scales[blockwise].numel()} scales; only "
                                          "fp8 with one scale per tensor is supported")
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    fp8_modules = _fp8_modules(keys, source, convert, linears, plan, tuple(quantize_prefixes))
    swap_linears(model, sorted(fp8_modules), plan.compute)
    cast_keys = {key for key in keys if _is_cast(key, source, convert, fp8_modules, plan)}
    largest_cast = max((source.nbytes(key) for key in cast_keys), default=0)
    for key in keys:
        cast = key in cast_keys
        value = source.read(key, reserve=largest_cast) if cast else source.get(key)
        read = value if cast else None
        scale = scales.get(_weight_scale_key(key) or "")
        stored_fp8 = value.dtype in FP8_DTYPES
        if stored_fp8 and scale is None:
            scale = torch.ones((), dtype=torch.float32)
        for name, part in convert(key, value).items():
            module_name, _, attr = name.rpartition(".")
            if module_name in fp8_modules and attr == "weight":
                if stored_fp8 and part.dtype == FP8_DTYPE:
                    weight, part_scale = part, scale
                else:
                    full = dequantize_fp8(part, scale, torch.float32) if stored_fp8 else part
                    weight, part_scale = quantize_fp8(full)
                _assign(model, module_name, "weight", _owned(weight, read), buffer=True)
                _assign(model, module_name, "scale_weight", part_scale.reshape(()).clone(), buffer=True)
            else:
                if stored_fp8:
                    part = dequantize_fp8(part, scale, plan.compute)
                _assign(model, module_name, attr, _owned(_as_compute(part, plan), read))
        del value
    source.close()
    return [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]


def _owned(tensor: torch.Tensor, read: torch.Tensor | None) -> torch.Tensor:
    """`tensor`, copied out of the read buffer when it still lives there (the next read overwrites it)."""
    if read is not None and tensor.untyped_storage().data_ptr() == read.untyped_storage().data_ptr():
        return tensor.clone()
    return tensor


def _is_cast(key: str, source: TensorSource, convert, fp8_modules: set[str], plan: StoragePlan) -> bool:
    """Whether file tensor `key` is stored in another dtype than the file's (decided from the header)."""
    dtype = source.dtype(key)
    for name, part in convert(key, torch.empty(source.shape(key), dtype=dtype, device="meta")).items():
        module_name, _, attr = name.rpartition(".")
        if module_name in fp8_modules and attr == "weight":
            if not (dtype in FP8_DTYPES and part.dtype == FP8_DTYPE):
                return True
        elif dtype in FP8_DTYPES or _as_compute(part, plan).dtype != part.dtype:
            return True
    return False


def _fp8_modules(keys, source, convert, linears, plan: StoragePlan, quantize_prefixes) -> set[str]:
    """Module paths of the linears kept in fp8 under `plan` (decided from the header alone)."""
    if not plan.fp8:
        return set()
    chosen = set()
    for key in keys:
        if not key.endswith(".weight"):
            continue
        dtype = source.dtype(key)
        converted = convert(key, torch.empty(source.shape(key), dtype=dtype, device="meta"))
        for name, part in converted.items():
            module_name = name.rpartition(".")[0]
            if module_name not in linears:
                continue
            if dtype in FP8_DTYPES and part.dtype == dtype:  # kept as the file has it (a cat would have cast it)
                chosen.add(module_name)
            elif any(module_name.startswith(p) for p in quantize_prefixes):
                chosen.add(module_name)
    return chosen


def _as_compute(tensor: torch.Tensor, plan: StoragePlan) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor
    dtype = plan.compute if plan.fp8 else plan.storage
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _assign(model: nn.Module, module_name: str, attr: str, tensor: torch.Tensor, buffer: bool = False) -> None:
    try:
        module = model.get_submodule(module_name)
    except AttributeError as e:
        raise checkpoints.CheckpointError(f"unexpected tensor {module_name}.{attr} for this model") from e
    current = module._buffers.get(attr) if buffer or attr in module._buffers else module._parameters.get(attr)
    if current is None and attr not in module._parameters and attr not in module._buffers:
        raise checkpoints.CheckpointError(f"unexpected tensor {module_name}.{attr} for this model")
    if current is not None and tuple(current.shape) != tuple(tensor.shape):
        raise checkpoints.CheckpointError(
            f"tensor {module_name}.{attr} has shape {tuple(tensor.shape)}, the model expects {tuple(current.shape)}"
        )
    if buffer or attr in module._buffers:
        module._buffers[attr] = tensor
    else:
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)


def quantizable_block_prefixes(model: nn.Module, containers: Iterable[str]) -> list[str]:
    """`containers.N.` prefixes for every block of the named ModuleLists (where fp8 storage applies)."""
    prefixes = []
    for container in containers:
        blocks = getattr(model, container, None)
        if blocks is not None:
            prefixes.extend(f"{container}.{i}." for i in range(len(blocks)))
    return prefixes


def count_fp8_layers(model: nn.Module) -> int:
    return sum(isinstance(m, ScaledFp8Linear) for m in model.modules())
