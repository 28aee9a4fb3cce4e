"""The HunyuanCustom nodes run from tiny files under the users' names, the fp8-scaled Custom checkpoint included."""

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import CUSTOM_NEGATIVE_PROMPT

SAMPLER_DEFAULTS = {"num_frames": 129, "steps": 30, "cfg": 7.5, "flow_shift": 13.0, "ip_cfg_scale": 0.0,
                    "step_cache": True, "cfg_batching": "auto"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_models")
    encoders = tiny.tiny_text_encoders(seed=0, llava=True)
    vae = tiny.tiny_vae(seed=0)
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                             vae.config.latent_channels, variant="custom", seed=0)
    written = tiny.save_text_encoders(encoders, root, layout="comfy", fp8=True)
    written["transformer"] = save_transformer(model, root / "hunyuan_video_custom_720p_fp8_scaled.safetensors",
                                              prefix="model.diffusion_model.", fp8=True)
    written["vae"] = tiny.save_vae(vae, root / "hunyuan_video_vae_bf16.safetensors", layout="authors")
    encoders.llm_tokenizer.save_pretrained(root / "tokenizers" / "llama_tokenizer")
    encoders.clip_tokenizer.save_pretrained(root / "tokenizers" / "clip_tokenizer")
    written["tokenizers"] = root / "tokenizers"
    return written, encoders.vision


@pytest.fixture(scope="module")
def loaded(files):
    files, vision = files
    transformer = _node("HYVS_TransformerLoader")(str(files["transformer"]), "auto", "fp32")[0]
    vae = _node("HYVS_VAELoader")(str(files["vae"]), "fp32")[0]
    encoders = _node("HYVS_TextEncoderLoader")(str(files["llm"]), str(files["clip"]), "fp32", str(files["tokenizers"]))[0]
    return transformer, vae, encoders, vision


def test_custom_chain_of_nodes_renders_a_video(loaded, files):
    transformer, vae, encoders, vision = loaded
    files, _ = files
    assert transformer.variant == "custom" and not transformer.model.config.guidance_embeds
    assert encoders.vision is None
    with_vision = _node("HYVS_LoadLlavaVision")(encoders, str(files["vision"]))[0]
    assert with_vision.vision.num_tokens == 16
    pixels = torch.rand(1, 3, 56, 56)
    torch.testing.assert_close(with_vision.vision(pixels), vision(pixels))  # the file holds the same tower
    image = torch.rand(1, 40, 24, 3, generator=torch.Generator().manual_seed(0))
    conditioning = _node("HYVS_CustomConditioning")(with_vision, vae, image, "a cat walks", CUSTOM_NEGATIVE_PROMPT,
                                                    "cat", 64, 48)[0]
    latent = _node("HYVS_CustomSampler")(transformer, conditioning, 5, 2, 7.5, 13.0, 0.0, True, "auto", 3)[0]
    assert latent["samples"].shape == (1, vae.config.latent_channels, 2, 6, 8)
    assert torch.isfinite(latent["samples"]).all()
    frames, _ = _node("HYVS_Decode")(vae, latent, 25.0, True, 256, 64, True, 16, 4)
    assert frames.shape == (5, 48, 64, 3)


def test_conditioning_without_vision_names_the_missing_file(loaded):
    _, vae, encoders, _ = loaded
    with pytest.raises(ValueError, match="clip_vision"):
        _node("HYVS_CustomConditioning")(encoders, vae, torch.rand(1, 8, 8, 3), "x", "", "person", 64, 48)


def test_sampler_defaults_are_the_authors():
    required = NODE_CLASS_MAPPINGS["HYVS_CustomSampler"].INPUT_TYPES()["required"]
    assert {name: required[name][1]["default"] for name in SAMPLER_DEFAULTS} == SAMPLER_DEFAULTS
    conditioning = NODE_CLASS_MAPPINGS["HYVS_CustomConditioning"].INPUT_TYPES()["required"]
    assert conditioning["negative_prompt"][1]["default"] == CUSTOM_NEGATIVE_PROMPT
    assert conditioning["subject"][1]["default"] == "object"  # the authors' positive default (their negative keeps "person")
    assert (conditioning["width"][1]["default"], conditioning["height"][1]["default"]) == (1280, 720)


def test_bad_values_are_refused_when_comfyui_validates_the_prompt():
    sampler = NODE_CLASS_MAPPINGS["HYVS_CustomSampler"]
    assert sampler.VALIDATE_INPUTS(num_frames=130, ip_cfg_scale=0.0, cfg=7.5).startswith("num_frames must be 4k+1")
    assert "ip_cfg_scale needs cfg above 1.0" in sampler.VALIDATE_INPUTS(num_frames=129, ip_cfg_scale=2.0, cfg=1.0)
    assert sampler.VALIDATE_INPUTS(num_frames=129, ip_cfg_scale=0.0, cfg=7.5) is True
    conditioning = NODE_CLASS_MAPPINGS["HYVS_CustomConditioning"]
    assert conditioning.VALIDATE_INPUTS(width=1000, height=720, subject="person").startswith("width must be a positive multiple of 16")
    assert "subject" in conditioning.VALIDATE_INPUTS(width=1280, height=720, subject=" ")
    assert conditioning.VALIDATE_INPUTS(width=512, height=896, subject="dog") is True
