"""Media in and out: input images as PNG, result videos downloaded at once, verified, cached.

Providers keep results for an hour or less, so the video is fetched to disk as soon as the job
is done, and only a file that PyAV can open and decode is moved into the cache (atomically),
so a crash never leaves a half-written "cached" video behind. Media URLs are fetched without
any auth header: they are often on a CDN, and a key goes only to its provider's API host.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import httpx
import numpy as np
import torch
from PIL import Image

from . import errors as E
from .http import Pause, RetryPolicy, retrying


def image_array(image) -> np.ndarray:
    """The first image of a ComfyUI IMAGE ([B,H,W,C] or [H,W,C], float 0..1) as uint8 RGB [H,W,3]."""
    data = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if data.ndim == 4:
        data = data[0]
    if data.ndim != 3 or data.shape[-1] not in (1, 3, 4) or min(data.shape[:2]) < 1:
        raise E.InvalidParameter("image", f"expected an IMAGE of shape [B,H,W,C] with C in 1/3/4, got {tuple(data.shape)}")
    if not np.isfinite(data).all():
        raise E.InvalidParameter("image", "contains NaN or infinite values")
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    return (np.clip(data[..., :3], 0.0, 1.0) * 255.0).round().astype(np.uint8)


def image_digest(pixels: np.ndarray) -> str:
    """A stable hash of the pixels (for the job fingerprint; PNG bytes could vary between libraries)."""
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return "sha256:" + digest.hexdigest()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def verify_video(path: Path | str, *, provider: str = "", request_id: str | None = None) -> VideoInfo:
    """Open the file with PyAV and decode its first frame; InvalidVideo when that is not possible."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise ValueError("no decodable frame")
            fps = float(stream.average_rate or stream.guessed_rate or 24)
            return VideoInfo(int(stream.frames or 0), first.width, first.height, fps)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise E.InvalidVideo(
            f"{provider}: the downloaded file is not a playable video ({exc})"
            + (f" [request id {request_id}]" if request_id else ""),
            provider=provider, request_id=request_id,
        ) from None


async def download(
    client: httpx.AsyncClient, url: str, dest: Path, *, policy: RetryPolicy, pause: Pause, provider: str,
    request_id: str | None, expected_size: int | None = None, on_progress: Callable[[float], None] | None = None,
) -> str:
    """Fetch `url` (no auth) into `dest`, verify it is a video, and return its sha256.

    ResultExpired when the URL is gone (403/404/410); the temporary file is removed on any failure.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")

    async def fetch() -> httpx.Response:
        async with client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code == 200:
                total = int(response.headers.get("content-length") or 0) or expected_size or 0
                done = 0
                with open(tmp, "wb") as handle:
                    async for chunk in response.aiter_bytes(1 << 20):
                        handle.write(chunk)
                        done += len(chunk)
                        if on_progress and total:
                            on_progress(min(done / total, 1.0))
            else:
                await response.aread()
            return response

    try:
        response = await retrying(fetch, policy=policy, pause=pause, what="video download", provider=provider,
                                  request_id=request_id)
        suffix = f" [request id {request_id}]"
        if response.status_code in (401, 403, 404, 410):
            raise E.ResultExpired(f"{provider}: the video URL has expired (HTTP {response.status_code}){suffix}",
                                  provider=provider, request_id=request_id, status=response.status_code)
        if response.status_code != 200:
            raise E.ProviderUnavailable(f"{provider}: video download failed (HTTP {response.status_code}){suffix}",
                                        provider=provider, request_id=request_id, status=response.status_code)
        size = tmp.stat().st_size
        if expected_size and size != expected_size:
            raise E.InvalidVideo(f"{provider}: downloaded {size} bytes, the provider announced {expected_size}{suffix}",
                                 provider=provider, request_id=request_id)
        verify_video(tmp, provider=provider, request_id=request_id)
        sha = file_sha256(tmp)
        os.replace(tmp, dest)
        return sha
    finally:
        if tmp.exists():
            tmp.unlink()


def store_bytes(data: bytes, dest: Path, *, provider: str, request_id: str | None) -> str:
    """Write a video that came inline (Segmind's synchronous answer) into the cache after verifying it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        tmp.write_bytes(data)
        verify_video(tmp, provider=provider, request_id=request_id)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return hashlib.sha256(data).hexdigest()
