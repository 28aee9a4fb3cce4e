"""Latents to frames with the HunyuanVideo VAE, tiled in space (diffusers' `tiled_decode`) and in time.

The temporal loop is ours, not diffusers' `_temporal_tiled_decode`: diffusers keeps every decoded
chunk on the GPU and concatenates them at the end, so its peak grows with the frame count (720p x
129 frames: about 0.7 GB of finished frames plus the concatenation). Here each chunk is blended with
the tail of the previous one and moved to CPU memory as soon as it is decoded, so the GPU holds one
chunk at a time whatever the clip length; the arithmetic (chunk bounds, one-frame causal overlap,
linear blend) is diffusers' own, and the output is the same to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ChunkCallback = Callable[[int, int], None]  # (chunks done, total); may raise to stop
DROP_FRAMES_KEY = "hyvs_drop_frames"  # in a LATENT dict: decoded frames that are not part of the video


@dataclass
class TilingOptions:
    """Tiles in output pixels/frames. Tiling trades a little speed for much less memory."""

    spatial: bool = True
    tile_size: int = 256
    tile_overlap: int = 64
    temporal: bool = True
    tile_frames: int = 16
    frame_overlap: int = 4

    def validate(self) -> None:
        if self.tile_size < 64 or self.tile_size % 8:
            raise ValueError(f"tile_size must be a multiple of 8 from 64 up, got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size or self.tile_overlap % 8:
            raise ValueError(f"tile_overlap must be a multiple of 8 below tile_size ({self.tile_size}), got {self.tile_overlap}")
        if self.tile_frames < 8 or self.tile_frames % 4:
            raise ValueError(f"tile_frames must be a multiple of 4 from 8 up, got {self.tile_frames}")
        if not 0 <= self.frame_overlap < self.tile_frames or self.frame_overlap % 4:
            raise ValueError(
                f"frame_overlap must be a multiple of 4 below tile_frames ({self.tile_frames}), got {self.frame_overlap}"
            )


def configure_tiling(vae, tiling: TilingOptions) -> None:
    tiling.validate()
    vae.use_framewise_decoding = tiling.temporal
    vae.use_framewise_encoding = tiling.temporal
    vae.tile_sample_min_num_frames = tiling.tile_frames
    vae.tile_sample_stride_num_frames = tiling.tile_frames - tiling.frame_overlap
    if tiling.spatial:
        stride = tiling.tile_size - tiling.tile_overlap
        vae.enable_tiling(tiling.tile_size, tiling.tile_size, tiling.tile_frames, stride, stride)
    else:
        vae.disable_tiling()


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, tiling: TilingOptions | None = None,
                   on_chunk: ChunkCallback | None = None) -> torch.Tensor:
    """VAE latents `[B, C, T, h, w]` (ComfyUI's LATENT convention) to frames `[B, F, H, W, 3]` in 0..1 (float32, CPU).

    `on_chunk(done, total)` hears each finished temporal chunk (and may raise to stop the decode)."""
    if latents.ndim != 5:
        raise ValueError(f"latent must be a video latent [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if latents.shape[1] != vae.config.latent_channels:
        raise ValueError(
            f"latent has {latents.shape[1]} channels but this VAE decodes {vae.config.latent_channels}: "
            "use the VAE that belongs to the model that made it"
        )
    tiling = tiling or TilingOptions()
    configure_tiling(vae, tiling)
    device = next(vae.parameters()).device
    latents = latents.to(dtype=vae.dtype)
    if tiling.temporal and latents.shape[2] > tiling.tile_frames // vae.temporal_compression_ratio:
        video = _decode_in_chunks(vae, latents, device, on_chunk)
    else:
        video = vae.decode(latents.to(device), return_dict=False)[0].cpu()
        if on_chunk is not None:
            on_chunk(1, 1)
    frames = (video.float() / 2 + 0.5).clamp(0, 1)
    return frames.permute(0, 2, 3, 4, 1)


def _decode_chunk(vae, chunk: torch.Tensor) -> torch.Tensor:
    """One temporal chunk, spatially tiled when it is larger than a tile (as diffusers decides)."""
    min_h = vae.tile_sample_min_height // vae.spatial_compression_ratio
    min_w = vae.tile_sample_min_width // vae.spatial_compression_ratio
    if vae.use_tiling and (chunk.shape[-1] > min_w or chunk.shape[-2] > min_h):
        return vae.tiled_decode(chunk, return_dict=False)[0]
    return vae.decoder(vae.post_quant_conv(chunk))


def _decode_in_chunks(vae, latents: torch.Tensor, device, on_chunk: ChunkCallback | None) -> torch.Tensor:
    """Chunk by chunk over time; each finished chunk leaves the GPU at once (see the module docstring)."""
    ratio = vae.temporal_compression_ratio
    chunk_latent = vae.tile_sample_min_num_frames // ratio
    stride_latent = vae.tile_sample_stride_num_frames // ratio
    stride = vae.tile_sample_stride_num_frames
    blend = vae.tile_sample_min_num_frames - stride
    num_frames = (latents.shape[2] - 1) * ratio + 1
    video, previous, done = None, None, 0
    starts = range(0, latents.shape[2], stride_latent)
    for index, start in enumerate(starts):
        decoded = _decode_chunk(vae, latents[:, :, start : start + chunk_latent + 1].to(device)).cpu()
        if start > 0:
            decoded = vae.blend_t(previous, decoded[:, :, 1:], blend)
        piece = decoded[:, :, : min(stride + (1 if start == 0 else 0), num_frames - done)]
        if video is None:  # the finished frames go straight into the result: no list, no concatenation
            video = torch.empty((*piece.shape[:2], num_frames, *piece.shape[3:]), dtype=piece.dtype)
        video[:, :, done : done + piece.shape[2]] = piece
        done += piece.shape[2]
        previous = decoded
        if on_chunk is not None:
            on_chunk(index + 1, len(starts))
    return video
