"""The released HunyuanVideo 1.5 variants and each one's sampling recipe.

All T2V/I2V variants share one architecture, so the weights tell only two things apart: the
step-distilled model (a `time_r_in` MeanFlow embedder) and the super-resolution DiT (98 input
channels). T2V vs I2V, 480p vs 720p, CFG-distilled and sparse come from the authors' `config.json`
(`ideal_resolution`, `ideal_task`, `use_meanflow`, `attn_mode`) or the file name, as ComfyUI's and the
authors' names spell them; the user can always override. Names are the authors' version strings
(`hyvideo/pipelines/hunyuan_video_pipeline.py`, SPEC-hv15 §1.1); recipes are their
`hyvideo/commons/__init__.py` PIPELINE_CONFIGS (SPEC-hv15 §5.1), 50 steps unless said there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SR_VARIANTS = ("720p_sr_distilled", "1080p_sr_distilled")  # 480p -> 720p and 720p -> 1080p
BASE_VARIANTS = (
    "480p_t2v", "480p_i2v", "480p_t2v_distilled", "480p_i2v_distilled", "480p_i2v_step_distilled",
    "720p_t2v", "720p_i2v", "720p_t2v_distilled", "720p_i2v_distilled", "720p_i2v_distilled_sparse",
)
VARIANTS = (*BASE_VARIANTS, *SR_VARIANTS)
SR_BASE_RESOLUTION = {"720p": "480p", "1080p": "720p"}  # the authors' SR_PIPELINE_CONFIGS base_resolution
STEP_DISTILLED_STEPS = (8, 12)  # the authors' recommendation; their code defaults to 12
DEFAULT_FRAMES = 121
DEFAULT_FPS = 24


@dataclass(frozen=True)
class Recipe:
    cfg: float
    flow_shift: float
    steps: int


@dataclass(frozen=True)
class Variant:
    name: str
    # The SR DiT's MeanFlow embedder (`time_r_in`), read from its weights: unlike the base step-distilled
    # model's, the SR variants' names do not say (the authors read `use_meanflow` from config.json).
    sr_meanflow: bool = False

    @property
    def resolution(self) -> str:
        return self.name.split("_")[0]

    @property
    def task(self) -> str:
        return self.name.split("_")[1]

    @property
    def is_i2v(self) -> bool:
        return self.task == "i2v"

    @property
    def is_sr(self) -> bool:
        return self.task == "sr"

    @property
    def meanflow(self) -> bool:
        return self.name.endswith("step_distilled") or (self.is_sr and self.sr_meanflow)

    @property
    def cfg_distilled(self) -> bool:
        return "distilled" in self.name and not self.meanflow and not self.is_sr

    @property
    def sparse(self) -> bool:
        return self.name.endswith("_sparse")

    @property
    def recipe(self) -> Recipe:
        if self.is_sr:  # SR_PIPELINE_CONFIGS: CFG 1, shift 2, 6 steps to 720p, 8 to 1080p
            return Recipe(cfg=1.0, flow_shift=2.0, steps=6 if self.resolution == "720p" else 8)
        shift = {"480p": 5.0, "720p": 9.0 if self.task == "t2v" else 7.0}[self.resolution]
        if self.meanflow:
            return Recipe(cfg=1.0, flow_shift=7.0, steps=12)
        return Recipe(cfg=1.0 if self.cfg_distilled else 6.0, flow_shift=shift, steps=50)

    @property
    def title(self) -> str:
        if self.is_sr:
            return f"HunyuanVideo 1.5 {SR_BASE_RESOLUTION[self.resolution]} -> {self.resolution} super-resolution"
        kind = {"t2v": "text-to-video", "i2v": "image-to-video"}[self.task]
        extra = " step-distilled" if self.meanflow else " CFG-distilled" if self.cfg_distilled else ""
        return f"HunyuanVideo 1.5 {self.resolution} {kind}{extra}{' (sparse)' if self.sparse else ''}"


def parse_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"variant must be one of auto, {', '.join(VARIANTS)}; got {name!r}")
    return Variant(name)


def variant_from_config(config: dict) -> str | None:
    """The authors' version string from their transformer `config.json`, when it says enough."""
    resolution, task = config.get("ideal_resolution"), config.get("ideal_task")
    if resolution not in ("480p", "720p") or task not in ("t2v", "i2v"):
        return None
    return _compose(resolution, task, bool(config.get("use_meanflow")), False,
                    config.get("attn_mode") == "flex-block-attn")


def variant_from_name(text: str, meanflow: bool) -> str | None:
    """The variant a file or folder name spells (ComfyUI: `hunyuanvideo1.5_480p_i2v_cfg_distilled_fp8_scaled`,
    the authors: `720p_i2v_distilled_sparse`); None when the name lacks the resolution or the task."""
    text = text.lower()
    resolution = re.search(r"(?<!\d)(480|720)p", text)
    task = re.search(r"(?<![a-z])(t2v|i2v)(?![a-z])", text.replace("_", " ").replace("-", " "))
    if meanflow and resolution is None and task is None:
        return "480p_i2v_step_distilled"  # the only step-distilled release
    if resolution is None or task is None:
        return None
    distilled = "distill" in text
    return _compose(resolution.group(1) + "p", task.group(1), meanflow or "step_distill" in text, distilled,
                    "sparse" in text)


def sr_variant_from_name(text: str) -> str | None:
    """The SR variant a name spells (ComfyUI: `hunyuanvideo1.5_1080p_sr_distilled_fp16`, the authors'
    folder `720p_sr_distilled`), or the SR variant of an authors' config.json `ideal_resolution`."""
    found = re.search(r"(?<!\d)(720|1080)p", text.lower())
    return f"{found.group(1)}p_sr_distilled" if found else None


def _compose(resolution: str, task: str, meanflow: bool, distilled: bool, sparse: bool) -> str:
    name = f"{resolution}_{task}"
    if meanflow:
        name += "_step_distilled"
    elif distilled or sparse:
        name += "_distilled"
    if sparse:
        name += "_sparse"
    return name
