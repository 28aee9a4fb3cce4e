"""The speed options reach the image samplers too: mask-free attention gives the masked result, and a
step cache skips calls and says so. HunyuanCustom's quirky, non-prefix mask included."""

import dataclasses

import pytest
import torch
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import CustomRequest, generate_custom, prepare_custom
from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VRequest, generate_i2v, prepare_i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions


@pytest.fixture(scope="module")
def encoders():
    return tiny.tiny_text_encoders(seed=0, llava=True)


@pytest.fixture(scope="module")
def vae():
    return tiny.tiny_vae(seed=0)


@pytest.fixture(scope="module")
def picture():
    return torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(2))


def _loaded(encoders, variant):
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, variant=variant)
    return LoadedTransformer(model=model, variant=variant, source="test")


def _sample(encoders, vae, picture, variant, options, info=None):
    transformer = dataclasses.replace(_loaded(encoders, variant), speed=options)
    on_info = info.append if info is not None else None
    if variant == "custom":
        conditioning = prepare_custom(encoders, vae, picture, "a cat walks", width=64, height=48)
        request = CustomRequest(num_frames=5, steps=3, seed=1, cfg=3.0)
        return generate_custom(transformer, conditioning, request, on_info=on_info)
    conditioning = prepare_i2v(encoders, vae, picture, "a cat walks", variant=variant, resolution="custom", width=64,
                               height=48, negative_prompt="bad")
    return generate_i2v(transformer, conditioning, I2VRequest(num_frames=5, steps=3, seed=1, true_cfg=2.0),
                        on_info=on_info)["samples"]


@pytest.mark.parametrize("variant", ["i2v_v1", "i2v_v2", "custom"])
def test_default_attention_is_mask_free_and_equals_the_masked_path(encoders, vae, picture, variant):
    masked = _sample(encoders, vae, picture, variant, SpeedOptions(attention="masked"))
    info = []
    trimmed = _sample(encoders, vae, picture, variant, SpeedOptions(), info)
    torch.testing.assert_close(trimmed, masked, atol=1e-5, rtol=1e-5)
    assert "sdpa, mask-free" in info[0]


@pytest.mark.parametrize("variant", ["i2v_v2", "custom"])
def test_a_step_cache_skips_calls_in_the_image_samplers(encoders, vae, picture, variant):
    info = []
    _sample(encoders, vae, picture, variant, SpeedOptions(cache="first_block", cache_threshold=1e9), info)
    assert "4 of 6 transformer calls skipped" in info[0]


def test_the_custom_schedule_and_a_speed_cache_are_not_stacked(encoders, vae, picture):
    transformer = dataclasses.replace(_loaded(encoders, "custom"), speed=SpeedOptions(cache="teacache"))
    conditioning = prepare_custom(encoders, vae, picture, "a cat", width=64, height=48)
    with pytest.raises(ValueError, match="step_cache .* and the Speed Options cache 'teacache' both skip work"):
        generate_custom(transformer, conditioning, CustomRequest(num_frames=5, steps=30, step_cache=True))


@pytest.mark.parametrize("variant", ["i2v_v1", "i2v_v2", "custom"])
def test_offloaded_blocks_give_the_resident_result_in_the_image_samplers(encoders, vae, picture, variant):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import BLOCK_CONTAINERS
    from hunyuan_video_suite.pipelines.memory.offload import model_on_device

    torch.manual_seed(0)
    resident = _sample(encoders, vae, picture, variant, SpeedOptions())
    torch.manual_seed(0)
    transformer = _loaded(encoders, variant)
    with model_on_device(transformer.model, BLOCK_CONTAINERS, "cpu", 0) as offloader:
        if variant == "custom":
            conditioning = prepare_custom(encoders, vae, picture, "a cat walks", width=64, height=48)
            streamed = generate_custom(transformer, conditioning, CustomRequest(num_frames=5, steps=3, seed=1, cfg=3.0))
        else:
            conditioning = prepare_i2v(encoders, vae, picture, "a cat walks", variant=variant, resolution="custom",
                                       width=64, height=48, negative_prompt="bad")
            streamed = generate_i2v(transformer, conditioning,
                                    I2VRequest(num_frames=5, steps=3, seed=1, true_cfg=2.0))["samples"]
    assert offloader.offloaded_blocks == 2 and offloader.onload_count > 0
    torch.testing.assert_close(streamed, resident, rtol=0, atol=0)
