"""Custom ComfyUI socket types of the pack, prefixed so they meet no other pack's types; and the VIDEO value the
nodes hand out where ComfyUI's own VIDEO types are absent (outside ComfyUI, in tests and scripts)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from ..pipelines.video.video_io import read_video_frames, write_mp4

TRANSFORMER = "HYVS_TRANSFORMER"
VAE = "HYVS_VAE"
TEXT_ENCODERS = "HYVS_TEXT_ENCODERS"
TEXT_EMBEDS = "HYVS_TEXT_EMBEDS"
I2V_CONDITIONING = "HYVS_I2V_CONDITIONING"
CUSTOM_CONDITIONING = "HYVS_CUSTOM_CONDITIONING"

# HunyuanVideo 1.5: its own types, so a 1.5 model cannot be wired into a 13B node or the other way round.
HV15_TRANSFORMER = "HYVS_HV15_TRANSFORMER"
HV15_VAE = "HYVS_HV15_VAE"
HV15_TEXT_ENCODERS = "HYVS_HV15_TEXT_ENCODERS"
HV15_EMBEDS = "HYVS_HV15_EMBEDS"
HV15_VISION = "HYVS_HV15_VISION"
HV15_IMAGE_CONDITIONING = "HYVS_HV15_IMAGE_CONDITIONING"
HV15_UPSAMPLER = "HYVS_HV15_UPSAMPLER"


class LocalVideo:
    """Stand-in for ComfyUI's VIDEO outside ComfyUI: frames in memory or a file on disk."""

    def __init__(self, path: str | None = None, frames: torch.Tensor | None = None, fps: float = 24.0):
        self.path = path
        self.frames = frames
        self.fps = Fraction(fps).limit_denominator(1001)

    def save_to(self, path: str) -> None:
        if self.path is not None:
            Path(path).write_bytes(Path(self.path).read_bytes())
        else:
            write_mp4(self.frames, path, float(self.fps))

    def get_components(self):
        if self.frames is not None:
            return self.frames, self.fps
        return read_video_frames(self.path)
