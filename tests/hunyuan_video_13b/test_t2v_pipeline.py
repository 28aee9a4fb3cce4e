"""Our T2V pipeline gives what diffusers' HunyuanVideoPipeline gives on the same tiny weights and seed."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import (
    T2V_TEMPLATE,
    encode_prompt,
    template_crop_start,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.video.decoding import TilingOptions, configure_tiling, decode_latents

PROMPT = "a red fox runs through fresh snow"
NEGATIVE = "blurry, static"


@pytest.fixture(scope="module")
def components():
    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    transformer = tiny_transformer(
        encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, vae.config.latent_channels, seed=0
    )
    return encoders, vae, transformer


def _diffusers_pipeline(encoders, vae, transformer, shift):
    return HunyuanVideoPipeline(
        text_encoder=encoders.llm,
        tokenizer=encoders.llm_tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        text_encoder_2=encoders.clip,
        tokenizer_2=encoders.clip_tokenizer,
    )


def _ours(components, request, negative_prompt=None):
    encoders, vae, transformer = components
    positive = encode_prompt(encoders, PROMPT)
    negative = encode_prompt(encoders, negative_prompt) if negative_prompt else None
    return generate_t2v(transformer, positive, request, negative=negative)


@pytest.mark.parametrize("true_cfg", [1.0, 3.0])
def test_latents_and_frames_match_diffusers(components, true_cfg):
    encoders, vae, transformer = components
    request = T2VRequest(width=64, height=48, num_frames=9, steps=3, embedded_guidance=6.0, true_cfg=true_cfg,
                         flow_shift=7.0, seed=1234)
    latents = _ours(components, request, NEGATIVE if true_cfg > 1 else None)

    pipe = _diffusers_pipeline(encoders, vae, transformer, request.flow_shift)
    template = {"template": T2V_TEMPLATE, "crop_start": template_crop_start(encoders.llm_tokenizer, T2V_TEMPLATE)}
    kwargs = dict(
        prompt=PROMPT, height=48, width=64, num_frames=9, num_inference_steps=3, guidance_scale=6.0,
        prompt_template=template, true_cfg_scale=true_cfg,
        negative_prompt=NEGATIVE if true_cfg > 1 else None,
    )
    reference = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1234), output_type="latent").frames
    # diffusers returns the transformer's latents; ours are in the VAE's space, as ComfyUI's LATENT
    torch.testing.assert_close(latents * vae.config.scaling_factor, reference, atol=1e-5, rtol=1e-5)

    frames = decode_latents(vae, latents, TilingOptions(spatial=False, temporal=False))
    reference_video = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1234), output_type="pt").frames
    torch.testing.assert_close(frames, reference_video.permute(0, 1, 3, 4, 2), atol=1e-4, rtol=1e-4)


def test_same_seed_same_video_other_seed_other_video(components):
    request = T2VRequest(width=32, height=32, num_frames=5, steps=2, seed=7)
    first = _ours(components, request)
    again = _ours(components, request)
    other = _ours(components, T2VRequest(width=32, height=32, num_frames=5, steps=2, seed=8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_prompt_changes_the_result(components):
    encoders, _, transformer = components
    request = T2VRequest(width=32, height=32, num_frames=5, steps=2, seed=7)
    a = generate_t2v(transformer, encode_prompt(encoders, "a boat"), request)
    b = generate_t2v(transformer, encode_prompt(encoders, "a mountain at night"), request)
    assert not torch.allclose(a, b)


def test_template_crop_removes_exactly_the_template(components):
    encoders = components[0]
    crop = template_crop_start(encoders.llm_tokenizer, T2V_TEMPLATE)
    full = encoders.llm_tokenizer(T2V_TEMPLATE.format("hello"))["input_ids"]
    prompt_ids = encoders.llm_tokenizer(T2V_TEMPLATE.format("hello"))["input_ids"][crop:]
    assert 0 < crop < len(full)
    assert encoders.llm_tokenizer.decode(prompt_ids).startswith("hello")


def test_tiling_options_reach_the_vae(components, monkeypatch):
    _, vae, _ = components
    latents = torch.randn(1, vae.config.latent_channels, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    plain = decode_latents(vae, latents, TilingOptions(spatial=False, temporal=False))
    assert plain.shape == (1, 9, 80, 80, 3)
    # tiles as large as the video change nothing
    whole = decode_latents(vae, latents, TilingOptions(spatial=True, tile_size=128, tile_overlap=0,
                                                       temporal=True, tile_frames=16, frame_overlap=4))
    torch.testing.assert_close(whole, plain)
    calls = []
    original = vae.tiled_decode
    monkeypatch.setattr(vae, "tiled_decode", lambda *a, **k: (calls.append("tiled_decode"), original(*a, **k))[1])
    tiled = decode_latents(vae, latents, TilingOptions(spatial=True, tile_size=64, tile_overlap=32,
                                                       temporal=True, tile_frames=8, frame_overlap=4))
    assert tiled.shape == plain.shape and torch.isfinite(tiled).all()
    assert calls == ["tiled_decode"] * 3  # 3 latent frames, 2-frame chunks with stride 1: one spatial tiling each


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("width", 100, "width must be a positive multiple of 16, got 100"),
        ("height", 0, "height must be a positive multiple of 16, got 0"),
        ("num_frames", 10, r"num_frames must be 4k\+1"),
        ("steps", 0, "steps must be at least 1"),
        ("flow_shift", 0.0, "flow_shift must be above 0"),
        ("true_cfg", 0.5, r"cfg must be 1.0 \(off\) or more"),
        ("seed", -1, "seed must be between 0 and"),
    ],
)
def test_bad_requests_are_refused_before_sampling(components, field, value, message):
    request = T2VRequest(width=32, height=32, num_frames=5, steps=1)
    setattr(request, field, value)
    with pytest.raises(ValueError, match=message):
        _ours(components, request)


def test_cfg_without_negative_is_refused(components):
    with pytest.raises(ValueError, match="needs a negative prompt"):
        _ours(components, T2VRequest(width=32, height=32, num_frames=5, steps=1, true_cfg=2.0))


def test_image_to_video_transformers_are_refused(components):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

    encoders, vae, _ = components
    i2v = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                           vae.config.latent_channels, variant="i2v_v1")
    loaded = LoadedTransformer(model=i2v, variant="i2v_v1", source="test")
    with pytest.raises(ValueError, match=r"transformer is an image-to-video model \(i2v_v1\)"):
        generate_t2v(loaded, encode_prompt(encoders, "x"), T2VRequest(width=32, height=32, num_frames=5, steps=1))


def test_chunked_temporal_decode_equals_diffusers_framewise_decode():
    """Our temporal loop (chunks leave the device as they finish) gives diffusers' own result."""
    vae = tiny.tiny_vae(seed=3).float()
    latents = torch.randn(1, vae.config.latent_channels, 9, 8, 8, generator=torch.Generator().manual_seed(0))
    tiling = TilingOptions(spatial=True, tile_size=64, tile_overlap=16, temporal=True, tile_frames=8, frame_overlap=4)
    ours = decode_latents(vae, latents, tiling)
    configure_tiling(vae, tiling)
    with torch.no_grad():
        reference = vae.decode(latents, return_dict=False)[0]
    reference = (reference.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)
    assert ours.shape == reference.shape == (1, 33, 64, 64, 3)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
