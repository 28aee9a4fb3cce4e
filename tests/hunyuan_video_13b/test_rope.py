"""RIFLEx above 192 frames as HunyuanVideo-I2V's authors compute it, in every sampler, with a switch to turn it off."""

import math

import pytest
import torch
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import CustomRequest, generate_custom, prepare_custom
from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VRequest, generate_i2v, prepare_i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import encode_prompt
from hunyuan_video_suite.pipelines.hunyuan_video_13b.rope import RiflexRotaryPosEmbed, riflex_index, riflex_rope
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

LONG, SHORT = 197, 189  # latent frames 50 and 48; the authors switch RIFLEx on above 192 frames


def _authors_k(frames):
    """`k = 2 + ((frames + 3) // (4 * L_train))`, clamped to 4..8, L_train = 25 (hyvideo/inference.py)."""
    return max(4, min(8, 2 + (frames + 3) // (4 * 25)))


def _authors_axis(dim, positions, theta, k=None, latent_frames=None):
    """`get_1d_rotary_pos_embed_riflex` (use_real), restated."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    if k is not None:
        freqs[k - 1] = 0.9 * 2 * math.pi / latent_frames
    angles = torch.outer(positions, freqs)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def test_k_is_the_authors_and_nothing_changes_up_to_192_frames():
    for frames in range(1, 262, 4):
        expected = _authors_k(frames) if frames > 192 else None
        assert riflex_index(frames) == expected
        assert riflex_index(frames, "off") is None
    assert riflex_index(257) == 4 and riflex_index(197) == 4
    with pytest.raises(ValueError, match="riflex must be one of auto, off"):
        riflex_index(197, "on")


def test_rope_equals_the_authors_riflex_grid_on_the_time_axis_only():
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

    base = HunyuanVideoRotaryPosEmbed(patch_size=2, patch_size_t=1, rope_dim=[16, 56, 56], theta=256.0)  # the 13B model's
    latents = torch.zeros(1, 4, 50, 4, 6)
    k = riflex_index(LONG)
    cos, sin = RiflexRotaryPosEmbed(base, k)(latents)
    grid = torch.stack(torch.meshgrid(torch.arange(50.0), torch.arange(2.0), torch.arange(3.0), indexing="ij"))
    positions = grid.reshape(3, -1)
    axes = [_authors_axis(base.rope_dim[i], positions[i], base.theta, k if i == 0 else None, 50) for i in range(3)]
    torch.testing.assert_close(cos, torch.cat([a[0] for a in axes], dim=1), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, torch.cat([a[1] for a in axes], dim=1), rtol=0, atol=1e-6)
    plain_cos, plain_sin = base(latents)
    time_width = base.rope_dim[0]
    torch.testing.assert_close(cos[:, time_width:], plain_cos[:, time_width:], rtol=0, atol=1e-6)  # spatial axes as they were
    assert not torch.allclose(cos[:, :time_width], plain_cos[:, :time_width])
    model = tiny_transformer(16, 12, 4, seed=0)
    base = model.rope
    with riflex_rope(model, LONG):
        assert isinstance(model.rope, RiflexRotaryPosEmbed)
    with riflex_rope(model, SHORT), riflex_rope(model, LONG, "off"):
        assert model.rope is base
    assert model.rope is base


@pytest.fixture(scope="module")
def parts():
    encoders = tiny.tiny_text_encoders(seed=0, llava=True)
    return encoders, tiny.tiny_vae(seed=0)


def _run_each_sampler(parts, frames, riflex):
    encoders, vae = parts
    width = encoders.llm.config.hidden_size
    pooled = encoders.clip.config.hidden_size
    picture = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    out = {}
    t2v = LoadedTransformer(tiny_transformer(width, pooled, 16, seed=0), "t2v", "test")
    out["t2v"] = generate_t2v(t2v, encode_prompt(encoders, "a cat"),
                              T2VRequest(width=16, height=16, num_frames=frames, steps=1, riflex=riflex))
    for variant in ("i2v_v1", "i2v_v2"):
        model = LoadedTransformer(tiny_transformer(width, pooled, 16, variant=variant, seed=0), variant, "test")
        conditioning = prepare_i2v(encoders, vae, picture, "a cat", variant=variant, resolution="custom", width=16,
                                   height=16, negative_prompt=None)
        out[variant] = generate_i2v(model, conditioning, I2VRequest(num_frames=frames, steps=1, riflex=riflex))["samples"]
    custom = LoadedTransformer(tiny_transformer(width, pooled, 16, variant="custom", seed=0), "custom", "test")
    conditioning = prepare_custom(encoders, vae, picture, "a cat", width=16, height=16)
    out["custom"] = generate_custom(custom, conditioning, CustomRequest(num_frames=frames, steps=1, cfg=1.0, riflex=riflex))
    return out


def test_every_sampler_applies_riflex_above_192_frames_unless_switched_off(parts):
    auto, off = _run_each_sampler(parts, LONG, "auto"), _run_each_sampler(parts, LONG, "off")
    for name in auto:
        assert not torch.allclose(auto[name], off[name]), name
    auto, off = _run_each_sampler(parts, SHORT, "auto"), _run_each_sampler(parts, SHORT, "off")
    for name in auto:
        assert torch.equal(auto[name], off[name]), name
