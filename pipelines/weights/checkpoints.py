"""Reading weight files safely: safetensors, or pickles only through `torch.load(weights_only=True)`.

Also the two transformations every single-file loader needs: dropping a key prefix that
ComfyUI adds (`model.diffusion_model.`), and turning fp8 weights with per-tensor scales
(`<name>.scale_weight`, ComfyUI's `scaled_fp8` convention) back into ordinary floats.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SCALE_SUFFIX = ".scale_weight"
INPUT_SCALE_SUFFIX = ".scale_input"
FP8_MARKER = "scaled_fp8"


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or not the kind of file that was asked for."""


def safetensors_data_start(path: str | os.PathLike) -> int:
    """Byte offset where a safetensors file's tensor data begins (after the 8-byte length and the header)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
    return 8 + size


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """Tensor names -> {dtype, shape} without reading the weights (the file's JSON header)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path.name}: file is empty or truncated (no safetensors header)")
            (size,) = struct.unpack("<Q", raw)
            if size > 100 * 1024 * 1024:
                raise CheckpointError(f"{path.name}: not a safetensors file (header size {size} bytes)")
            header = f.read(size)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    if len(header) != size:
        raise CheckpointError(f"{path.name}: file is truncated (header cut short)")
    try:
        table = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name}: not a safetensors file (header is not JSON)") from e
    table.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in table.values()), default=0)
    if path.stat().st_size < 8 + size + end:
        raise CheckpointError(
            f"{path.name}: file is truncated ({path.stat().st_size} bytes, its header promises {8 + size + end})"
        )
    return table


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size)).get("__metadata__") or {}


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of one weight file. Pickled files load with `weights_only=True` only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # torch raises several types for a bad pickle
            raise CheckpointError(f"{path.name}: cannot be loaded as a weights-only torch file ({e})") from e
        for key in ("module", "state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path.name}: holds no state dict")
        return state
    read_safetensors_header(path)  # clear errors for truncated or foreign files
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.name}: not a readable safetensors file ({e})") from e


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop the first prefix that every weight key shares (e.g. ComfyUI's `model.diffusion_model.`)."""
    for prefix in prefixes:
        keys = [k for k in state if not k.endswith(FP8_MARKER)]
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def is_scaled_fp8(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(SCALE_SUFFIX) for k in state) or any(
        v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) for v in state.values()
    )


def dequantize_scaled_fp8(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """fp8 weights times their per-tensor `scale_weight`, as `dtype`; scale and marker keys dropped."""
    out = {}
    for key, value in state.items():
        if key.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX)) or key.endswith(FP8_MARKER):
            continue
        scale = state.get(key[: -len(".weight")] + SCALE_SUFFIX) if key.endswith(".weight") else None
        if scale is not None:
            value = value.to(torch.float32) * scale.to(torch.float32)
        out[key] = value.to(dtype) if value.is_floating_point() else value
    return out


def cast_state_dict(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floats to `dtype` (fp8 with scales dequantized first); other tensors untouched."""
    if is_scaled_fp8(state):
        return dequantize_scaled_fp8(state, dtype)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """What differs between the tensors a model expects and those a file holds; empty when they match."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    details = []
    if missing:
        details.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        details.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if wrong:
        k = wrong[0]
        details.append(f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)}, expected {tuple(expected[k].shape)})")
    return "; ".join(details)
