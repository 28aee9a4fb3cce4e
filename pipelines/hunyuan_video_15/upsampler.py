"""HunyuanVideo 1.5's latent upsamplers (the super-resolution stage's 720p and 1080p ones): loading and running them.

The SR stage resizes the base clip's latents per frame to the target latent size (bilinear) and passes them
through a small convolutional "upsampler" in fp32 before the SR transformer sees them. Two architectures exist:
- 720p (`SRTo720pUpsampler`): causal conv in -> N residual blocks of three causal convs -> causal conv out;
- 1080p (`SRTo1080pUpsampler`): causal conv in plus a channel-repeat skip, levels of RMS-norm resnet blocks,
  RMS norm, SiLU, causal conv out.
Restated from the authors' `hyvideo/models/transformers/modules/upsample.py:55-169` and the blocks it imports
from `hyvideo/models/autoencoders/hunyuanvideo_15_vae.py:110-160,219-248` (RMS_norm, CausalConv3d, ResnetBlock),
because no library ships them: diffusers has no SR stage, and ComfyUI's copy (`comfy/ldm/hunyuan_video/
upsampler.py`) is tied to ComfyUI's model management. diffusers' HunyuanVideo 1.5 VAE blocks compute the same
in fp32, but its resnet names the shortcut `conv_shortcut` (the weights say `nin_shortcut`) and this package
imports diffusers only inside functions, so the three blocks are restated here (about 40 lines).

Files: ComfyUI's `hunyuanvideo15_latent_upsampler_{720p,1080p}.safetensors` (`models/latent_upscale_models/`)
hold the authors' tensor names unchanged; the authors' `upsampler/<720p_sr_distilled|1080p_sr_distilled>/` folders
hold `config.json` and the weights. The kind is told by one key, as ComfyUI's `LatentUpscaleModelLoader` does
(`blocks.0.block.0.conv.weight` 720p, `up.0.block.0.conv1.conv.weight` 1080p); every size is read from the
tensor shapes, so tiny test files load through the same code. A wrong file is refused from its safetensors
header before any weight is read. The 720p model's `global_residual` (off in ComfyUI, whose files have no config)
is taken from `config.json` when a folder gives one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..weights.checkpoint_kinds import guess_checkpoint_kind
from ..weights.checkpoints import (
    PICKLE_SUFFIXES,
    CheckpointError,
    describe_mismatch,
    load_state_dict,
    read_safetensors_header,
)

MARKER_720P = "blocks.0.block.0.conv.weight"
MARKER_1080P = "up.0.block.0.conv1.conv.weight"
AUTHORS_CLASSES = {"720p": "SRTo720pUpsampler", "1080p": "SRTo1080pUpsampler"}
EXPECTED = ("a HunyuanVideo 1.5 latent upsampler (hunyuanvideo15_latent_upsampler_720p/1080p.safetensors, or the "
            "authors' upsampler/720p_sr_distilled or 1080p_sr_distilled folder)")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin")


class CausalConv3d(nn.Module):
    """3x3x3 convolution padded by replicating edges: one frame each side in H and W, two past frames in T."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        half = kernel_size // 2
        self.time_causal_padding = (half, half, half, half, kernel_size - 1, 0)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.time_causal_padding, mode="replicate"))


class RMSNorm(nn.Module):
    """Channel RMS norm: `normalize(x, dim=1) * sqrt(C) * gamma` (the authors' `RMS_norm(images=False)`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = RMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = RMSNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.nin_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class ResidualCausalBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(CausalConv3d(channels, channels), nn.SiLU(), CausalConv3d(channels, channels),
                                   nn.SiLU(), CausalConv3d(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Upsampler720p(nn.Module):
    """The authors' `SRTo720pUpsampler` (upsample.py:70-97); the residual applies only when shapes agree."""

    kind = "720p"

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, num_blocks: int,
                 global_residual: bool = False):
        super().__init__()
        self.in_conv = CausalConv3d(in_channels, hidden_channels)
        self.blocks = nn.ModuleList(ResidualCausalBlock(hidden_channels) for _ in range(num_blocks))
        self.out_conv = CausalConv3d(hidden_channels, out_channels)
        self.global_residual = bool(global_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.in_conv(x)
        for block in self.blocks:
            y = block(y)
        y = self.out_conv(y)
        return y + x if self.global_residual and y.shape == x.shape else y


class Upsampler1080p(nn.Module):
    """The authors' `SRTo1080pUpsampler` (upsample.py:100-169) without its unused `target_shape` resize."""

    kind = "1080p"

    def __init__(self, z_channels: int, out_channels: int, block_out_channels: tuple[int, ...], num_res_blocks: int):
        super().__init__()
        self.repeats = block_out_channels[0] // z_channels
        self.conv_in = CausalConv3d(z_channels, block_out_channels[0])
        self.up = nn.ModuleList()
        width = block_out_channels[0]
        for out in block_out_channels:
            level = nn.Module()
            level.block = nn.ModuleList(ResnetBlock(width if i == 0 else out, out) for i in range(num_res_blocks + 1))
            width = out
            self.up.append(level)
        self.norm_out = RMSNorm(width)
        self.conv_out = CausalConv3d(width, out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z) + z.repeat_interleave(self.repeats, dim=1)
        for level in self.up:
            for block in level.block:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def upsampler_kind(keys) -> str | None:
    """"720p" or "1080p" from the tensor names (ComfyUI's test), None for anything else."""
    keys = set(keys)
    return "720p" if MARKER_720P in keys else "1080p" if MARKER_1080P in keys else None


def _count(shapes: Mapping, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := regex.fullmatch(k))})


def derive_upsampler_config(shapes: Mapping[str, tuple[int, ...]], name: str = "upsampler") -> tuple[str, dict]:
    """(kind, constructor arguments) from tensor names -> shapes; a CheckpointError naming `name` otherwise."""
    kind = upsampler_kind(shapes)
    if kind is None:
        raise CheckpointError(f"{name}: expected {EXPECTED}, but it holds {guess_checkpoint_kind(shapes)}")
    try:
        if kind == "720p":
            return kind, {"in_channels": shapes["in_conv.conv.weight"][1],
                          "out_channels": shapes["out_conv.conv.weight"][0],
                          "hidden_channels": shapes["in_conv.conv.weight"][0],
                          "num_blocks": _count(shapes, r"blocks\.(\d+)\.block\.0\.conv\.weight")}
        levels = _count(shapes, r"up\.(\d+)\.block\.0\.conv1\.conv\.weight")
        return kind, {"z_channels": shapes["conv_in.conv.weight"][1],
                      "out_channels": shapes["conv_out.conv.weight"][0],
                      "block_out_channels": tuple(shapes[f"up.{i}.block.0.conv1.conv.weight"][0]
                                                  for i in range(levels)),
                      "num_res_blocks": _count(shapes, r"up\.0\.block\.(\d+)\.conv1\.conv\.weight") - 1}
    except KeyError as e:
        raise CheckpointError(f"{name}: looks like a {kind} latent upsampler but lacks tensor {e.args[0]!r}") from None


def _weights_in(folder: Path) -> tuple[Path, dict]:
    """The weight file of an authors' upsampler folder and its config.json (empty when there is none)."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    for weight_name in WEIGHT_NAMES:
        if (folder / weight_name).is_file():
            return folder / weight_name, config
    found = sorted(folder.glob("*.safetensors"))
    if len(found) != 1:
        raise CheckpointError(f"{folder}: expected one weight file ({', '.join(WEIGHT_NAMES)}) beside config.json, "
                              f"found {len(found)} .safetensors")
    return found[0], config


def load_upsampler(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A latent upsampler in fp32 and eval mode from ComfyUI's single file or the authors' folder.

    The result has `.kind` ("720p" or "1080p"). Raises CheckpointError naming the file and what it holds when
    it is not an upsampler (from the safetensors header, before reading weights), or when a folder's
    config.json names the other architecture."""
    path = Path(path)
    config = {}
    if path.is_dir():
        path, config = _weights_in(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        header = read_safetensors_header(path)
        derive_upsampler_config({k: tuple(v["shape"]) for k, v in header.items()}, path.name)
    state = load_state_dict(path, device="cpu")
    kind, kwargs = derive_upsampler_config({k: tuple(v.shape) for k, v in state.items()}, path.name)
    class_name = config.get("_class_name")
    if class_name is not None and class_name != AUTHORS_CLASSES[kind]:
        raise CheckpointError(f"{path.parent.name}/config.json names {class_name}, but {path.name} holds the "
                              f"{kind} upsampler ({AUTHORS_CLASSES[kind]})")
    if kind == "720p":
        model = Upsampler720p(**kwargs, global_residual=config.get("global_residual", False))
    else:
        model = Upsampler1080p(**kwargs)
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{path.name}: not a complete {kind} latent upsampler ({problem})")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return model.to(device=device, dtype=torch.float32).eval()


def resize_latents(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each frame of (B, C, T, H, W) latents bilinearly resized to `size` = (H', W'), as the authors' SR pipeline
    does before the upsampler (hunyuan_video_sr_pipeline.py:337-341, `align_corners=False`)."""
    b, c, t, h, w = latents.shape
    frames = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


def upsample(upsampler: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """The upsampler run on (B, 32, T, H, W) latents already at the target latent size (the caller resizes them
    with `resize_latents`, as the authors' pipeline does outside its upsampler call).

    As the authors (hunyuan_video_sr_pipeline.py:342-344): the input goes to the upsampler's device in fp32, and
    the result comes back in the input's dtype (the authors cast to their SR latents' dtype), on its device.
    The upsamplers keep the size: they refine the resized latents, they do not enlarge them."""
    weight = next(upsampler.parameters())
    with torch.no_grad():  # not inference_mode: callers may add noise in place to the result
        out = upsampler(latents.to(device=weight.device, dtype=torch.float32))
    return out.to(device=latents.device, dtype=latents.dtype)
