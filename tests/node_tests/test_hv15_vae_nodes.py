"""The HunyuanVideo 1.5 VAE nodes: the loader takes ComfyUI's file and refuses a 13B VAE, the decode node gives
IMAGE frames and a VIDEO, reports each tile and chunk, stops on Cancel, and ComfyUI's validation sees bad tiles."""

import pytest
import torch
from hunyuan_video_suite.nodes import host
from hunyuan_video_suite.nodes.hunyuan_video_15 import vae as vae_nodes
from hunyuan_video_suite.nodes.types import HV15_VAE
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny import save_vae, tiny_vae
from hunyuan_video_suite.pipelines.hunyuan_video_15.decoding import TilingOptions15, decode_latents
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError

LOADER, DECODE = vae_nodes.HYVSHV15VAELoader, vae_nodes.HYVSHV15Decode


@pytest.fixture(scope="module")
def vae():
    return tiny_vae15(seed=0)


@pytest.fixture(scope="module")
def samples():
    return {"samples": torch.randn(1, 32, 3, 4, 5, generator=torch.Generator().manual_seed(0))}  # 9 frames, 64 x 80


def test_loader_loads_comfys_file_and_refuses_a_13b_vae(tmp_path, vae):
    path = save_vae15(vae, tmp_path / "hunyuanvideo15_vae_fp16.safetensors", layout="comfy")
    loaded = LOADER().load(str(path), "bf16")[0]
    assert loaded.dtype == torch.bfloat16 and next(loaded.parameters()).device == host.offload_device()
    assert torch.equal(loaded.decoder.conv_in.conv.weight, vae.decoder.conv_in.conv.weight.bfloat16())
    old = save_vae(tiny_vae(seed=0), tmp_path / "hunyuan_video_vae_bf16.safetensors", layout="comfy")
    with pytest.raises(CheckpointError, match=r"hunyuan_video_vae_bf16\.safetensors: .*HunyuanVideo 13B VAE"):
        LOADER().load(str(old), "auto")
    with pytest.raises(ValueError, match="no model chosen: pick a file from ComfyUI.s .vae. folder"):
        LOADER().load("", "auto")
    assert LOADER.INPUT_TYPES()["required"]["dtype"][0] == ["auto", "fp16", "bf16", "fp32"]
    assert LOADER.RETURN_TYPES == (HV15_VAE,) and DECODE.INPUT_TYPES()["required"]["vae"][0] == HV15_VAE


def test_decode_gives_image_frames_and_a_video(vae, samples):
    frames, video = DECODE().decode(vae, samples, 12.0, True, 64, 16, True, 8)
    assert frames.shape == (9, 64, 80, 3) and frames.dtype == torch.float32
    expected = decode_latents(vae, samples["samples"], TilingOptions15(True, 64, 16, True, 8))
    assert torch.equal(frames, expected[0])
    images, fps = video.get_components()
    assert torch.equal(images, frames) and float(fps) == 12.0


def test_decode_reports_each_piece_and_stops_on_cancel(vae, samples, monkeypatch):
    seen = []
    original = host.Progress.set

    def spy(self, done):
        seen.append((done, self.total))
        if done == 2:
            host.request_interrupt()
        original(self, done)

    monkeypatch.setattr(host.Progress, "set", spy)
    try:
        with pytest.raises(host.Interrupted):
            DECODE().decode(vae, samples, 24.0, True, 64, 16, True, 4)
    finally:
        host.request_interrupt(False)
    assert seen == [(1, 12), (2, 12)]  # 2 x 2 tiles x 3 chunks of one latent frame
    assert next(vae.parameters()).device == host.offload_device()


def test_validation_and_descriptions():
    assert DECODE.VALIDATE_INPUTS(tile_size=256, tile_overlap=32, tile_frames=16) is True
    assert DECODE.VALIDATE_INPUTS(tile_size=256, tile_overlap=24, tile_frames=16).startswith(
        "tile_overlap must be a multiple of 16 below tile_size")
    too_big = DECODE.VALIDATE_INPUTS(tile_size=2048, tile_overlap=32, tile_frames=16)
    assert too_big == "tile_size must be at most 1024, got 2048"
    assert DECODE.VALIDATE_INPUTS(tile_size=None, tile_overlap=32, tile_frames=16) is True  # linked: checked at run time
    assert vae_nodes.NODE_DISPLAY_NAME_MAPPINGS == {"HYVS_HV15VAELoader": "HunyuanVideo Suite: HV1.5 VAE Loader",
                                                    "HYVS_HV15Decode": "HunyuanVideo Suite: HV1.5 Decode"}
    for name, cls in vae_nodes.NODE_CLASS_MAPPINGS.items():
        assert cls.DESCRIPTION and cls.CATEGORY == "HunyuanVideo Suite/HunyuanVideo 1.5", name
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), name
        for input_name, entry in cls.INPUT_TYPES()["required"].items():
            assert entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
