"""Media in and out: input images as PNG, result videos streamed to disk at once, verified, cached.

Providers keep results for an hour or less, so the video is fetched as soon as the job is done.
Every video body (a download, or a provider answer that is the video itself) streams into its own
temporary `*.part` file under a size cap; only a file that PyAV decodes to its last frame is moved
into the cache (atomically), so neither a crash nor a truncated transfer leaves a broken "cached"
video behind. Media URLs are fetched without any auth header (they are often on a CDN; a key goes
only to its provider's API host) and only from public addresses (`netguard`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import httpx
import numpy as np
import torch
from PIL import Image

from . import errors as E
from .http import Pause, RetryPolicy, log, retrying

MAX_IMAGE_SIDE = 2048  # longest side of an uploaded image: above HunyuanVideo's 1280 px, and a data URI stays small
STALE_PART_S = 600.0  # a .part file untouched this long belongs to a run that died (a live one writes at least
                      # once per read timeout)
REFETCH_ATTEMPTS = 3  # downloads of a result that arrives truncated before giving up


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


@dataclass
class Upload:
    """An input image as it is sent: the data URI, the digest of the pixels sent, and what was sent."""

    uri: str
    digest: str
    note: str


def upload_image(image, *, max_side: int = MAX_IMAGE_SIDE) -> Upload:
    """The image as a PNG data URI, downscaled (aspect kept) when its longest side exceeds `max_side`."""
    pixels = image_array(image)
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    resized = ""
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.LANCZOS))
        resized = f", downscaled from {width}x{height} (longest side at most {max_side} px)"
    data = png_bytes(pixels)
    note = f"image sent as {pixels.shape[1]}x{pixels.shape[0]} PNG, {len(data) / 1024:.0f} KB{resized}"
    return Upload("data:image/png;base64," + base64.b64encode(data).decode("ascii"), image_digest(pixels), note)


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
    """Decode the whole file with PyAV; InvalidVideo unless every frame the container announces decodes.

    A truncated MP4 whose index sits at the front ("faststart") opens and shows its first frames
    fine; only decoding to the end, and comparing the frames with the container's frame count (or
    its duration), shows that its tail is missing.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 24)
            expected = int(stream.frames or 0)
            if not expected and stream.duration and stream.time_base:
                expected = round(float(stream.duration * stream.time_base) * fps)
            decoded, size = 0, (0, 0)
            try:
                for frame in container.decode(stream):
                    decoded, size = decoded + 1, (frame.width, frame.height)
            except av.error.FFmpegError as exc:
                raise ValueError(f"decoding fails after {decoded} of {expected or '?'} frames ({exc}): the file is "
                                 "truncated or damaged") from None
            if decoded == 0:
                raise ValueError("no decodable frame")
            if expected and decoded < expected - 1:
                raise ValueError(f"only {decoded} of its {expected} frames decode: the file is truncated")
            return VideoInfo(decoded, size[0], size[1], fps)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise E.InvalidVideo(
            f"{provider}: the downloaded file is not a whole, playable video ({exc})"
            + (f" [request id {request_id}]" if request_id else ""),
            provider=provider, request_id=request_id,
        ) from None


@dataclass
class Sink:
    """Where and how a video body is written: the folder, the size cap, and a progress callback."""

    folder: Path
    max_bytes: int
    on_progress: Callable[[int, int | None], None] = lambda done, total: None


async def spool(response: httpx.Response, sink: Sink, name: str, *, provider: str, request_id: str | None) -> Path:
    """Stream an open response's body into a new, uniquely named `<name>.*.part` file in the sink's folder.

    Refuses a body over the cap before reading it (from Content-Length) or as soon as it passes
    the cap; the partial file is removed on any failure.
    """
    suffix = f" [request id {request_id}]" if request_id else ""
    length = response.headers.get("content-length", "").strip()
    announced = int(length) if length.isdigit() and int(length) > 0 else None  # a garbage header is no size
    too_large = E.DownloadTooLarge(
        f"{provider}: the video is larger than the download cap of {sink.max_bytes / 2**20:.0f} MB "
        f"(HYVS_API_MAX_DOWNLOAD_MB); raise the cap and queue the same job again to fetch it{suffix}",
        provider=provider, request_id=request_id)
    if announced and announced > sink.max_bytes:
        raise too_large
    sink.folder.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=sink.folder, prefix=f"{name}.", suffix=".part")
    path = Path(tmp)
    try:
        done = 0
        with os.fdopen(handle, "wb") as out:
            async for chunk in response.aiter_bytes():  # as it arrives (a fixed size would wait to fill it)
                done += len(chunk)
                if done > sink.max_bytes:
                    raise too_large
                out.write(chunk)
                sink.on_progress(done, announced)
        return path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def adopt(tmp: Path, dest: Path, *, provider: str, request_id: str | None) -> str:
    """Verify a spooled video and move it into the cache atomically; returns its sha256. Removes it if broken."""
    try:
        verify_video(tmp, provider=provider, request_id=request_id)
        sha = file_sha256(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return sha
    finally:
        tmp.unlink(missing_ok=True)


def clean_stale_parts(folder: Path, older_than_s: float = STALE_PART_S) -> None:
    """Remove `*.part` files a killed run left behind (a live download keeps its file fresh)."""
    limit = time.time() - older_than_s
    for path in Path(folder).glob("*.part"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except OSError:  # gone already (another run cleaned it), or not ours to remove
            continue


async def download(
    client: httpx.AsyncClient, url: str, dest: Path, sink: Sink, *, policy: RetryPolicy, pause: Pause, provider: str,
    request_id: str | None, expected_size: int | None = None,
) -> str:
    """Fetch `url` (no auth) through `sink`, verify it decodes to the end, move it to `dest`; its sha256.

    ResultExpired when the URL is gone (401/403/404/410). A truncated or broken file is fetched
    again (REFETCH_ATTEMPTS in all) while the URL still serves; then InvalidVideo with the request id.
    """
    suffix = f" [request id {request_id}]"
    for attempt in range(1, REFETCH_ATTEMPTS + 1):
        parts: list[Path] = []

        async def fetch() -> httpx.Response:
            async with client.stream("GET", url) as response:
                if response.status_code == 200:
                    parts.append(await spool(response, sink, dest.name, provider=provider, request_id=request_id))
                return response

        try:
            response = await retrying(fetch, policy=policy, pause=pause, what="video download", provider=provider,
                                      request_id=request_id)
            if response.status_code in (401, 403, 404, 410):
                raise E.ResultExpired(f"{provider}: the video URL has expired (HTTP {response.status_code}){suffix}",
                                      provider=provider, request_id=request_id, status=response.status_code)
            if response.status_code != 200:
                raise E.ProviderUnavailable(f"{provider}: video download failed (HTTP {response.status_code}){suffix}",
                                            provider=provider, request_id=request_id, status=response.status_code)
            size = parts[-1].stat().st_size
            if expected_size and size != expected_size:
                raise E.InvalidVideo(f"{provider}: downloaded {size} bytes, the provider announced {expected_size}"
                                     f"{suffix}", provider=provider, request_id=request_id)
            return adopt(parts[-1], dest, provider=provider, request_id=request_id)
        except E.InvalidVideo as exc:
            if attempt == REFETCH_ATTEMPTS:
                raise E.InvalidVideo(f"{exc} (fetched {attempt} times; the provider serves a broken file)",
                                     provider=provider, request_id=request_id) from None
            log.info("%s: %s; fetching it again", provider, exc)
        finally:
            for part in parts:
                part.unlink(missing_ok=True)
    raise AssertionError("unreachable")
