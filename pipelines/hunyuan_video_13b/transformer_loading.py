"""Loading the HunyuanVideo transformer from a diffusers folder or one weight file, offline.

The architecture is read off the tensor shapes, so any size loads; the variant (T2V, I2V v1,
I2V v2, Custom) is read off the keys where they allow it and can always be set by the user.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..lora.apply import LoraChoice
from ..memory.offload import TRANSFORMER_BLOCKS, MemoryOptions
from ..parallel.choice import ParallelChoice
from ..speed.options import SpeedOptions
from ..weights import checkpoints
from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import CheckpointError
from ..weights.fp8_linear import FP8_DTYPE, quantize_linears
from ..weights.streaming_load import FP8_DTYPES, StoragePlan, TensorSource, quantizable_block_prefixes, stream_into
from .transformer_keys import UnknownKeyError, convert_authors_tensor

if TYPE_CHECKING:
    from diffusers import HunyuanVideoTransformer3DModel

CONFIG_DIR = Path(__file__).parent / "configs"
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")

VARIANTS = ("t2v", "i2v_v1", "i2v_v2", "custom")
VARIANT_TITLES = {
    "t2v": "text-to-video",
    "i2v_v1": "image-to-video v1 (latent concat)",
    "i2v_v2": "image-to-video v2 (token replace)",
    "custom": "HunyuanCustom ref2v",
}
IMAGE_CONDITION_TYPE = {"t2v": None, "i2v_v1": "latent_concat", "i2v_v2": "token_replace", "custom": None}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# `weight_dtype` of the transformer: how its weights are *stored*; fp8 storage computes in bf16.
WEIGHT_DTYPES = ("auto", *DTYPES, "fp8_e4m3fn")
BLOCK_CONTAINERS = TRANSFORMER_BLOCKS  # where fp8 storage and offload apply


@dataclass
class LoadedTransformer:
    """The diffusers model plus what the pipelines need to know about it.

    `memory` carries the user's offload/fp8-compute choices (the Memory Options node sets them);
    the default lets the planner decide, which on a CPU means today's behaviour: all resident.
    """

    model: HunyuanVideoTransformer3DModel
    variant: str
    source: str
    speed: SpeedOptions = field(default_factory=SpeedOptions)  # the default runs the model as diffusers does
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    weight_dtype: str = "auto"  # as the user asked; the planner may store in fp8 only when this is auto
    loras: tuple[LoraChoice, ...] = ()  # applied by the samplers for each run (LoRA nodes, --lora)
    preview: str = "first frame"  # the frames the nodes' live previews show (the Preview Options node)
    parallel: ParallelChoice | None = None  # sampled on several GPUs when set (the Multi-GPU node)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (fp8-stored layers dequantize to it)."""
        return self.model.dtype

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype most weight bytes are kept in (float8_e4m3fn when the block linears are fp8)."""
        counts = Counter()
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            counts[tensor.dtype] += tensor.numel()
        return counts.most_common(1)[0][0]


def _count_blocks(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def latent_channels(shapes: dict[str, tuple[int, ...]]) -> int:
    """Channels of the latent the model predicts (16 for the real VAE)."""
    _, _, patch_t, patch_h, patch_w = shapes["img_in.proj.weight"]
    return shapes["final_layer.linear.weight"][0] // (patch_t * patch_h * patch_w)


def derive_config(shapes: dict[str, tuple[int, ...]], variant: str) -> dict:
    """diffusers config of a transformer in the authors' layout, from its tensor shapes."""
    try:
        hidden, in_channels, patch_t, patch_h, _ = shapes["img_in.proj.weight"]
        head_dim = shapes["double_blocks.0.img_attn_q_norm.weight"][0]
        mlp_hidden = shapes["double_blocks.0.img_mlp.fc1.weight"][0]
        text_dim = shapes["txt_in.input_embedder.weight"][1]
        pooled_dim = shapes["vector_in.in_layer.weight"][1]
    except KeyError as e:
        raise CheckpointError(f"missing tensor {e.args[0]!r}") from e
    constants = json.loads((CONFIG_DIR / "transformer_constants.json").read_text())
    return {
        "in_channels": in_channels,
        "out_channels": latent_channels(shapes),
        "num_attention_heads": hidden // head_dim,
        "attention_head_dim": head_dim,
        "num_layers": _count_blocks(shapes, "double_blocks"),
        "num_single_layers": _count_blocks(shapes, "single_blocks"),
        "num_refiner_layers": _count_blocks(shapes, "txt_in.individual_token_refiner.blocks"),
        "mlp_ratio": mlp_hidden / hidden,
        "patch_size": patch_h,
        "patch_size_t": patch_t,
        "qk_norm": constants["qk_norm"],
        "guidance_embeds": "guidance_in.mlp.0.weight" in shapes,
        "text_embed_dim": text_dim,
        "pooled_projection_dim": pooled_dim,
        "rope_theta": constants["rope_theta"],
        "rope_axes_dim": rope_axes_for(head_dim),
        "image_condition_type": IMAGE_CONDITION_TYPE[variant],
    }


def rope_axes_for(head_dim: int) -> tuple[int, int, int]:
    """RoPE split of one head over (t, h, w): (16, 56, 56) for the real 128-wide heads, the same proportions otherwise."""
    t = max(2, 2 * round(head_dim / 16))
    hw = (head_dim - t) // 2
    if t + 2 * hw != head_dim or hw % 2:
        raise CheckpointError(f"attention head width {head_dim} cannot be split into even RoPE axes")
    return (t, hw, hw)


def detect_variant(shapes: dict[str, tuple[int, ...]], name_hint: str = "", metadata: dict | None = None) -> str:
    """The variant the weights show; T2V and I2V v2 share shapes, so file name and metadata break that tie."""
    keys = set(shapes)
    if any(k.startswith(("audio_proj", "audio_models.", "bg_in", "bg_proj")) for k in keys):
        raise CheckpointError(
            "this is a HunyuanCustom audio or editing checkpoint; only the single-subject ref2v Custom model is supported"
        )
    if shapes["img_in.proj.weight"][1] == 2 * latent_channels(shapes) + 1:
        return "i2v_v1"
    if "guidance_in.mlp.0.weight" not in keys:
        return "custom"
    hint = (name_hint + " " + json.dumps(metadata or {})).lower()
    if ("v2" in hint or "replace" in hint) and ("i2v" in hint or "image_to_video" in hint or "image-to-video" in hint):
        return "i2v_v2"
    return "t2v"


def resolve_dtype(choice: str, stored: torch.dtype) -> torch.dtype:
    """`auto` keeps a file's bf16/fp16/fp32; fp8 files are computed in bf16."""
    if choice != "auto":
        if choice not in DTYPES:
            raise ValueError(f"weight_dtype must be one of auto, {', '.join(DTYPES)}; got {choice!r}")
        return DTYPES[choice]
    return stored if stored in DTYPES.values() else torch.bfloat16


def plan_storage(choice: str, stored: torch.dtype) -> StoragePlan:
    """What `weight_dtype` means for a file stored as `stored`: auto keeps fp8 as fp8 and any other
    dtype as it is; fp8_e4m3fn stores the block linears in fp8 whatever the file; the rest cast."""
    if choice not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}; got {choice!r}")
    if choice == "fp8_e4m3fn" or (choice == "auto" and stored in FP8_DTYPES):
        return StoragePlan(storage=FP8_DTYPE, compute=torch.bfloat16)
    dtype = resolve_dtype(choice, stored)
    return StoragePlan(storage=dtype, compute=dtype)


def _stored_dtype(source: TensorSource) -> torch.dtype:
    """The dtype most weights are stored in; fp8 when the file is scaled fp8."""
    if source.is_fp8():
        return torch.float8_e4m3fn
    counts = Counter(dtype for _, dtype in source.infos.values() if dtype.is_floating_point)
    return counts.most_common(1)[0][0]


def load_transformer(path: str | Path, variant: str = "auto", dtype: str = "auto", device="cpu") -> LoadedTransformer:
    """A transformer from a diffusers folder (or its `transformer/` subfolder) or one weight file."""
    path = Path(path)
    if variant != "auto" and variant not in VARIANTS:
        raise ValueError(f"variant must be one of auto, {', '.join(VARIANTS)}; got {variant!r}")
    if path.is_dir():
        return _load_diffusers_folder(path, variant, dtype, device)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    try:
        return _load_single_file(path, variant, dtype, device)
    except CheckpointError as e:
        message = str(e)
        raise CheckpointError(message if message.startswith(path.name) else f"{path.name}: {message}") from e


def _load_single_file(path: Path, variant: str, dtype: str, device) -> LoadedTransformer:
    """Streamed from the file (see `streaming_load`): header first, so a wrong file is refused before
    any weight is read; then the model is built on `meta` and filled tensor by tensor."""
    source = TensorSource(path, COMFY_PREFIXES)
    _require_authors_layout(source.keys())
    metadata = checkpoints.read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    shapes = {k: source.shape(k) for k in source.keys() if not k.endswith(checkpoints.FP8_MARKER)}
    chosen = variant if variant != "auto" else detect_variant(shapes, path.name, metadata)
    _check_variant_fits(shapes, chosen)
    plan = plan_storage(dtype, _stored_dtype(source))
    config = derive_config(shapes, chosen)
    hidden = shapes["img_in.proj.weight"][0]

    def convert(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        try:
            return convert_authors_tensor(key, value, hidden)
        except UnknownKeyError as e:
            raise CheckpointError(f"unknown tensor {e.args[0]!r} for a HunyuanVideo transformer") from e
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config)
    missing = stream_into(
        model, source, convert, plan, quantizable_block_prefixes(model, BLOCK_CONTAINERS),
        skip=lambda key: key.endswith(checkpoints.FP8_MARKER),
    )
    if missing:
        raise CheckpointError(f"does not match the HunyuanVideo transformer layout (missing {sorted(missing)[:3]})")
    model.to(device).eval()
    return LoadedTransformer(model=model, variant=chosen, source=str(path), weight_dtype=dtype)


def _require_authors_layout(keys) -> None:
    if "img_in.proj.weight" in keys and any(k.startswith("double_blocks.") for k in keys):
        return
    if "x_embedder.proj.weight" in keys:
        raise CheckpointError(
            "a diffusers-format transformer saved as one file; point the loader at its diffusers folder instead"
        )
    raise CheckpointError(
        "expected a HunyuanVideo transformer in the authors' layout (keys like 'double_blocks.0.img_attn_qkv.weight'), "
        f"but this holds {guess_checkpoint_kind(keys)}"
    )


def _check_variant_fits(shapes, variant: str) -> None:
    in_channels = shapes["img_in.proj.weight"][1]
    latent = latent_channels(shapes)
    has_guidance = "guidance_in.mlp.0.weight" in shapes
    if variant == "i2v_v1" and in_channels != 2 * latent + 1:
        raise CheckpointError(f"variant i2v_v1 needs {2 * latent + 1} input channels, this model has {in_channels}")
    if variant != "i2v_v1" and in_channels != latent:
        raise CheckpointError(f"variant {variant} needs {latent} input channels, this model takes {in_channels} (I2V v1?)")
    _check_guidance_fits(variant, has_guidance)


def _check_guidance_fits(variant: str, has_guidance: bool) -> None:
    """T2V and I2V v2 are distilled with a guidance embedding; HunyuanCustom has none (real CFG instead)."""
    if variant in ("t2v", "i2v_v2") and not has_guidance:
        raise CheckpointError(f"variant {variant} needs the guidance embedding, which this model lacks (HunyuanCustom?)")
    if variant == "custom" and has_guidance:
        raise CheckpointError("variant custom: this model has a guidance embedding, which HunyuanCustom lacks (T2V or I2V v2?)")


def _load_diffusers_folder(folder: Path, variant: str, dtype: str, device) -> LoadedTransformer:
    sub = folder / "transformer" if (folder / "transformer" / "config.json").exists() else folder
    config_path = sub / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{folder}: no diffusers transformer here (expected transformer/config.json)")
    config = json.loads(config_path.read_text())
    if config.get("_class_name") not in (None, "HunyuanVideoTransformer3DModel"):
        raise CheckpointError(f"{folder}: holds a {config.get('_class_name')}, expected HunyuanVideoTransformer3DModel")
    detected = {None: "t2v", "latent_concat": "i2v_v1", "token_replace": "i2v_v2"}[config.get("image_condition_type")]
    if detected == "t2v" and not config.get("guidance_embeds", True):
        detected = "custom"
    chosen = detected if variant == "auto" else variant
    if IMAGE_CONDITION_TYPE[chosen] != config.get("image_condition_type"):
        raise CheckpointError(f"{folder}: configured as {VARIANT_TITLES[detected]}, not {VARIANT_TITLES[chosen]}")
    try:
        _check_guidance_fits(chosen, bool(config.get("guidance_embeds", True)))
    except CheckpointError as e:
        raise CheckpointError(f"{folder}: {e}") from e
    plan = plan_storage(dtype, getattr(torch, str(config.get("torch_dtype")), torch.bfloat16))
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel.from_pretrained(sub, torch_dtype=plan.compute, local_files_only=True)
    if plan.fp8:
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, linears, plan.compute)
    model.to(device).eval()
    return LoadedTransformer(model=model, variant=chosen, source=str(folder), weight_dtype=dtype)
