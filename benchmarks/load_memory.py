"""Transformer loading: peak process RAM and time per file kind, new streamed loader vs the old path.

    python3 benchmarks/load_memory.py [--double 2 --single 4] [--dir /tmp/hyvs_slices]

Writes a slice of the real 13B T2V layout (../shared/comfy/checkpoint_layouts.json: every
non-block tensor plus the first N double and M single blocks, at the real width) as a bf16 file and
as an fp8-scaled file (ComfyUI's convention), then loads each, in this one process:
- "old": the loader before streaming (whole file read, fp8 dequantized in float32, converted, assigned);
- "new": load_transformer with weight_dtype auto (fp8 stays fp8), and bf16 -> fp8_e4m3fn on request.
Time covers the load and one read of every weight (a memory-mapped file is read lazily, on first
use, so timing the load alone would flatter the new loader). Peak RAM is the process's VmHWM (reset between loads via /proc/self/clear_refs) minus the RSS before
the load, with every loaded weight read once so mapped file pages count too. Printed per GB of file.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
from pathlib import Path

import _pack
import torch
from hunyuan_video_suite.pipelines.demo.tiny import to_scaled_fp8
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_keys import authors_to_diffusers
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import (
    COMFY_PREFIXES,
    derive_config,
    load_transformer,
)
from hunyuan_video_suite.pipelines.weights import checkpoints
from safetensors.torch import save_file

GB = 1e9


def slice_shapes(double: int, single: int) -> dict[str, tuple[int, ...]]:
    layout = json.loads(_pack.LAYOUTS.read_text())["files"]["hunyuan_video_t2v_720p_bf16"]
    keep = {}
    for key, shape in layout.items():
        m = re.match(r"(double_blocks|single_blocks)\.(\d+)\.", key)
        if m and int(m.group(2)) >= (double if m.group(1) == "double_blocks" else single):
            continue
        keep[key] = tuple(shape)
    return keep


def write_slices(folder: Path, double: int, single: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bf16, fp8 = folder / f"slice_{double}d{single}s_bf16.safetensors", folder / f"slice_{double}d{single}s_fp8_scaled.safetensors"
    if bf16.exists() and fp8.exists():
        return {"bf16": bf16, "fp8_scaled": fp8}
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=generator) * 0.02).to(torch.bfloat16) for k, s in slice_shapes(double, single).items()}
    save_file(state, str(bf16))
    quantized = to_scaled_fp8(state, quantize=lambda key, value: key.endswith(".weight") and value.ndim == 2)
    del state
    save_file(quantized, str(fp8), metadata={"format": "pt"})
    return {"bf16": bf16, "fp8_scaled": fp8}


def old_loader(path: Path):
    """The loader as it was before streaming (kept here only as the baseline)."""
    from diffusers import HunyuanVideoTransformer3DModel

    state = checkpoints.strip_prefix(checkpoints.load_state_dict(path), COMFY_PREFIXES)
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(checkpoints.FP8_MARKER)}
    state = checkpoints.cast_state_dict(state, torch.bfloat16)
    config = derive_config(shapes, "t2v")
    converted = authors_to_diffusers(state)
    del state
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config)
    model.load_state_dict(converted, strict=False, assign=True)
    return model


def measure(load) -> tuple[float, int, object]:
    gc.collect()
    base = _pack.rss_now()
    _pack.peak_rss_reset()
    started = time.perf_counter()
    model = load()
    for tensor in [*model.parameters(), *model.buffers()]:  # read every weight once (a mapped file reads lazily)
        tensor.reshape(-1).view(torch.uint8).max()
    seconds = time.perf_counter() - started
    peak = _pack.peak_rss() - base
    storage = max({t.dtype for t in model.buffers()} | {t.dtype for t in model.parameters()},
                  key=lambda d: sum(t.numel() for t in [*model.parameters(), *model.buffers()] if t.dtype == d))
    return seconds, peak, storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--double", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--dir", default="/tmp/hyvs_slices")
    args = parser.parse_args()
    import diffusers.models.transformers.transformer_hunyuan_video  # noqa: F401  (imported before any baseline)

    files = write_slices(Path(args.dir), args.double, args.single)
    print(f"slice of the real T2V layout: {args.double} double + {args.single} single blocks at width 3072")
    print(f"{'file':<12} {'loader':<22} {'size GB':>8} {'time s':>7} {'peak RAM GB':>12} {'RAM/GB file':>12}  kept as")
    results = {}
    runs = [
        ("fp8_scaled", "old (dequantize)", lambda p: old_loader(p)),
        ("fp8_scaled", "new auto (fp8)", lambda p: load_transformer(p).model),
        ("bf16", "old", lambda p: old_loader(p)),
        ("bf16", "new auto (bf16)", lambda p: load_transformer(p).model),
        ("bf16", "new fp8_e4m3fn", lambda p: load_transformer(p, dtype="fp8_e4m3fn").model),
    ]
    for kind, name, load in runs:
        path = files[kind]
        size = path.stat().st_size
        seconds, peak, storage = measure(lambda: load(path))
        results[(kind, name)] = (seconds, peak)
        print(f"{kind:<12} {name:<22} {size / GB:>8.2f} {seconds:>7.1f} {peak / GB:>12.2f} {peak / size:>12.2f}  {storage}")
        gc.collect()
    for kind, old, new in (("fp8_scaled", "old (dequantize)", "new auto (fp8)"), ("bf16", "old", "new auto (bf16)")):
        (t_old, m_old), (t_new, m_new) = results[(kind, old)], results[(kind, new)]
        print(f"{kind}: new/old peak RAM {m_new / m_old:.2f}x, new/old time {t_new / t_old:.2f}x")


if __name__ == "__main__":
    main()
