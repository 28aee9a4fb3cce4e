"""The HunyuanVideo 1.5 chain as ComfyUI runs it, on tiny files: transformer loader (variant from the file name),
text encode, image conditioning, sampler with the variant's recipe (0 = the variant's), decode; refusals of jobs the
variant cannot do, before sampling; the 1.5 options nodes keep the 1.5 type."""

import numpy as np
import pytest
import torch
from hunyuan_video_suite.nodes.hunyuan_video_15 import i2v, loaders, options, sampler, text, vae, vision
from hunyuan_video_suite.nodes.types import HV15_TRANSFORMER
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hv15")
    encoders, siglip = tiny_text_encoders15(), tiny_siglip()
    dims = dict(text_dim=encoders.qwen.config.hidden_size, byt5_dim=encoders.byt5.config.d_model,
                image_dim=siglip.config.hidden_size)
    paths = save_text_encoders15(encoders, root / "text_encoders")
    paths["t2v"] = save_transformer15(tiny_transformer15(**dims, seed=1), root / "hunyuanvideo1.5_480p_t2v_cfg_distilled_fp16.safetensors")
    paths["i2v"] = save_transformer15(tiny_transformer15(**dims, meanflow=True, seed=2),
                                      root / "hunyuanvideo1.5_480p_i2v_step_distilled_fp8_scaled.safetensors", fp8=True)
    paths["vae"] = save_vae15(tiny_vae15(), root / "hunyuanvideo15_vae_fp16.safetensors")
    paths["siglip"] = save_siglip(siglip, root / "sigclip_vision_patch14_384.safetensors")
    return paths


@pytest.fixture(scope="module")
def shared(files):
    encoders = text.HYVSHV15TextEncoderLoader().load(str(files["qwen"]), str(files["byt5"]), "folder", "fp32",
                                                      str(files["folder"]))[0]
    positive, negative = text.HYVSHV15TextEncode().encode(encoders, 'a red sign that reads "HELLO"', "")
    return dict(positive=positive, negative=negative, vae=vae.HYVSHV15VAELoader().load(str(files["vae"]), "auto")[0])


def _sample(transformer, shared, **changes):
    inputs = dict(transformer=transformer, positive=shared["positive"], negative=shared["negative"], aspect_ratio="custom",
                  width=64, height=48, num_frames=5, steps=2, cfg=0.0, flow_shift=0.0, seed=1, cfg_batching="auto")
    return sampler.HYVSHV15Sampler().sample(**{**inputs, **changes})[0]["samples"]


def test_t2v_through_the_nodes(files, shared):
    transformer = loaders.HYVSHV15TransformerLoader().load(str(files["t2v"]), "auto", "auto")[0]
    assert transformer.variant.name == "480p_t2v_distilled"
    latents = _sample(transformer, shared)
    assert latents.shape == (1, 32, 2, 3, 4)
    frames, video = vae.HYVSHV15Decode().decode(shared["vae"], {"samples": latents}, 24.0, True, 256, 32, True, 16)
    assert frames.shape == (5, 48, 64, 3) and video is not None
    sized = _sample(transformer, shared, aspect_ratio="16:9", steps=1)
    assert sized.shape[-2:] == (480 // 16, 848 // 16)  # the authors' 480p bucket for 16:9
    with pytest.raises(ValueError, match="needs an I2V variant"):
        _sample(transformer, shared, image_conditioning=object())


def test_step_distilled_i2v_through_the_nodes(files, shared):
    transformer = loaders.HYVSHV15TransformerLoader().load(str(files["i2v"]), "auto", "auto")[0]
    assert transformer.variant.meanflow and transformer.variant.recipe.steps == 12
    siglip = vision.HYVSHV15VisionLoader().load(str(files["siglip"]), "fp32")[0]
    picture = torch.tensor(np.random.default_rng(0).random((1, 54, 96, 3)), dtype=torch.float32)
    condition, width, height = i2v.HYVSHV15ImageConditioning().encode(shared["vae"], siglip, picture, "480p")
    assert (width, height) == (848, 480)  # the 480p bucket nearest a 96x54 (16:9) picture
    calls = []
    transformer.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs.get("timestep_r")),
                                                with_kwargs=True)
    latents = _sample(transformer, shared, image_conditioning=condition, steps=2)
    assert latents.shape == (1, 32, 2, 480 // 16, 848 // 16)
    assert len(calls) == 2 and calls[-1].item() == 0.0  # cfg 1 (the recipe): one call a step; MeanFlow's last r is 0
    with pytest.raises(ValueError, match="connect image conditioning"):
        _sample(transformer, shared)
    wrong = i2v.HYVSHV15ImageConditioning().encode(shared["vae"], siglip, picture, "720p")[0]
    with pytest.raises(ValueError, match="made for 720p"):
        _sample(transformer, shared, image_conditioning=wrong)


def test_options_nodes_keep_the_1_5_type(files):
    transformer = loaders.HYVSHV15TransformerLoader().load(str(files["t2v"]), "auto", "auto")[0]
    fast = options.HYVSHV15SpeedOptions().apply(transformer, "sdpa", "teacache", 0.0, False)[0]
    assert fast.speed.cache == "teacache" and fast.model is transformer.model
    kept = options.HYVSHV15MemoryOptions().apply(fast, "resident blocks", 1, "off")[0]
    assert kept.memory.offload == 1 and kept.speed.cache == "teacache"
    for node in (options.HYVSHV15SpeedOptions, options.HYVSHV15MemoryOptions):
        assert node.RETURN_TYPES == (HV15_TRANSFORMER,) and node.INPUT_TYPES()["required"]["transformer"][0] == HV15_TRANSFORMER


def test_sampler_inputs_are_checked_when_queued():
    check = sampler.HYVSHV15Sampler.VALIDATE_INPUTS
    assert check(width=64, height=48, num_frames=121, steps=0, cfg=0.0, flow_shift=0.0) is True
    assert "num_frames must be 4k+1" in check(width=64, height=48, num_frames=120, steps=0, cfg=0.0, flow_shift=0.0)
    assert "cfg must be 0" in check(width=64, height=48, num_frames=121, steps=0, cfg=0.5, flow_shift=0.0)
    assert "multiple of 16" in check(width=70, height=48, num_frames=121, steps=0, cfg=0.0, flow_shift=0.0)
