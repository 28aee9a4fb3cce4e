"""Loading the HunyuanVideo 1.5 transformer offline: ComfyUI's single files, the authors' folders, diffusers'.

Every path streams the weights into a model built on `meta` (`weights/streaming_load.py`): fp8 files
stay fp8, and a wrong file is refused from its header before any weight is read. The architecture is
read off the tensor shapes (any width loads, which the tiny test models use); the variant as
`variants.py` says.
"""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..lora.apply import LoraChoice
from ..memory.offload import MemoryOptions
from ..memory.vram_planner import HV15_PROFILE, PlannerProfile
from ..parallel.choice import ParallelChoice
from ..speed.options import SpeedOptions
from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import FP8_MARKER, CheckpointError
from ..weights.fp8_linear import FP8_DTYPE
from ..weights.streaming_load import FP8_DTYPES, StoragePlan, TensorSource, quantizable_block_prefixes, stream_into
from . import attention
from .sizes import BUCKET_BASES
from .transformer_keys import UnknownKeyError, convert_tensor, layout_of
from .variants import SR_VARIANTS, Variant, parse_variant, sr_variant_from_name, variant_from_config, variant_from_name

if TYPE_CHECKING:
    from diffusers import HunyuanVideo15Transformer3DModel

COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
BLOCK_CONTAINERS = ("transformer_blocks",)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WEIGHT_DTYPES = ("auto", *DTYPES, "fp8_e4m3fn")
SR_INPUT_CHANNELS = 98
SSTA_NOTICE = ("sparse (SSTA) checkpoint: runs with dense attention (SSTA needs Tencent's flex-block-attn kernel on "
               "an H-series GPU, which neither diffusers nor ComfyUI ships)")


@dataclass
class LoadedTransformer15:
    """The diffusers model plus what the samplers and the engine need to know about it (the engine reads
    `model`, `variant`, `speed`, `memory` and `weight_dtype`, as for the 13B family's `LoadedTransformer`)."""

    model: HunyuanVideo15Transformer3DModel
    variant: Variant
    source: str
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    weight_dtype: str = "auto"
    notice: str = ""  # one line for the user (e.g. the sparse checkpoint runs dense)
    loras: tuple[LoraChoice, ...] = ()  # applied by the samplers for each run (LoRA nodes, --lora)
    preview: str = "first frame"  # the frames the nodes' live previews show (the Preview Options node)
    parallel: ParallelChoice | None = None  # sampled on several GPUs when set (the Multi-GPU node)

    planner_profile: PlannerProfile = HV15_PROFILE

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


def plan_storage(choice: str, stored: torch.dtype) -> StoragePlan:
    """auto keeps a file's dtype (fp8 as fp8, computed in bf16); fp8_e4m3fn stores the block linears in fp8
    whatever the file; bf16/fp16/fp32 cast."""
    if choice not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}; got {choice!r}")
    if choice == "fp8_e4m3fn" or (choice == "auto" and stored in FP8_DTYPES):
        return StoragePlan(storage=FP8_DTYPE, compute=torch.bfloat16)
    dtype = DTYPES[choice] if choice != "auto" else stored if stored in DTYPES.values() else torch.bfloat16
    return StoragePlan(storage=dtype, compute=dtype)


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def derive_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """diffusers config of a transformer in the authors'/ComfyUI layout, from its tensor shapes."""
    try:
        hidden, in_channels = shapes["img_in.proj.weight"][:2]
        head_dim = shapes["double_blocks.0.img_attn_q_norm.weight"][0]
        config = {
            "in_channels": in_channels,
            "out_channels": shapes["final_layer.linear.weight"][0],
            "num_attention_heads": hidden // head_dim,
            "attention_head_dim": head_dim,
            "num_layers": _count(shapes, r"double_blocks\.(\d+)\."),
            "num_refiner_layers": _count(shapes, r"txt_in\.individual_token_refiner\.blocks\.(\d+)\."),
            "mlp_ratio": shapes["double_blocks.0.img_mlp.fc1.weight"][0] / hidden,
            "text_embed_dim": shapes["txt_in.input_embedder.weight"][1],
            "text_embed_2_dim": shapes["byt5_in.fc1.weight"][1],
            "image_embed_dim": shapes["vision_in.proj.1.weight"][1],
            "rope_axes_dim": rope_axes_for(head_dim),
            "use_meanflow": "time_r_in.mlp.0.weight" in shapes,
        }
    except KeyError as e:
        raise CheckpointError(f"missing tensor {e.args[0]!r} of a HunyuanVideo 1.5 transformer") from e
    return config


def rope_axes_for(head_dim: int) -> tuple[int, int, int]:
    """(16, 56, 56) for the real 128-wide heads; the same proportions for a smaller test model."""
    t = max(2, 2 * round(head_dim / 16))
    hw = (head_dim - t) // 2
    if t + 2 * hw != head_dim or hw % 2:
        raise CheckpointError(f"attention head width {head_dim} cannot be split into even RoPE axes")
    return (t, hw, hw)


def _check_family(keys, name: str) -> None:
    """A HunyuanVideo 1.5 transformer, else a message saying what the file holds."""
    keys = set(keys)
    if "cond_type_embedding.weight" in keys and "byt5_in.fc1.weight" in keys and "double_blocks.0.img_mod.linear.weight" in keys:
        if any(k.startswith("single_blocks.") for k in keys):
            raise CheckpointError(f"{name}: has single-stream blocks, which HunyuanVideo 1.5 lacks (HunyuanImage?)")
        return
    if "double_blocks.0.img_mod.linear.weight" in keys:
        raise CheckpointError(f"{name}: is a HunyuanVideo 13B (2024) transformer, not HunyuanVideo 1.5: "
                              "use the HunyuanVideo Suite transformer loader for it")
    raise CheckpointError(f"{name}: expected a HunyuanVideo 1.5 transformer (keys like 'double_blocks.0.img_attn_qkv.weight' "
                          f"and 'byt5_in.fc1.weight'), but this holds {guess_checkpoint_kind(keys)}")


def choose_variant(asked: str, meanflow: bool, in_channels: int, candidates: list[str | None]) -> Variant:
    """The variant `asked` (checked against what the keys show), else the first that config.json or a name
    told (`candidates`, in order of trust)."""
    if in_channels == SR_INPUT_CHANNELS:
        return _choose_sr_variant(asked, meanflow, candidates)
    if asked != "auto":
        variant = parse_variant(asked)
        if variant.is_sr:
            raise CheckpointError(f"variant {asked} does not fit these weights: they are a T2V/I2V transformer "
                                  f"({in_channels} input channels), not the super-resolution DiT ({SR_INPUT_CHANNELS})")
        if variant.meanflow != meanflow:
            has = "has" if meanflow else "lacks"
            raise CheckpointError(f"variant {asked} does not fit these weights: the file {has} the step-distilled "
                                  "(MeanFlow time_r_in) embedder")
        return variant
    found = next((c for c in candidates if c), None)
    if found is None:
        raise CheckpointError("cannot tell the variant (480p/720p, T2V/I2V, distilled) from the weights, config or "
                              "file name: set the loader's variant")
    variant = Variant(found)
    if variant.meanflow != meanflow:
        raise CheckpointError(f"the name says {variant.name}, but the weights {'have' if meanflow else 'lack'} the "
                              "step-distilled embedder: set the loader's variant")
    return variant


def _choose_sr_variant(asked: str, meanflow: bool, candidates: list[str | None]) -> Variant:
    """The super-resolution DiT (98 input channels): 720p or 1080p as asked, else as its name or config tells."""
    if asked != "auto":
        if not parse_variant(asked).is_sr:
            raise CheckpointError(f"variant {asked} does not fit these weights: they are the super-resolution DiT "
                                  f"({SR_INPUT_CHANNELS} input channels); choose {' or '.join(SR_VARIANTS)}")
        return Variant(asked, sr_meanflow=meanflow)
    found = next((c for c in candidates if c), None)
    if found is None:
        raise CheckpointError("this super-resolution DiT's name and config do not say 720p or 1080p: set the loader's "
                              f"variant to {' or '.join(SR_VARIANTS)}")
    return Variant(found, sr_meanflow=meanflow)


def _locate(path: Path) -> tuple[list[Path], list[str], dict]:
    """(weight files, names that may spell the variant, config.json) of a file or a folder."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path], [path.name], {}
    sub = path / "transformer" if (path / "transformer" / "config.json").exists() else path
    config_path = sub / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    files = sorted(sub.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no transformer weights here (expected config.json and *.safetensors)")
    return files, [sub.name, path.name], config


def load_transformer(path: str | Path, variant: str = "auto", dtype: str = "auto", device="cpu") -> LoadedTransformer15:
    """A 1.5 transformer from one file (ComfyUI's or the authors' layout), an authors' folder (`config.json` +
    safetensors shards) or a diffusers folder (or its `transformer/` subfolder)."""
    path = Path(path)
    if variant != "auto":
        parse_variant(variant)
    plan_storage(dtype, torch.bfloat16)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    attention.install()
    files, hints, config = _locate(path)
    return _load_files(files, variant, dtype, device, hints=hints, config=config, source=str(path))


def read_variant(path: str | Path, variant: str = "auto") -> Variant:
    """The variant `load_transformer` would load, from the safetensors headers, the names and config.json alone
    (no weight is read, diffusers is not imported); raises what it would (CheckpointError, or ValueError for an
    unknown variant name) for a file it refuses from those. A pickled file has no header: it is read whole."""
    path = Path(path)
    if variant != "auto":
        parse_variant(variant)
    files, hints, config = _locate(path)
    sources = [TensorSource(f, COMFY_PREFIXES) for f in files]
    return _identify(sources, files, variant, hints, config)[2]


def _identify(sources: list[TensorSource], files: list[Path], variant: str, hints, config: dict
              ) -> tuple[str, dict | None, Variant]:
    """(layout, model config derived from the shapes (None for diffusers' layout, whose config.json is used),
    variant) of `sources`, refusing what is not a 1.5 T2V/I2V transformer.

    The variant: the name of the file or folder first (the authors' folders are named by their version
    string; their config.json cannot tell CFG-distilled), then config.json. diffusers' `task_type` says
    "i2v" for 480p T2V (its converter's slip, SPEC-hv15 §5.7), so it comes last."""
    keys = [k for s in sources for k in s.keys() if not k.endswith(FP8_MARKER)]
    name = files[0].name if len(files) == 1 and files[0].name in hints else files[0].parent.name
    layout = layout_of(keys)
    if layout == "diffusers":
        _check_diffusers_class(config, name)
        derived, meanflow, in_channels = None, bool(config.get("use_meanflow")), config.get("in_channels")
    else:
        _check_family(keys, name)
        derived = derive_config({k: s.shape(k) for s in sources for k in s.keys()})
        meanflow, in_channels = bool(derived["use_meanflow"]), derived["in_channels"]
    if in_channels == SR_INPUT_CHANNELS:
        candidates = [*(sr_variant_from_name(h) for h in hints), sr_variant_from_name(config.get("ideal_resolution") or "")]
        return layout, derived, choose_variant(variant, meanflow, in_channels, candidates)
    candidates = [*(variant_from_name(h, meanflow) for h in hints), variant_from_config(config)]
    if layout == "diffusers":
        target = {640: "480p", 960: "720p"}.get(config.get("target_size"))
        candidates.append(variant_from_config({"ideal_resolution": target, "ideal_task": config.get("task_type"),
                                               "use_meanflow": meanflow}))
    return layout, derived, choose_variant(variant, meanflow, in_channels, candidates)


def _load_files(files: list[Path], variant: str, dtype: str, device, hints, config: dict, source: str
                ) -> LoadedTransformer15:
    """Stream `files` (one file, or a folder's shards) into a model built on `meta`."""
    sources = [TensorSource(f, COMFY_PREFIXES) for f in files]
    name = files[0].name if len(files) == 1 and files[0].name in hints else files[0].parent.name
    layout, model_config, chosen = _identify(sources, files, variant, hints, config)
    if layout == "diffusers":
        model_config, convert = _diffusers_config(config, name), _same_name
    else:
        convert = _convert
    plan = plan_storage(dtype, _stored_dtype(sources))
    from diffusers import HunyuanVideo15Transformer3DModel

    model_config.update(target_size=BUCKET_BASES[chosen.resolution], task_type=chosen.task)
    with torch.device("meta"):
        model = HunyuanVideo15Transformer3DModel(**model_config)
    prefixes = quantizable_block_prefixes(model, BLOCK_CONTAINERS)
    missing = None
    for tensors in sources:
        try:
            missing = stream_into(model, tensors, convert, plan, prefixes, skip=lambda key: key.endswith(FP8_MARKER))
        except CheckpointError as e:
            raise CheckpointError(f"{tensors.path.name}: {e}") from e
    if missing:
        raise CheckpointError(f"{name}: does not match the HunyuanVideo 1.5 layout (missing {sorted(missing)[:3]})")
    model.to(device).eval()
    keep_timesteps_exact(model)
    return LoadedTransformer15(model=model, variant=chosen, source=source, weight_dtype=dtype,
                               notice=SSTA_NOTICE if chosen.sparse else "")


def keep_timesteps_exact(model) -> None:
    """Let the model take float32 timesteps, as the authors give theirs (under autocast): diffusers' 1.5 time
    embedding feeds its sinusoids to the linear layers in the timestep's dtype, so it needs the timestep in
    the model's dtype, and bf16 rounds e.g. 937.5 to 936. The sinusoids are cast instead, as autocast does."""

    def cast(module, args):
        return (args[0].to(module.linear_1.weight.dtype), *args[1:])

    for embedder in (model.time_embed.timestep_embedder, model.time_embed.timestep_embedder_r):
        if embedder is not None and not getattr(embedder, "_hyvs_cast", False):
            embedder.register_forward_pre_hook(cast)
            embedder._hyvs_cast = True


def _check_diffusers_class(config: dict, name: str) -> None:
    if config.get("_class_name") != "HunyuanVideo15Transformer3DModel":
        raise CheckpointError(f"{name}: holds diffusers weights of a {config.get('_class_name') or 'model without config.json'}, "
                              "expected HunyuanVideo15Transformer3DModel")


def _diffusers_config(config: dict, name: str) -> dict:
    _check_diffusers_class(config, name)
    from diffusers import HunyuanVideo15Transformer3DModel

    accepted = set(inspect.signature(HunyuanVideo15Transformer3DModel.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in accepted} | {"use_meanflow": bool(config.get("use_meanflow"))}


def _same_name(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value}


def _convert(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    try:
        return convert_tensor(key, value)
    except UnknownKeyError as e:
        raise CheckpointError(f"unknown tensor {e.args[0]!r} for a HunyuanVideo 1.5 transformer") from e


def _stored_dtype(sources: list[TensorSource]) -> torch.dtype:
    if any(s.is_fp8() for s in sources):
        return torch.float8_e4m3fn
    counts = Counter(dtype for s in sources for _, dtype in s.infos.values() if dtype.is_floating_point)
    return counts.most_common(1)[0][0]
