"""`read_variant` tells what `load_transformer` would load, and refuses what it would refuse, from the headers, the
names and config.json alone: no weight is read (the render command checks its options with it before loading)."""

import pytest
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import load_transformer, read_variant
from hunyuan_video_suite.pipelines.weights import streaming_load
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError

DIMS = dict(text_dim=32, byt5_dim=24, image_dim=20)


@pytest.fixture(scope="module")
def models():
    return {False: tiny_transformer15(**DIMS, seed=4, layers=1), True: tiny_transformer15(**DIMS, meanflow=True, seed=4,
                                                                                         layers=1)}


@pytest.fixture
def no_weights(monkeypatch):
    """Reading a tensor's data fails the test."""
    for method in ("get", "read"):
        monkeypatch.setattr(streaming_load.TensorSource, method, lambda *a, _m=method: pytest.fail(f"{_m} read a weight"))


@pytest.mark.parametrize("layout, name, variant, meanflow", [
    ("comfy", "hunyuanvideo1.5_720p_t2v_fp16.safetensors", "720p_t2v", False),
    ("comfy", "hunyuanvideo1.5_480p_i2v_step_distilled_fp8_scaled.safetensors", "480p_i2v_step_distilled", True),
    ("authors_file", "hunyuanvideo1.5_480p_i2v_cfg_distilled_fp16.safetensors", "480p_i2v_distilled", False),
    ("authors_folder", "renamed", "720p_i2v_distilled_sparse", False),
    ("diffusers", "HunyuanVideo-1.5-Diffusers-480p_t2v", "480p_t2v", False),
])
def test_the_variant_read_from_the_header_is_the_loaders(tmp_path, models, layout, name, variant, meanflow):
    path = save_transformer15(models[meanflow], tmp_path / name, layout=layout, variant=variant,
                              fp8=name.endswith("fp8_scaled.safetensors"))
    assert load_transformer(path).variant.name == variant
    with pytest.MonkeyPatch.context() as patch:
        for method in ("get", "read"):
            patch.setattr(streaming_load.TensorSource, method, lambda *a: pytest.fail("a weight was read"))
        assert read_variant(path).name == variant
        asked = "480p_i2v_step_distilled" if meanflow else "720p_i2v"  # --variant may rename within what the keys allow
        assert read_variant(path, asked).name == asked


def test_it_refuses_what_the_loader_refuses(tmp_path, models, no_weights):
    unnamed = save_transformer15(models[False], tmp_path / "my_model.safetensors")
    with pytest.raises(CheckpointError, match="cannot tell the variant"):
        read_variant(unnamed)
    assert read_variant(unnamed, "480p_i2v").name == "480p_i2v"
    with pytest.raises(CheckpointError, match="step-distilled"):
        read_variant(unnamed, "480p_i2v_step_distilled")
    with pytest.raises(ValueError, match="variant must be one of auto"):
        read_variant(unnamed, "i2v_v2")
    old = save_transformer(tiny_transformer(32, 16, 16, seed=1), tmp_path / "hunyuan_video_720p_t2v.safetensors")
    with pytest.raises(CheckpointError, match="is a HunyuanVideo 13B"):
        read_variant(old)
    with pytest.raises(CheckpointError, match="no such file"):
        read_variant(tmp_path / "missing.safetensors")
