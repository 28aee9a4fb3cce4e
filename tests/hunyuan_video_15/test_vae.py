"""The HunyuanVideo 1.5 VAE: every layout loads to the same model, wrong files are refused from their header,
the I2V first-frame latent is diffusers' I2V pipeline's, and the tiled, chunked decode gives diffusers' frames."""

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny import save_vae, tiny_vae
from hunyuan_video_suite.pipelines.hunyuan_video_15 import vae_loading
from hunyuan_video_suite.pipelines.hunyuan_video_15.decoding import TilingOptions15, decode_latents
from hunyuan_video_suite.pipelines.hunyuan_video_15.vae_loading import (
    VAE_SCALING,
    derive_vae_config,
    diffusers_to_authors_vae,
    encode_first_frame,
    load_vae,
    vae_from_state_dict,
)
from hunyuan_video_suite.pipelines.weights.checkpoint_kinds import guess_checkpoint_kind
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from safetensors.torch import save_file

SEED = torch.Generator().manual_seed


@pytest.fixture(scope="module")
def vae():
    return tiny_vae15(seed=0)


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """diffusers' decode output [B, 3, F, H, W] in -1..1 as our frames [B, F, H, W, 3] in 0..1."""
    return (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)


def assert_same_weights(model, reference):
    expected, got = reference.state_dict(), model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


# ----------------------------------------------------------------------------- the tiny model and the layouts

def test_tiny_vae_keeps_the_real_compression_and_is_deterministic(vae):
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    again, other = tiny_vae15(seed=0), tiny_vae15(seed=1)
    assert torch.equal(torch.rand(2), expected)  # the global RNG is left alone
    assert_same_weights(again, vae)
    assert not torch.equal(other.decoder.conv_in.conv.weight, vae.decoder.conv_in.conv.weight)
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, 5, 32, 48)).latent_dist.mode()
    assert latent.shape == (1, 32, 2, 2, 3)  # 4x temporal, 16x spatial, 32 channels
    assert vae.config.scaling_factor == VAE_SCALING == pytest.approx(1.03682)


def _write(vae, root, how):
    """(path to load, description) for each way the VAE circulates."""
    if how == "comfy":
        return save_vae15(vae, root / "hunyuanvideo15_vae_fp16.safetensors", layout="comfy")
    if how == "diffusers":
        return save_vae15(vae, root / "vae15_diffusers_names.safetensors", layout="diffusers")
    if how in ("folder", "pipeline_folder"):
        save_vae15(vae, root / "vae", layout="diffusers_folder")
        return root / "vae" if how == "folder" else root
    prefix = {"vae_prefix": "vae.", "first_stage_prefix": "first_stage_model."}.get(how, "")
    state = {prefix + k: v.contiguous() for k, v in diffusers_to_authors_vae(vae.state_dict()).items()}
    if how == "pickle":
        torch.save(state, root / "vae15.pt")
        return root / "vae15.pt"
    save_file(state, str(root / f"{how}.safetensors"))
    return root / f"{how}.safetensors"


@pytest.mark.parametrize("how", ["comfy", "diffusers", "folder", "pipeline_folder", "vae_prefix", "first_stage_prefix",
                                 "pickle"])
def test_every_layout_loads_the_same_model(tmp_path, vae, how):
    loaded = load_vae(_write(vae, tmp_path, how), dtype="auto")
    assert type(loaded).__name__ == "AutoencoderKLHunyuanVideo15"
    assert tuple(loaded.config.block_out_channels) == (8, 16, 32, 64, 64) and loaded.config.layers_per_block == 2
    assert loaded.dtype == torch.float32  # auto: as stored
    assert_same_weights(loaded, vae)


def test_the_comfy_file_uses_the_authors_names(tmp_path, vae):
    from safetensors import safe_open

    keys = set(safe_open(str(save_vae15(vae, tmp_path / "v.safetensors", layout="comfy")), "pt").keys())
    for name in ("encoder.down.0.block.1.norm1.gamma", "encoder.down.3.downsample.conv.conv.weight",
                 "decoder.up.0.block.2.conv2.conv.bias", "decoder.up.3.upsample.conv.conv.weight",
                 "decoder.mid.attn_1.q.weight", "decoder.mid.attn_1.proj_out.bias", "encoder.mid.block_2.norm2.gamma"):
        assert name in keys
    assert not any("_blocks" in k or "resnets" in k or "to_q" in k for k in keys)


def test_requested_dtypes(tmp_path, vae):
    state = {k: v.half().contiguous() for k, v in diffusers_to_authors_vae(vae.state_dict()).items()}
    save_file(state, str(tmp_path / "fp16.safetensors"))
    path = tmp_path / "fp16.safetensors"
    assert load_vae(path).dtype == torch.float16  # auto keeps the file's fp16, as the authors decode
    assert load_vae(path, dtype="bf16").dtype == torch.bfloat16
    assert load_vae(path, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of auto, fp16, bf16, fp32"):
        load_vae(path, dtype="fp8")


def test_the_real_widths_are_read_from_the_authors_names():
    """The real VAE's names, as the authors' AutoencoderKLConv3D (checked against it: 218 tensors), on meta."""
    from diffusers import AutoencoderKLHunyuanVideo15

    with torch.device("meta"):
        real = AutoencoderKLHunyuanVideo15()
    authors = diffusers_to_authors_vae(real.state_dict())
    assert len(authors) == 218 and "decoder.up.4.block.2.norm2.gamma" in authors
    assert "decoder.up.3.upsample.conv.conv.weight" in authors  # four upsamplings (16x), none after the last level
    assert "decoder.up.4.upsample.conv.conv.weight" not in authors
    config = derive_vae_config({"vae." + k: tuple(v.shape) for k, v in authors.items()})
    assert config["block_out_channels"] == (128, 256, 512, 1024, 1024) and config["layers_per_block"] == 2
    model = vae_from_state_dict(authors, device="meta")
    assert model.config.latent_channels == 32 and model.config.spatial_compression_ratio == 16


# ----------------------------------------------------------------------------- wrong files

def _refuse_without_reading_weights(monkeypatch, path, match):
    monkeypatch.setattr(vae_loading, "load_state_dict", lambda *a, **k: pytest.fail("read the weights"))
    with pytest.raises(CheckpointError, match=match):
        load_vae(path)


@pytest.mark.parametrize("layout", ["authors", "comfy"])
def test_the_13b_vae_is_refused_from_its_header(tmp_path, monkeypatch, layout):
    path = save_vae(tiny_vae(seed=0), tmp_path / "hunyuan_video_vae_bf16.safetensors", layout=layout)
    expected = r"hunyuan_video_vae_bf16\.safetensors: expected the HunyuanVideo 1\.5 VAE.*but it holds the HunyuanVideo 13B"
    _refuse_without_reading_weights(monkeypatch, path, expected + r" VAE \(16 latent channels")


@pytest.mark.parametrize("name, tensors, kind", [
    ("hunyuanvideo1.5_720p_t2v_fp16",
     {"double_blocks.0.img_attn_qkv.weight": (6, 2), "cond_type_embedding.weight": (3, 2), "txt_in.input_embedder.weight": (2, 2)},
     "a HunyuanVideo transformer"),
    ("byt5_small_glyphxl_fp16", {"encoder.block.0.layer.0.SelfAttention.q.weight": (2, 2), "shared.weight": (4, 2)},
     "a T5 text encoder"),
    ("mystery", {"foo.bar.weight": (2,)}, "an unrecognised set of 1 tensors"),
])
def test_other_files_are_refused_from_their_header(tmp_path, monkeypatch, name, tensors, kind):
    path = tmp_path / f"{name}.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in tensors.items()}, str(path))
    _refuse_without_reading_weights(monkeypatch, path, rf"{name}\.safetensors: expected the HunyuanVideo 1\.5 VAE.*"
                                                       rf"but it holds {kind}")


def test_the_kind_guess_names_the_15_vae_and_still_the_13b_ones(vae):
    assert guess_checkpoint_kind(vae.state_dict()) == "a HunyuanVideo 1.5 VAE"
    assert guess_checkpoint_kind(diffusers_to_authors_vae(vae.state_dict())) == "a HunyuanVideo 1.5 VAE"
    old = tiny_vae(seed=0).state_dict()
    assert guess_checkpoint_kind(old) == "a HunyuanVideo VAE (authors'/diffusers layout)"


def test_missing_tensors_folders_and_paths(tmp_path, vae):
    state = {k: v.contiguous() for k, v in vae.state_dict().items() if "mid_block.resnets.1.conv2" not in k}
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors: an unknown HunyuanVideo 1\.5 VAE layout.*4 missing"):
        load_vae(tmp_path / "partial.safetensors")  # the mid block's conv2 weight and bias, in encoder and decoder
    old = save_vae(tiny_vae(seed=0), tmp_path / "old" / "vae", layout="diffusers")
    with pytest.raises(CheckpointError, match=r"holds a AutoencoderKLHunyuanVideo, expected the HunyuanVideo 1\.5 VAE"):
        load_vae(old.parent)
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: no such file or folder"):
        load_vae(tmp_path / "nothing.safetensors")
    truncated = save_vae15(vae, tmp_path / "cut.safetensors")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*truncated"):
        load_vae(truncated)


# ----------------------------------------------------------------------------- the I2V first frame

def test_first_frame_latent_is_diffusers_i2v_pipelines(vae):
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor
    from PIL import Image

    pixels = (torch.rand(48, 32, 3, generator=SEED(2)) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=16, do_resize=False, do_convert_rgb=True)
    expected = HunyuanVideo15ImageToVideoPipeline._get_image_latents(vae, processor, image, 48, 32, torch.device("cpu"))
    tensor = processor.preprocess(image, height=48, width=32)  # [1, 3, 48, 32] in -1..1
    got = encode_first_frame(vae, tensor)
    assert got.shape == (1, 32, 1, 3, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        mode = vae.encode(tensor.unsqueeze(2)).latent_dist.mode()
    assert not torch.allclose(got, mode)  # scaled, not the raw mode
    with pytest.raises(ValueError, match="multiples of 16"):
        encode_first_frame(vae, torch.zeros(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encode_first_frame(vae, torch.zeros(1, 3, 1, 48, 32))


# ----------------------------------------------------------------------------- decoding

@pytest.fixture(scope="module")
def latent():
    return torch.randn(1, 32, 3, 5, 4, generator=SEED(3))  # 9 frames of 80 x 64 px


@pytest.fixture(scope="module")
def whole(vae, latent):
    with torch.no_grad():
        return frames_of(vae.decode(latent).sample)


@pytest.mark.parametrize("temporal, tile_frames", [(False, 16), (True, 4), (True, 8)])
def test_untiled_decode_is_diffusers_whole_decode(vae, latent, whole, temporal, tile_frames):
    frames = decode_latents(vae, latent, TilingOptions15(spatial=False, temporal=temporal, tile_frames=tile_frames))
    assert frames.shape == (1, 9, 80, 64, 3) and frames.dtype == torch.float32
    torch.testing.assert_close(frames, whole, rtol=0, atol=1e-5)


def test_tiled_decode_is_diffusers_tiled_decode(vae, latent, whole):
    vae.enable_tiling(64, 64, 4, 4, 0.25)  # 64 px tiles (4 latent), 16 px overlap: diffusers' own tiled_decode
    try:
        with torch.no_grad():
            expected = frames_of(vae.decode(latent).sample)
    finally:
        vae.disable_tiling()
    assert (expected - whole).abs().max() > 1e-3  # tiles change the frames: the comparison means something
    seen = []
    frames = decode_latents(vae, latent, TilingOptions15(tile_size=64, tile_overlap=16, tile_frames=8),
                            on_tile=lambda done, total: seen.append((done, total)))
    torch.testing.assert_close(frames, expected, rtol=0, atol=1e-5)
    assert seen == [(n, 8) for n in range(1, 9)]  # 2 x 2 tiles (stride 3 latent) x 2 chunks (2 + 1 latent frames)


def test_chunks_reach_the_decoder_as_chunks_and_a_raising_callback_stops(vae, latent):
    lengths = []
    hook = vae.decoder.conv_in.conv.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[2]))

    def stop_at_second(done, total):
        if done == 2:
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            decode_latents(vae, latent, TilingOptions15(spatial=False, tile_frames=4), on_tile=stop_at_second)
    finally:
        hook.remove()
    assert lengths == [3, 3]  # one latent frame + two cached frames each; stopped after the second of three chunks


def test_a_batch_decodes_as_its_videos(vae, latent):
    other = torch.randn(1, 32, 3, 5, 4, generator=SEED(4))
    tiling = TilingOptions15(tile_size=64, tile_overlap=16, tile_frames=16)
    frames = decode_latents(vae, torch.cat([latent, other]), tiling)
    for i, one in enumerate((latent, other)):  # (diffusers' own decode fails on a batch: its attention mask is 3-D)
        torch.testing.assert_close(frames[i:i + 1], decode_latents(vae, one, tiling), rtol=0, atol=1e-5)


def test_bad_latents_and_tilings_are_refused(vae):
    with pytest.raises(ValueError, match="16 channels but this VAE decodes 32"):
        decode_latents(vae, torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(ValueError, match="video latent"):
        decode_latents(vae, torch.zeros(1, 32, 2, 2))
    with pytest.raises(ValueError, match="tile_size must be a multiple of 16"):
        TilingOptions15(tile_size=72).validate()
    with pytest.raises(ValueError, match="tile_overlap must be a multiple of 16 below tile_size"):
        TilingOptions15(tile_size=64, tile_overlap=64).validate()
    with pytest.raises(ValueError, match="tile_frames must be a multiple of 4"):
        TilingOptions15(tile_frames=6).validate()
