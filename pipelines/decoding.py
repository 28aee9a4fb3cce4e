"""Latents to frames with the HunyuanVideo VAE, with diffusers' spatial and temporal tiling."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
def decode_latents(vae, latents: torch.Tensor, tiling: TilingOptions | None = None) -> torch.Tensor:
    """VAE latents `[B, C, T, h, w]` (ComfyUI's LATENT convention) to frames `[B, F, H, W, 3]` in 0..1 (float32, CPU)."""
    if latents.ndim != 5:
        raise ValueError(f"latent must be a video latent [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if latents.shape[1] != vae.config.latent_channels:
        raise ValueError(
            f"latent has {latents.shape[1]} channels but this VAE decodes {vae.config.latent_channels}: "
            "use the VAE that belongs to the model that made it"
        )
    configure_tiling(vae, tiling or TilingOptions())
    device = next(vae.parameters()).device
    video = vae.decode(latents.to(device=device, dtype=vae.dtype), return_dict=False)[0]
    frames = (video.float() / 2 + 0.5).clamp(0, 1)
    return frames.permute(0, 2, 3, 4, 1).cpu()
