"""Transformer files in every layout users have load back exactly; real-size layouts are read right."""

import argparse
import json

import pytest
import torch
from conftest import SHARED
from diffusers import HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_keys import authors_to_diffusers
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import (
    derive_config,
    detect_variant,
    load_transformer,
)
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from safetensors.torch import save_file

LAYOUTS = json.loads((SHARED / "comfy" / "checkpoint_layouts.json").read_text())["files"]
REAL_FILES = {
    "hunyuan_video_t2v_720p_bf16": "t2v",
    "hunyuan_video_image_to_video_720p_bf16": "i2v_v1",
    "hunyuan_video_v2_replace_image_to_video_720p_bf16": "i2v_v2",
    "hunyuan_video_custom_720p": "custom",
}


def _assert_same_weights(a, b, atol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key].float(), sa[key].float(), atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("variant", ["t2v", "i2v_v1", "i2v_v2", "custom"])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_authors_layout_round_trip(tmp_path, variant, prefix):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, variant=variant, seed=1)
    name = "hunyuan_video_v2_replace_image_to_video.safetensors" if variant == "i2v_v2" else "model.safetensors"
    path = save_transformer(model, tmp_path / name, prefix=prefix)
    loaded = load_transformer(path, dtype="fp32")
    assert loaded.variant == variant
    _assert_same_weights(model, loaded.model)
    assert loaded.model.config.image_condition_type == model.config.image_condition_type


def test_fp8_scaled_file_is_dequantized_on_request(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=2)
    path = save_transformer(model, tmp_path / "t2v_fp8_scaled.safetensors", fp8=True)
    assert load_transformer(path).storage_dtype == torch.float8_e4m3fn  # auto keeps fp8 (tests/engine/test_fp8_storage.py)
    loaded = load_transformer(path, dtype="bf16")
    assert loaded.dtype == loaded.storage_dtype == torch.bfloat16
    # fp8 e4m3 keeps 3 mantissa bits: within ~7% of the largest weight of each tensor
    for key, value in model.state_dict().items():
        got = loaded.model.state_dict()[key].float()
        assert (got - value).abs().max() <= 0.07 * value.abs().max() + 1e-6, key


def test_bf16_file_keeps_its_dtype_and_dtype_can_be_forced(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=3).to(torch.bfloat16)
    path = save_transformer(model, tmp_path / "t2v_bf16.safetensors")
    assert load_transformer(path).dtype == torch.bfloat16
    assert load_transformer(path, dtype="fp16").dtype == torch.float16


def test_diffusers_folder(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=4)
    save_transformer(model, tmp_path / "HunyuanVideo" / "transformer", layout="diffusers")
    loaded = load_transformer(tmp_path / "HunyuanVideo", dtype="fp32")
    assert loaded.variant == "t2v"
    _assert_same_weights(model, loaded.model)


def test_t2v_and_i2v_v2_share_shapes_so_the_user_decides(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, variant="t2v", seed=5)
    path = save_transformer(model, tmp_path / "weights.safetensors")
    assert load_transformer(path).variant == "t2v"
    as_v2 = load_transformer(path, variant="i2v_v2")
    assert as_v2.variant == "i2v_v2" and as_v2.model.config.image_condition_type == "token_replace"


def test_variant_that_does_not_fit_the_weights_is_refused(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, variant="custom", seed=6)
    path = save_transformer(model, tmp_path / "custom.safetensors")
    with pytest.raises(CheckpointError, match="custom.safetensors: variant t2v needs the guidance embedding"):
        load_transformer(path, variant="t2v")
    with pytest.raises(ValueError, match="variant must be one of auto, t2v, i2v_v1, i2v_v2, custom"):
        load_transformer(path, variant="i2v")
    t2v = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, variant="t2v", seed=6)
    for saved in (save_transformer(t2v, tmp_path / "t2v.safetensors"),
                  save_transformer(t2v, tmp_path / "t2v_folder", layout="diffusers")):
        with pytest.raises(CheckpointError, match="variant custom: this model has a guidance embedding"):
            load_transformer(saved, variant="custom")
    custom_folder = save_transformer(model, tmp_path / "custom_folder", layout="diffusers")
    with pytest.raises(CheckpointError, match="custom_folder: variant t2v needs the guidance embedding"):
        load_transformer(custom_folder, variant="t2v")


@pytest.mark.parametrize("name,variant", REAL_FILES.items())
def test_real_size_layouts_convert_onto_the_diffusers_model(name, variant):
    shapes = {k: tuple(v) for k, v in LAYOUTS[name].items()}
    assert detect_variant(shapes, name + ".safetensors") == variant
    config = derive_config(shapes, variant)
    assert (config["num_layers"], config["num_single_layers"], config["attention_head_dim"]) == (20, 40, 128)
    assert config["rope_axes_dim"] == (16, 56, 56)
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**config)
        fake = {k: torch.empty(s) for k, s in shapes.items()}
    converted = authors_to_diffusers(fake)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_custom_audio_checkpoints_are_named_unsupported():
    shapes = {k: tuple(v) for k, v in LAYOUTS["hunyuan_video_custom_720p"].items()}
    shapes["audio_proj.proj.weight"] = (3072, 768)
    with pytest.raises(CheckpointError, match="audio or editing"):
        detect_variant(shapes)


def test_a_vae_picked_as_transformer_is_named(tmp_path):
    path = tmp_path / "hunyuan_video_vae_bf16.safetensors"
    save_file({"encoder.down_blocks.0.resnets.0.conv1.conv.weight": torch.zeros(2, 2, 1, 1, 1),
               "decoder.up_blocks.0.resnets.0.conv1.conv.weight": torch.zeros(2, 2, 1, 1, 1)}, str(path))
    with pytest.raises(CheckpointError, match=r"hunyuan_video_vae_bf16.safetensors: expected a HunyuanVideo transformer.*VAE"):
        load_transformer(path)


def test_truncated_and_junk_files_are_named(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=7)
    path = save_transformer(model, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors: file is truncated"):
        load_transformer(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a safetensors file"):
        load_transformer(junk)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_transformer(tmp_path / "missing.safetensors")


def test_pickled_checkpoints_load_weights_only(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=8)
    safetensors_path = save_transformer(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file

    torch.save({"module": load_file(str(safetensors_path))}, tmp_path / "mp_rank_00_model_states.pt")
    loaded = load_transformer(tmp_path / "mp_rank_00_model_states.pt", dtype="fp32")
    _assert_same_weights(model, loaded.model)

    torch.save({"module": argparse.Namespace(payload="code")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: cannot be loaded as a weights-only torch file"):
        load_transformer(tmp_path / "evil.pt")
