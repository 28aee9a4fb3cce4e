"""MP4 in and out through PyAV (FFmpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch


def write_mp4(frames: torch.Tensor, path: str | Path, fps: float, crf: int = 19) -> Path:
    """Frames `[F, H, W, 3]` in 0..1 to an H.264 MP4 (yuv420p, so every player opens it)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {tuple(frames.shape)}")
    if fps <= 0:
        raise ValueError(f"fps must be above 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    height, width = pixels.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width = width + width % 2  # yuv420p needs even sizes
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in pixels:
            if stream.width != width or stream.height != height:
                image = np.pad(image, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_video_frames(path: str | Path) -> tuple[torch.Tensor, Fraction]:
    """All frames of a video file as `[F, H, W, 3]` float32 in 0..1, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or Fraction(24)
        images = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not images:
        raise ValueError(f"{Path(path).name}: holds no video frames")
    return torch.from_numpy(np.stack(images)).float() / 255.0, Fraction(rate)
