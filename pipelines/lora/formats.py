"""Reading a LoRA file of any circulating convention into per-module pieces, and putting them on a family's modules.

Four key conventions circulate for HunyuanVideo (SPEC-lora §1): the authors' module names with `lora_A`/`lora_B`
(F1, prefixed `transformer.` or `diffusion_model.`), kohya/musubi `lora_unet_<name with underscores>` with
`lora_down`/`lora_up`/`alpha` (F2), ComfyUI's module names with `diff`/`diff_b` deltas (F3) and diffusers' names
(F4). The convention is read key by key (prefix and suffix), so a file mixing them still loads. Each module of the
file becomes one `LowRank` (scale = alpha / rank once; no alpha means the file's B already holds it); LoHa and LoKr
become their dense delta, the variants that need more (Tucker, DoRA) are refused by name. A family then names
where each module lands (`ModuleNames`) and splits fused layers with its own checkpoint converter, so the rows of
B split exactly as the weights do while A is shared (SPEC-lora §1c, §6.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weights.checkpoints import load_state_dict
from .lowrank import LoraWeights, LowRank

PREFIXES = ("transformer.", "diffusion_model.", "lora_unet_")
_PARTS = {
    ".lora_A.weight": "down", ".lora_down.weight": "down", ".lora_B.weight": "up", ".lora_up.weight": "up",
    ".alpha": "alpha", ".diff": "diff", ".diff_b": "diff_b",
    **{f".{p}": p for p in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w1_a", "lokr_w1_b",
                             "lokr_w2", "lokr_w2_a", "lokr_w2_b")},
}
# Variants whose delta needs more than a product of small matrices (or the base weight): refused, not guessed.
_REFUSED = {".hada_t1": "LoHa with Tucker factors", ".hada_t2": "LoHa with Tucker factors",
            ".lokr_t2": "LoKr with Tucker factors", ".lora_mid.weight": "LoCon with Tucker factors",
            ".dora_scale": "DoRA (its delta depends on the base weight)"}
_IGNORED = ("lokr_factor",)  # musubi's network-level buffer, not a module
# ComfyUI's module names where they differ from the authors' (its `process_unet_state_dict` for HunyuanVideo, and
# musubi's HV1.5 -> ComfyUI converter), in kohya's underscore spelling: most specific first.
COMFY_RENAMES = (
    ("t_embedder_in_layer", "t_embedder_mlp_0"), ("t_embedder_out_layer", "t_embedder_mlp_2"),
    ("c_embedder_in_layer", "c_embedder_linear_1"), ("c_embedder_out_layer", "c_embedder_linear_2"),
    ("_in_in_layer", "_in_mlp_0"), ("_in_out_layer", "_in_mlp_2"),
    ("_mod_lin", "_mod_linear"), ("modulation_lin", "modulation_linear"), ("mlp_0", "mlp_fc1"), ("mlp_2", "mlp_fc2"),
)
_BLOCK = re.compile(r"^(.*?blocks)_(\d+)_(.+)$")
Convert = Callable[[str, torch.Tensor], dict[str, torch.Tensor]]


class LoraFormatError(ValueError):
    """A LoRA file that cannot be read as one (broken pairs, or a variant this pack does not apply)."""


@dataclass
class FileModule:
    stem: str  # the file's module name, prefix dropped (e.g. `double_blocks_0_img_attn_qkv`)
    keys: list[str]  # the file keys it was read from, for messages
    low: LowRank


@dataclass
class LoraFile:
    name: str
    modules: list[FileModule]
    unmatched: list[str] = field(default_factory=list)


def read_modules(path: str | Path) -> LoraFile:
    """Every module of the file as a `LowRank` in the file's own naming; keys of no known kind listed unmatched."""
    path = Path(path)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    keys: dict[str, list[str]] = {}
    unmatched = []
    for key, value in load_state_dict(path).items():
        refused = next((kind for suffix, kind in _REFUSED.items() if key.endswith(suffix)), None)
        if refused:
            raise LoraFormatError(f"{path.name}: {key} is {refused}, which this pack does not apply")
        suffix = next((s for s in _PARTS if key.endswith(s)), None)
        if suffix is None:
            if key not in _IGNORED:
                unmatched.append(key)
            continue
        stem = _strip_prefix(key[: -len(suffix)])
        groups.setdefault(stem, {})[_PARTS[suffix]] = value
        keys.setdefault(stem, []).append(key)
    modules = []
    for stem, parts in groups.items():
        low = _low_rank(parts, f"{path.name}: {stem}")
        if low is None:
            unmatched += keys[stem]
        else:
            modules.append(FileModule(stem, keys[stem], low))
    return LoraFile(path.name, modules, unmatched)


def _strip_prefix(stem: str) -> str:
    for prefix in PREFIXES:
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def _low_rank(parts: dict[str, torch.Tensor], where: str) -> LowRank | None:
    """One module's parts as a `LowRank` (2-D: a convolution's down/up are flattened); None if it holds no delta."""
    parts = {k: (v.to(torch.bfloat16) if v.dtype.itemsize == 1 and v.is_floating_point() else v) for k, v in parts.items()}
    alpha = float(parts["alpha"].float().item()) if "alpha" in parts else None
    down, up, scale = parts.get("down"), parts.get("up"), 1.0
    if (down is None) != (up is None):
        return None  # half a pair: reported unmatched
    if down is not None:
        down, up = down.flatten(1), up.flatten(1)
        if up.shape[1] != down.shape[0]:
            raise LoraFormatError(f"{where}: up {tuple(up.shape)} and down {tuple(down.shape)} have different ranks")
        if alpha:  # musubi: alpha None or 0 means alpha = rank, i.e. scale 1 (networks/lora.py)
            scale = alpha / down.shape[0]
    weight = _lycoris_delta(parts, alpha, where)
    if "diff" in parts:
        diff = parts["diff"].flatten(1) if parts["diff"].ndim > 2 else parts["diff"]
        weight = diff if weight is None else weight + diff
    if down is None and weight is None and "diff_b" not in parts:
        return None
    return LowRank(down, up, scale, parts.get("diff_b"), weight)


def _lycoris_delta(parts: dict[str, torch.Tensor], alpha: float | None, where: str) -> torch.Tensor | None:
    """LoHa / LoKr as their dense delta, scaled as ComfyUI's weight adapters do (alpha over the last factor's rank)."""
    f = {k: v.float() for k, v in parts.items() if k.startswith(("hada_", "lokr_"))}
    if not f:
        return None
    dtype = next(v.dtype for k, v in parts.items() if k.startswith(("hada_", "lokr_")))
    try:
        if "hada_w1_a" in f:
            rank = f["hada_w1_b"].shape[0]
            delta = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"])
        else:
            w1 = f["lokr_w1"] if "lokr_w1" in f else f["lokr_w1_a"] @ f["lokr_w1_b"]
            w2 = f["lokr_w2"] if "lokr_w2" in f else f["lokr_w2_a"] @ f["lokr_w2_b"]
            rank = f["lokr_w2_b"].shape[0] if "lokr_w2" not in f else f["lokr_w1_b"].shape[0] if "lokr_w1" not in f else None
            if w1.ndim != 2 or w2.ndim != 2:
                raise LoraFormatError(f"{where}: a convolution LoKr, which this pack does not apply")
            delta = torch.kron(w1, w2)
    except KeyError as e:
        raise LoraFormatError(f"{where}: incomplete LoHa/LoKr (no {e.args[0]})") from None
    return (delta * (alpha / rank if alpha and rank else 1.0)).to(dtype)


class ModuleNames:
    """One family's module names, found again from any spelling of a file: the authors' dotted names (F1), kohya's
    underscores (F2), ComfyUI's module names (F3), or diffusers' own (F4, recognised by their top-level module)."""

    def __init__(self, blocks: dict[str, Iterable[str]], top: Iterable[str], diffusers_roots: Iterable[str]):
        self._blocks = {g.replace(".", "_"): (g, {n.replace(".", "_"): n for n in names}) for g, names in blocks.items()}
        self._top = {n.replace(".", "_"): n for n in top}
        self._diffusers_roots = set(diffusers_roots)

    def find(self, stem: str) -> tuple[str, bool] | None:
        """(module name, whether it is the authors' name) for a file's stem, or None when it names nothing."""
        if stem.split(".", 1)[0] in self._diffusers_roots:
            return stem, False
        flat = stem.replace(".", "_")
        spellings = [flat] + [flat[: -len(c)] + a for c, a in COMFY_RENAMES if flat.endswith(c)][:1]
        for spelling in spellings:
            block = _BLOCK.match(spelling)
            if block and block[1] in self._blocks:
                group, inner = self._blocks[block[1]]
                if block[3] in inner:
                    return f"{group}.{block[2]}.{inner[block[3]]}", True
            elif spelling in self._top:
                return self._top[spelling], True
        return None


def unchanged(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """The converter of diffusers-named files: nothing to rename or split."""
    return {key: value}


def to_targets(file: LoraFile, family: str, resolve: Callable[[str], tuple[str, Convert] | None]) -> LoraWeights:
    """The file's modules on the family's modules: `resolve(stem)` gives the module name and the family's
    checkpoint converter for it (None: the stem names nothing there, and its keys are reported unmatched)."""
    targets: dict[str, LowRank] = {}
    unmatched = list(file.unmatched)
    for module in file.modules:
        found = resolve(module.stem)
        if found is None:
            unmatched += module.keys
            continue
        for target, low in split_module(module.low, *found).items():
            if target in targets:
                raise LoraFormatError(f"{file.name}: two modules of the file write {target} (e.g. {module.keys[0]})")
            targets[target] = low
    return LoraWeights(file.name, family, targets, unmatched)


def split_module(low: LowRank, name: str, convert: Convert) -> dict[str, LowRank]:
    """One module onto its targets. The family's converter splits B's rows, the dense delta's rows and the bias
    exactly as it splits the weights; A is shared. Rank columns a part never uses (ComfyUI's block-diagonal fused
    qkv gives each of q, k, v a third of the rank) are dropped, so the part costs only its own rank."""
    ups = convert(f"{name}.weight", low.up) if low.up is not None else {}
    dense = convert(f"{name}.weight", low.weight) if low.weight is not None else {}
    biases = convert(f"{name}.bias", low.bias) if low.bias is not None else {}
    targets = dict.fromkeys(k.rsplit(".", 1)[0] for k in (*ups, *dense, *biases))
    out = {}
    for target in targets:
        up = ups.get(f"{target}.weight")
        down = low.down if up is not None else None
        if up is not None and len(targets) > 1:
            used = up.abs().amax(dim=0) > 0
            if not bool(used.all()):
                down, up = down[used], up[:, used]
        out[target] = LowRank(down, up, low.scale, biases.get(f"{target}.bias"), dense.get(f"{target}.weight"))
    return out
