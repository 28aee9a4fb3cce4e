"""The VAE loads from every layout users have: tiny files round-trip exactly, the real layouts
are recognised and their config derived (on the meta device), and wrong files fail clearly."""

import json

import pytest
import torch
from conftest import SHARED
from hunyuan_video_suite.pipelines.demo.tiny import save_vae, tiny_vae
from hunyuan_video_suite.pipelines.hunyuan_video_13b.vae_loading import (
    comfy_to_diffusers_vae,
    detect_vae_layout,
    diffusers_to_comfy_vae,
    load_vae,
    vae_from_state_dict,
)
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from safetensors.torch import save_file

LAYOUTS = json.loads((SHARED / "comfy" / "checkpoint_layouts.json").read_text())["files"]


def meta_state(layout: dict) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in layout.items()}


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0)


@pytest.fixture(scope="module")
def video():
    return torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def reference(vae, video):
    with torch.no_grad():
        latent = vae.encode(video).latent_dist.mode()
        return latent, vae.decode(latent).sample


def outputs(model, video, latent):
    with torch.no_grad():
        return model.encode(video).latent_dist.mode(), model.decode(latent).sample


def test_tiny_vae_keeps_the_real_compression(vae, reference):
    latent, decoded = reference
    assert latent.shape == (1, 16, 3, 4, 4)  # 9 frames -> 3, 32 px -> 4: 4x temporal, 8x spatial
    assert decoded.shape == (1, 3, 9, 32, 32)
    assert vae.config.scaling_factor == pytest.approx(0.476986)


def test_tiny_vae_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = tiny_vae(seed=0), tiny_vae(seed=0), tiny_vae(seed=1)
    assert torch.equal(torch.rand(3), expected)
    key = "encoder.conv_in.conv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


@pytest.mark.parametrize("layout, where", [
    ("diffusers", "root"), ("diffusers", "vae"), ("authors", "file"), ("comfy", "file"),
])
def test_every_layout_round_trips_exactly(tmp_path, vae, video, reference, layout, where):
    target = tmp_path / "vae" if layout == "diffusers" else tmp_path / f"hunyuan_video_vae_{layout}.safetensors"
    save_vae(vae, target, layout=layout)
    loaded = load_vae(tmp_path if where == "root" else target, dtype=torch.float32)
    latent, decoded = outputs(loaded, video, reference[0])
    assert torch.equal(latent, reference[0])
    assert torch.equal(decoded, reference[1])


def test_the_comfy_file_really_uses_comfy_names(tmp_path, vae):
    from safetensors import safe_open

    path = save_vae(vae, tmp_path / "v.safetensors", layout="comfy")
    keys = set(safe_open(str(path), "pt").keys())
    assert "encoder.down.0.block.0.conv1.conv.weight" in keys
    assert "decoder.up.0.block.0.conv1.conv.weight" in keys
    assert not any("down_blocks" in k or "up_blocks" in k for k in keys)


def test_prefixed_file_and_requested_dtype(tmp_path, vae):
    state = {f"first_stage_model.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(tmp_path / "prefixed.safetensors"))
    loaded = load_vae(tmp_path / "prefixed.safetensors", dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.state_dict()["post_quant_conv.weight"], vae.state_dict()["post_quant_conv.weight"].bfloat16())


# ----------------------------------------------------------------------------- the real layouts, on meta

@pytest.mark.parametrize("name", ["hunyuan_video_vae_authors_layout", "hunyuan_video_vae_comfy_layout"])
def test_real_layouts_derive_the_real_config(name):
    model = vae_from_state_dict(meta_state(LAYOUTS[name]), device="meta")
    config = model.config
    assert tuple(config.block_out_channels) == (128, 256, 512, 512)
    assert config.layers_per_block == 2
    assert config.latent_channels == 16
    assert (config.in_channels, config.out_channels) == (3, 3)
    assert config.norm_num_groups == 32
    assert config.mid_block_add_attention is True
    assert (config.temporal_compression_ratio, config.spatial_compression_ratio) == (4, 8)
    assert config.scaling_factor == pytest.approx(0.476986)


def test_comfy_names_map_exactly_onto_the_authors_layout():
    authors, comfy = LAYOUTS["hunyuan_video_vae_authors_layout"], LAYOUTS["hunyuan_video_vae_comfy_layout"]
    assert detect_vae_layout(authors) == "authors" and detect_vae_layout(comfy) == "comfy"
    converted = comfy_to_diffusers_vae(meta_state(comfy))
    assert {k: list(v.shape) for k, v in converted.items()} == authors
    back = diffusers_to_comfy_vae(meta_state(authors))
    assert {k: list(v.shape) for k, v in back.items()} == comfy


@pytest.mark.parametrize("name, kind", [
    ("hunyuan_video_t2v_720p_bf16", "transformer"),
    ("llava_llama3_text_comfy_layout", "Llama"),
    ("clip_l_comfy_layout", "CLIP"),
])
def test_other_real_files_are_refused_with_what_they_are(name, kind):
    with pytest.raises(CheckpointError, match=rf"{name}: expected a HunyuanVideo VAE.*{kind}"):
        vae_from_state_dict(meta_state(LAYOUTS[name]), device="meta", name=name)


# ----------------------------------------------------------------------------- bad files

def test_truncated_file(tmp_path, vae):
    path = save_vae(vae, tmp_path / "hunyuan_video_vae_bf16.safetensors", layout="authors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"hunyuan_video_vae_bf16\.safetensors.*truncated"):
        load_vae(path)


def test_junk_file(tmp_path):
    path = tmp_path / "vae.safetensors"
    path.write_bytes(b"this is not a weight file at all, just some text" * 10)
    with pytest.raises(CheckpointError, match=r"vae\.safetensors"):
        load_vae(path)


def test_transformer_file_given_as_vae(tmp_path):
    path = tmp_path / "hunyuan_video_t2v_720p_bf16.safetensors"
    save_file({"double_blocks.0.img_attn_qkv.weight": torch.zeros(6, 2), "txt_in.input_embedder.weight": torch.zeros(2, 2)},
              str(path))
    with pytest.raises(CheckpointError, match=r"hunyuan_video_t2v_720p_bf16\.safetensors: expected a HunyuanVideo VAE.*transformer"):
        load_vae(path)


def test_unknown_layout(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"foo.bar.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"mystery\.safetensors: expected a HunyuanVideo VAE.*unrecognised"):
        load_vae(path)


def test_vae_with_missing_tensors(tmp_path, vae):
    state = {k: v.contiguous() for k, v in vae.state_dict().items() if "mid_block.resnets.1.conv2" not in k}
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors: an unknown VAE layout.*missing.*mid_block\.resnets\.1\.conv2"):
        load_vae(tmp_path / "partial.safetensors")


def test_folder_holding_another_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "HunyuanVideoTransformer3DModel"}))
    with pytest.raises(CheckpointError, match=r"HunyuanVideoTransformer3DModel.*expected a HunyuanVideo VAE"):
        load_vae(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing_here\.safetensors: no such file"):
        load_vae(tmp_path / "nothing_here.safetensors")
