"""HunyuanVideo 1.5 latents to frames: spatial tiles as the authors and diffusers, temporal chunks exactly.

Why not the 13B decoder's temporal tiles: this decoder's mid-block attention is causal over *all* earlier
frames (every token of latent frame t attends to every token of frames 0..t), so decoding chunks on their
own changes every frame after the first chunk, by far more than fp16 noise; that is why the authors tile
only spatially. Measured on a random tiny VAE in fp32, 9 latent frames, against the whole decode (output
range about -1..1): independent chunks with diffusers' one-frame overlap differ by up to 1.7 (mean 0.14 to
0.23); chunks of one latent frame with 6 frames of context still by 0.46 (mean 0.017); fp16 against fp32
is 0.009 (mean 0.001).

Yet the decoder is strictly causal in time (causal convolutions, per-position RMS norms, frame-causal
attention, upsampling that treats only frame 0 apart), so it can be run as a stream: each chunk of latent
frames goes through the decoder's own modules with a cache (the last two input frames of every causal
convolution, the attention's keys and values of all earlier frames) and gives exactly the frames the whole
decode gives (measured: bit-equal in fp32 on the CPU, chunks of 1 to 4 latent frames). Spatial tiles are
diffusers' `tiled_decode` (same tiles, same blend); each tile is streamed through time on its own.

Memory, per tile: the device holds one chunk's activations (set by `tile_frames` and `tile_size`, not by the
clip), the convolution caches (two frames per convolution) and the attention's keys and values, which grow
with the clip by 2 x 1024 channels x (tile_size/16)^2 values per latent frame: 1 MB per latent frame in fp16
for 256 px tiles. Finished chunks go to CPU memory at once; the CPU holds the output (float32), the tile being
decoded and one row of tile edges for the blend. Measured (tiny VAE, fp32, live tensor bytes, 128 px, 9 to
129 frames): the decoder's working set stays at 27.6-28.8 MB untiled and 7.2-7.7 MB with 64 px tiles, while
one whole-clip pass grows from 37 to 340 MB (diffusers' decode: 27 to 387 MB). Without temporal chunks a
tile's whole clip is one chunk: activations grow linearly with the frames (diffusers' attention mask too,
quadratically; here each frame's queries attend without a mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

TileCallback = Callable[[int, int], None]  # (pieces done, total) for each tile and chunk; may raise to stop


@dataclass
class TilingOptions15:
    """Tiles in output pixels and frames. The authors' VAE tiles are 256 px with a 32 px overlap (128/32 on
    GPUs up to 21 GB); diffusers' default overlap is 64. Temporal chunks change no frame, they only cap memory."""

    spatial: bool = True
    tile_size: int = 256
    tile_overlap: int = 32
    temporal: bool = True
    tile_frames: int = 16

    def validate(self) -> None:
        if self.tile_size < 64 or self.tile_size % 16:
            raise ValueError(f"tile_size must be a multiple of 16 from 64 up, got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size or self.tile_overlap % 16:
            raise ValueError(
                f"tile_overlap must be a multiple of 16 below tile_size ({self.tile_size}), got {self.tile_overlap}")
        if self.tile_frames < 4 or self.tile_frames % 4:
            raise ValueError(f"tile_frames must be a multiple of 4 from 4 up, got {self.tile_frames}")


# ----------------------------------------------------------------------------- the decoder as a stream

class _Stream:
    """What one tile's decoder carries from chunk to chunk."""

    def __init__(self):
        self.tails = {}  # causal convolution -> its last input frames, padded in space
        self.keys = self.values = None  # mid-block attention, all frames so far
        self.first = True  # the chunk holding frame 0 (upsampled on its own)


def _conv(conv, x, stream: _Stream):
    """HunyuanVideo15CausalConv3d with the previous chunk's last frames in place of its replicate padding in
    time. The padded input is built in one buffer (as F.pad's one copy) and only the new tail is kept."""
    w, _, h, _, before, _ = conv.time_causal_padding
    height, width = x.shape[-2:]
    padded = x.new_empty(*x.shape[:2], before + x.shape[2], height + 2 * h, width + 2 * w)
    core = padded[:, :, before:]
    core[..., h:h + height, w:w + width] = x
    core[..., h:h + height, :w] = x[..., :1]  # replicate padding in space, as F.pad(mode="replicate")
    core[..., h:h + height, w + width:] = x[..., -1:]
    core[..., :h, :] = core[..., h:h + 1, :]
    core[..., h + height:, :] = core[..., h + height - 1:h + height, :]
    tail = stream.tails.get(conv)
    padded[:, :, :before] = core[:, :, :1] if tail is None else tail
    stream.tails[conv] = padded[:, :, padded.shape[2] - before:].clone()
    return conv.conv(padded)


def _resnet(block, x, stream: _Stream):
    h = _conv(block.conv1, block.nonlinearity(block.norm1(x)), stream)
    h = _conv(block.conv2, block.nonlinearity(block.norm2(h)), stream)
    return h + (x if block.conv_shortcut is None else block.conv_shortcut(x))


def _attention(block, x, stream: _Stream):
    """HunyuanVideo15AttnBlock: each frame's tokens attend to every token up to their frame, earlier chunks
    included (one SDPA per frame, so no mask is built)."""
    batch, channels, frames, height, width = x.shape
    normed = block.norm(x)
    q, k, v = (proj(normed).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
               for proj in (block.to_q, block.to_k, block.to_v))
    stream.keys = k if stream.keys is None else torch.cat([stream.keys, k], dim=2)
    stream.values = v if stream.values is None else torch.cat([stream.values, v], dim=2)
    tokens = height * width
    seen = stream.keys.shape[2] - frames * tokens
    out = torch.cat([F.scaled_dot_product_attention(q[:, :, i * tokens:(i + 1) * tokens], stream.keys[:, :, :end],
                                                    stream.values[:, :, :end])
                     for i, end in enumerate(range(seen + tokens, seen + (frames + 1) * tokens, tokens))], dim=2)
    out = out.squeeze(1).transpose(1, 2).reshape(batch, channels, frames, height, width)
    return block.proj_out(out) + x


def _upsample(block, x, stream: _Stream):
    """HunyuanVideo15Upsample; frame 0 is upsampled in space only, and only the first chunk holds it."""
    rearrange = block._dcae_upsample_rearrange
    h = _conv(block.conv, x, stream)
    if not block.add_temporal_upsample:
        return rearrange(h, 1, 2, 2) + rearrange(x.repeat_interleave(block.repeats, dim=1), 1, 2, 2)
    hs, shortcuts = [], []
    if stream.first:
        first = rearrange(h[:, :, :1], 1, 2, 2)
        hs.append(first[:, : first.shape[1] // 2])
        shortcuts.append(rearrange(x[:, :, :1], 1, 2, 2).repeat_interleave(block.repeats // 2, dim=1))
        h, x = h[:, :, 1:], x[:, :, 1:]
    hs.append(rearrange(h, 2, 2, 2))
    shortcuts.append(rearrange(x, 2, 2, 2).repeat_interleave(block.repeats, dim=1))
    return torch.cat(hs, dim=2) + torch.cat(shortcuts, dim=2)


def _decode_chunk(decoder, z, stream: _Stream):
    """HunyuanVideo15Decoder3D.forward for the next latent frames of a stream."""
    h = _conv(decoder.conv_in, z, stream) + z.repeat_interleave(decoder.repeat, dim=1)
    mid = decoder.mid_block
    h = _resnet(mid.resnets[0], h, stream)
    for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
        h = _resnet(resnet, h if attention is None else _attention(attention, h, stream), stream)
    for up in decoder.up_blocks:
        for resnet in up.resnets:
            h = _resnet(resnet, h, stream)
        for upsampler in up.upsamplers or ():
            h = _upsample(upsampler, h, stream)
    h = _conv(decoder.conv_out, decoder.conv_act(decoder.norm_out(h)), stream)
    stream.first = False
    return h


# ----------------------------------------------------------------------------- tiles

def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """diffusers' blend_v (dim -2) / blend_h (dim -1), in place on `b`: its first `extent` rows or columns
    fade from `a`'s last ones (`a` may be just that edge)."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return
    shape = [1] * b.ndim
    shape[dim] = extent
    ramp = [y / extent for y in range(extent)]
    weight = torch.tensor(ramp, dtype=b.dtype).reshape(shape)
    keep = torch.tensor([1 - r for r in ramp], dtype=b.dtype).reshape(shape)
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * keep + head * weight)


def _tile_starts(tiling: TilingOptions15, height: int, width: int, ratio: int) -> tuple[list, list, int]:
    """Latent start rows and columns, and the latent tile size: diffusers' `tiled_decode` (tiles only when the
    latent is larger than one tile), its stride in exact integers."""
    tile = tiling.tile_size // ratio
    if not tiling.spatial or (height <= tile and width <= tile):
        return [0], [0], max(height, width)
    stride = (tiling.tile_size - tiling.tile_overlap) // ratio
    return list(range(0, height, stride)), list(range(0, width, stride)), tile


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, tiling: TilingOptions15 | None = None,
                   on_tile: TileCallback | None = None) -> torch.Tensor:
    """VAE-space latents `[B, 32, T, h, w]` (ComfyUI's LATENT: already divided by the scaling factor) to
    frames `[B, 1 + 4 (T - 1), 16 h, 16 w, 3]` in 0..1 (float32, CPU), on the VAE's device.

    `on_tile(done, total)` hears each finished piece (one temporal chunk of one spatial tile) and may raise
    to stop the decode."""
    if latents.ndim != 5:
        raise ValueError(f"latent must be a video latent [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if latents.shape[1] != vae.config.latent_channels:
        raise ValueError(
            f"latent has {latents.shape[1]} channels but this VAE decodes {vae.config.latent_channels}: "
            "use the VAE that belongs to the model that made it")
    tiling = tiling or TilingOptions15()
    tiling.validate()
    parameter = next(vae.parameters())
    latents = latents.to(dtype=parameter.dtype)
    batch, _, length, height, width = latents.shape
    ratio, t_ratio = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    rows, cols, tile = _tile_starts(tiling, height, width, ratio)
    chunk = max(tiling.tile_frames // t_ratio, 1) if tiling.temporal else length
    chunks = range(0, length, chunk)
    total, done = len(rows) * len(cols) * len(chunks), 0

    def stream_tile(z: torch.Tensor, out: torch.Tensor) -> None:
        """One tile through time, each chunk's frames straight into `out` (CPU, float32)."""
        nonlocal done
        stream = _Stream()
        for start in chunks:
            frames = _decode_chunk(vae.decoder, z[:, :, start:start + chunk].to(parameter.device), stream)
            first = 0 if start == 0 else (start - 1) * t_ratio + 1
            out[:, :, first:first + frames.shape[2]] = frames.to("cpu", torch.float32)
            done += 1
            if on_tile is not None:
                on_tile(done, total)

    video = torch.empty(batch, 3, (length - 1) * t_ratio + 1, height * ratio, width * ratio)
    if total == len(chunks):  # one tile: no blend, no copy
        stream_tile(latents, video)
    else:
        _tile_into(video, latents, rows, cols, tile, tiling, ratio, stream_tile)
    return video.mul_(0.5).add_(0.5).clamp_(0, 1).permute(0, 2, 3, 4, 1)


def _tile_into(video, latents, rows, cols, tile, tiling: TilingOptions15, ratio, stream_tile) -> None:
    """diffusers' `tiled_decode` tile by tile: each tile is blended with the bottom edge of the one above and
    the right edge of the one to its left (both already blended), then its top-left part is kept. Only those
    edges are held, not whole tiles."""
    blend, keep = tiling.tile_overlap, tiling.tile_size - tiling.tile_overlap
    bottoms = {}  # column -> the previous row's tile's bottom edge
    for i, top in enumerate(rows):
        right = None  # this row's previous tile's right edge
        for j, left in enumerate(cols):
            z = latents[:, :, :, top:top + tile, left:left + tile]
            piece = torch.empty(*video.shape[:3], z.shape[-2] * ratio, z.shape[-1] * ratio)
            stream_tile(z, piece)
            if i > 0:
                _blend(bottoms[j], piece, blend, -2)
            if j > 0:
                _blend(right, piece, blend, -1)
            bottoms[j] = piece[..., piece.shape[-2] - blend:, :].clone()
            right = piece[..., piece.shape[-1] - blend:].clone()
            video[..., top * ratio:, left * ratio:][..., :keep, :keep] = piece[..., :keep, :keep]
