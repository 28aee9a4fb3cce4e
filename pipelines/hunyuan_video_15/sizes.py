"""Output sizes: the authors' buckets and their choice rule, and the image fitted to a bucket.

HunyuanVideo 1.5 picks the bucket whose height/width ratio (rounded to 5 decimals) is nearest to the
wanted one, the first on ties (`hyvideo/utils/data_utils.py` get_closest_ratio: a plain argmin, unlike
the 13B I2V's one-sided rule), from every 16-px grid of about (base/16)^2 patches with an aspect of at
most 4: base 640 for 480p and 960 for 720p. The rounding makes 9:16 at 720p 1264x720, not 1280x720.
"""

from __future__ import annotations

import numpy as np
import torch

BUCKET_BASES = {"480p": 640, "720p": 960, "1080p": 1440}
BASE_RESOLUTIONS = ("480p", "720p")  # what the T2V/I2V models sample; 1080p is the super-resolution stage's
BUCKET_STEP = 16
BUCKET_MAX_RATIO = 4.0
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21")


def bucket_sizes(resolution: str) -> list[tuple[int, int]]:
    """(height, width) of every bucket of `resolution`, in the authors' order."""
    if resolution not in BUCKET_BASES:
        raise ValueError(f"resolution must be one of {', '.join(BUCKET_BASES)}, got {resolution!r}")
    patches = round((BUCKET_BASES[resolution] / BUCKET_STEP) ** 2)
    sizes, first, second = [], patches, 1
    while first > 0:
        if max(first, second) / min(first, second) <= BUCKET_MAX_RATIO:
            sizes.append((first * BUCKET_STEP, second * BUCKET_STEP))
        if (second + 1) * first <= patches:
            second += 1
        else:
            first -= 1
    return sizes


def nearest_bucket(height: float, width: float, resolution: str) -> tuple[int, int]:
    """(height, width) of the bucket the authors choose for a picture or an aspect ratio of this shape."""
    buckets = bucket_sizes(resolution)
    ratios = np.array([round(h / w, 5) for h, w in buckets])
    return buckets[int(np.abs(ratios - float(height) / float(width)).argmin())]


def size_for_aspect(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """(width, height) for an aspect ratio "W:H", as the authors' T2V does."""
    parts = aspect_ratio.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"aspect_ratio must be two positive whole numbers as 'W:H' (e.g. 16:9), got {aspect_ratio!r}")
    height, width = nearest_bucket(int(parts[1]), int(parts[0]), resolution)
    return width, height


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE `[H, W, 3]` in 0..1 as the 8-bit RGB picture the authors start from."""
    return (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE `[1, H, W, 3]` scaled (LANCZOS) to cover `width` x `height` and centre-cropped to it, as the
    authors' I2V transform (`get_image_condition_latents`: sizes rounded, torchvision's crop offsets)."""
    from PIL import Image

    _, h, w, _ = image.shape
    if (h, w) == (height, width):
        return image
    scale = max(width / w, height / h)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    resized = Image.fromarray(to_uint8(image[0])).resize((new_w, new_h), Image.LANCZOS)
    pixels = torch.tensor(np.asarray(resized), dtype=torch.float32) / 255
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    return pixels[top : top + height, left : left + width].unsqueeze(0)
