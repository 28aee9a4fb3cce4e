"""HunyuanVideo 1.5 transformer files in every layout users have load to the same model; the variant is
read as the keys, config.json and the file name allow; wrong files are refused by their header."""

import json

import pytest
import torch
from diffusers import HunyuanVideo15Transformer3DModel
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_keys import diffusers_to_authors
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import derive_config, load_transformer
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from hunyuan_video_suite.pipelines.weights.streaming_load import count_fp8_layers
from safetensors.torch import save_file

DIMS = dict(text_dim=32, byt5_dim=24, image_dim=20)


@pytest.fixture(scope="module")
def model():
    return tiny_transformer15(**DIMS, seed=3)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("layout,name,variant", [
    ("comfy", "hunyuanvideo1.5_720p_t2v_fp16.safetensors", "720p_t2v"),
    ("authors_file", "hunyuanvideo1.5_480p_i2v_cfg_distilled_fp16.safetensors", "480p_i2v_distilled"),
    ("authors_folder", "720p_i2v_distilled_sparse", "720p_i2v_distilled_sparse"),
    ("diffusers", "HunyuanVideo-1.5-Diffusers-480p_t2v", "480p_t2v"),
])
def test_every_layout_loads_the_same_model_and_names_its_variant(tmp_path, model, layout, name, variant):
    path = save_transformer15(model, tmp_path / name, layout=layout, variant=variant)
    loaded = load_transformer(path)
    _same(model, loaded.model)
    assert loaded.variant.name == variant
    assert ("dense attention" in loaded.notice) == variant.endswith("sparse")


def test_a_comfy_prefix_and_the_authors_config_json(tmp_path, model):
    prefixed = save_transformer15(model, tmp_path / "hunyuanvideo1.5_480p_t2v.safetensors", prefix="model.diffusion_model.")
    _same(model, load_transformer(prefixed).model)
    folder = save_transformer15(model, tmp_path / "renamed", layout="authors_folder", variant="720p_i2v")
    assert load_transformer(folder).variant.name == "720p_i2v"  # from config.json: the name tells nothing


def test_fp8_scaled_files_stay_fp8_and_compute_like_their_dequantized_weights(tmp_path, model):
    path = save_transformer15(model, tmp_path / "hunyuanvideo1.5_480p_i2v_step_distilled_fp8_scaled.safetensors",
                              fp8=True)
    with pytest.raises(CheckpointError, match="step-distilled"):
        load_transformer(path)  # the name says step-distilled, the weights lack time_r_in
    loaded = load_transformer(path, variant="480p_i2v")
    assert count_fp8_layers(loaded.model) == 14 * len(model.transformer_blocks)  # fused qkv split, still fp8
    as_bf16 = load_transformer(path, variant="480p_i2v", dtype="bf16")
    assert count_fp8_layers(as_bf16.model) == 0
    inputs = _inputs(model, torch.bfloat16)
    with torch.no_grad():
        a = loaded.model(**inputs, return_dict=False)[0]
        b = as_bf16.model(**inputs, return_dict=False)[0]
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


def test_the_step_distilled_model_is_told_by_its_keys(tmp_path):
    meanflow = tiny_transformer15(**DIMS, meanflow=True, seed=4)
    path = save_transformer15(meanflow, tmp_path / "my_model.safetensors")
    loaded = load_transformer(path)
    _same(meanflow, loaded.model)
    assert loaded.variant.name == "480p_i2v_step_distilled" and loaded.variant.recipe.steps == 12
    with pytest.raises(CheckpointError, match="step-distilled"):
        load_transformer(path, variant="480p_i2v")


def test_the_variant_input_overrides_and_an_unnamed_file_asks_for_it(tmp_path, model):
    path = save_transformer15(model, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="set the loader's variant"):
        load_transformer(path)
    assert load_transformer(path, variant="720p_i2v").variant.recipe.flow_shift == 7.0
    with pytest.raises(ValueError, match="variant must be one of"):
        load_transformer(path, variant="1080p_t2v")


def test_wrong_files_are_refused_by_their_header(tmp_path):
    old = save_transformer(tiny_transformer(text_dim=24, pooled_dim=12), tmp_path / "hunyuan_video_t2v_720p.safetensors")
    with pytest.raises(CheckpointError, match="13B"):
        load_transformer(old)
    vae_like = tmp_path / "hunyuanvideo15_vae_fp16.safetensors"
    save_file({"decoder.conv_in.conv.weight": torch.zeros(4, 32, 3, 3, 3)}, str(vae_like))
    with pytest.raises(CheckpointError, match="hunyuanvideo15_vae_fp16.safetensors: expected a HunyuanVideo 1.5"):
        load_transformer(vae_like, variant="720p_t2v")
    sr = save_transformer15(tiny_transformer15(**DIMS, sr=True), tmp_path / "hunyuanvideo1.5_720p_sr_distilled.safetensors")
    with pytest.raises(CheckpointError, match="not a T2V/I2V model|super-resolution DiT"):
        load_transformer(sr, variant="720p_t2v")
    base = save_transformer15(tiny_transformer15(**DIMS), tmp_path / "hunyuanvideo1.5_720p_t2v.safetensors")
    with pytest.raises(CheckpointError, match="T2V/I2V transformer"):
        load_transformer(base, variant="1080p_sr_distilled")


def test_the_real_size_layout_gives_the_real_config():
    with torch.device("meta"):
        real = HunyuanVideo15Transformer3DModel()
    shapes = {k: tuple(v.shape) for k, v in diffusers_to_authors(real.state_dict(), fused=False).items()}
    config = derive_config(shapes)
    for key in ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "num_layers",
                "num_refiner_layers", "mlp_ratio", "text_embed_dim", "text_embed_2_dim", "image_embed_dim"):
        assert config[key] == real.config[key], key
    assert tuple(config["rope_axes_dim"]) == tuple(real.config.rope_axes_dim) and config["num_layers"] == 54


def _inputs(model, dtype):
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(dtype)

    return dict(hidden_states=rand(1, 65, 2, 4, 6), timestep=torch.tensor([700.0]),
                encoder_hidden_states=rand(1, 7, DIMS["text_dim"]), encoder_attention_mask=torch.tensor([[1] * 5 + [0] * 2]),
                encoder_hidden_states_2=rand(1, 4, DIMS["byt5_dim"]), encoder_attention_mask_2=torch.tensor([[1, 1, 0, 0]]),
                image_embeds=rand(1, 3, DIMS["image_dim"]))


def test_comfyui_newer_fp8_names_load_like_scaled_fp8(tmp_path, model):
    """`<layer>.weight_scale` + `<layer>.comfy_quant` (ComfyUI's mixed-precision files) is scaled_fp8 renamed."""
    old = save_transformer15(model, tmp_path / "old_480p_t2v.safetensors", fp8=True)
    from safetensors.torch import load_file

    state = {}
    for key, value in load_file(str(old)).items():
        if key == "scaled_fp8":
            continue
        if key.endswith(".scale_weight"):
            layer = key[: -len(".scale_weight")]
            state[layer + ".weight_scale"] = value
            state[layer + ".comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
        else:
            state[key] = value
    save_file(state, str(tmp_path / "new_480p_t2v.safetensors"))
    a, b = load_transformer(old), load_transformer(tmp_path / "new_480p_t2v.safetensors")
    assert count_fp8_layers(b.model) == count_fp8_layers(a.model) > 0
    _same(a.model, b.model)
    state[next(k for k in state if k.endswith(".weight_scale"))] = torch.ones(4)
    save_file(state, str(tmp_path / "blockwise_480p_t2v.safetensors"))
    with pytest.raises(CheckpointError, match="one scale per tensor"):
        load_transformer(tmp_path / "blockwise_480p_t2v.safetensors")
