"""VAE decode: working memory at 33 vs 129 frames, our chunked decode vs diffusers' framewise decode.

    python3 benchmarks/decode_memory.py

Tiny random VAE of the real architecture (widths 8) on the CPU, 128x128 px, temporal tiles of 16
frames, spatial tiles of 64 px. Memory is counted exactly as tensor bytes (pipelines/memory/live_bytes.py:
every storage that ops create, while alive), not RSS: "working" is the peak minus the finished
frames themselves (which a caller must hold anyway). On a GPU the same count is what the device
holds; in our decode the finished chunks leave the device, so only the working part stays there.
"""

from __future__ import annotations

import _pack
import torch
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.memory.live_bytes import PeakTensorBytes
from hunyuan_video_suite.pipelines.video.decoding import TilingOptions, _decode_in_chunks, configure_tiling

TILING = TilingOptions(spatial=True, tile_size=64, tile_overlap=16, temporal=True, tile_frames=16, frame_overlap=4)


def working_bytes(decode, latents) -> tuple[int, int]:
    with torch.no_grad(), PeakTensorBytes() as counter:
        frames = decode(latents)
    output = frames.numel() * frames.element_size()
    return counter.peak - output, output


def main() -> None:
    vae = tiny.tiny_vae(seed=0).float().eval()
    configure_tiling(vae, TILING)
    ours = lambda z: _decode_in_chunks(vae, z, "cpu", None)  # noqa: E731
    diffusers = lambda z: vae.decode(z, return_dict=False)[0]  # noqa: E731
    print("device: CPU (tensor-byte count, exact); tiny VAE, 128x128 px, tiles 64 px x 16 frames")
    print(f"{'decode':<22} {'frames':>6} {'output MB':>10} {'working MB':>11}")
    rows = {}
    for frames in (33, 129):
        latents = torch.randn(1, vae.config.latent_channels, (frames - 1) // 4 + 1, 16, 16, generator=torch.Generator().manual_seed(0))
        for name, decode in (("ours (chunks leave)", ours), ("diffusers framewise", diffusers)):
            working, output = working_bytes(decode, latents)
            rows[(name, frames)] = working
            print(f"{name:<22} {frames:>6} {output / 1e6:>10.2f} {working / 1e6:>11.2f}")
    for name in ("ours (chunks leave)", "diffusers framewise"):
        print(f"{name}: working memory 129/33 frames = {rows[(name, 129)] / rows[(name, 33)]:.2f}x")


if __name__ == "__main__":
    main()
