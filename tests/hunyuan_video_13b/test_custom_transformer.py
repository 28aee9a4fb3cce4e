"""HunyuanCustom's reference tokens on diffusers' transformer match the authors' layout, on the same tiny weights."""

import pytest
import torch
from authors_custom_reference import AuthorsCustomModel
from diffusers import HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom_transformer import (
    CustomTransformer,
    LastBlockCache,
    token_positions,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_keys import diffusers_to_authors
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import rope_axes_for

HEADS, HEAD_DIM, TEXT_DIM, POOLED_DIM, CHANNELS = 2, 10, 24, 12, 4


@pytest.fixture(scope="module")
def models():
    """Two double and two single blocks (so 'before the last single block' is mid-stack), Custom: no guidance_in."""
    torch.manual_seed(3)
    model = HunyuanVideoTransformer3DModel(
        in_channels=CHANNELS, out_channels=CHANNELS, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        num_layers=2, num_single_layers=2, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
        guidance_embeds=False, text_embed_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
        rope_axes_dim=rope_axes_for(HEAD_DIM),
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    authors = AuthorsCustomModel(diffusers_to_authors(model.state_dict()), HEADS, rope_axes_for(HEAD_DIM))
    return model, authors


def _inputs(frames=2, height=6, width=8, text=7, seed=0):
    batch = 2
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, CHANNELS, frames, height, width, generator=g)
    ref = torch.randn(batch, CHANNELS, 1, height, width, generator=g)
    states = torch.randn(batch, text, TEXT_DIM, generator=g)
    # The authors' quirky masks: ones at the start and some at the end; and a plain one.
    mask = torch.zeros(batch, text, dtype=torch.long)
    mask[0, :3] = 1
    mask[0, -2:] = 1
    mask[1, :4] = 1
    pooled = torch.randn(batch, POOLED_DIM, generator=g)
    timestep = torch.tensor([900.0, 900.0])
    return latents, ref, states, mask, pooled, timestep


def _ours(model, latents, ref, states, mask, pooled, timestep, **kwargs):
    return CustomTransformer(model)(hidden_states=latents, timestep=timestep, encoder_hidden_states=states,
                                    encoder_attention_mask=mask, pooled_projections=pooled, ref_latents=ref, **kwargs)[0]


@torch.no_grad()
def test_matches_the_authors_layout_with_reference_tokens(models):
    model, authors = models
    latents, ref, states, mask, pooled, timestep = _inputs()
    ours = _ours(model, latents, ref, states, mask, pooled, timestep)
    theirs = authors(latents, timestep, ref, states, mask, pooled)
    assert ours.shape == latents.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_the_reference_changes_the_prediction_and_is_not_in_the_output(models):
    model, _ = models
    latents, ref, states, mask, pooled, timestep = _inputs()
    with_ref = _ours(model, latents, ref, states, mask, pooled, timestep)
    other_ref = _ours(model, latents, ref.flip(-1), states, mask, pooled, timestep)
    assert with_ref.shape == latents.shape  # one frame of reference tokens in, none out
    assert (with_ref - other_ref).abs().max() > 1e-3


@torch.no_grad()
def test_step_cache_runs_only_the_last_single_block_as_the_authors(models):
    model, authors = models
    latents, ref, states, mask, pooled, timestep = _inputs()
    cache = LastBlockCache()
    full = _ours(model, latents, ref, states, mask, pooled, timestep, cache=cache)
    assert cache.latent is not None and cache.latent.shape[1] == 3 * 4 + 2 * 3 * 4  # reference + video tokens
    authors(latents, timestep, ref, states, mask, pooled)
    later_t, later_latents = torch.tensor([500.0, 500.0]), latents * 0.5
    reused = _ours(model, later_latents, ref, states, mask, pooled, later_t, cache=cache, reuse_cache=True)
    theirs = authors(later_latents, later_t, ref, states, mask, pooled, is_cache=True)
    torch.testing.assert_close(reused, theirs, atol=1e-5, rtol=1e-5)
    fresh = _ours(model, later_latents, ref, states, mask, pooled, later_t)
    assert (reused - fresh).abs().max() > 1e-4 and (reused - full).abs().max() > 1e-4


def test_reference_rope_positions():
    positions = token_positions(2, 3, 4, reference=True)
    ref, video = positions[:, :12], positions[:, 12:]
    assert (ref[0] == -1).all()
    assert ref[1].tolist() == [h for h in range(3) for _ in range(4)]
    assert ref[2].tolist() == [w + 4 for _ in range(3) for w in range(4)]  # one full latent width to the right
    assert torch.equal(video, token_positions(2, 3, 4, reference=False))
    assert video[:, :5].tolist() == [[0] * 5, [0, 0, 0, 0, 1], [0, 1, 2, 3, 0]]


def test_wrong_reference_shapes_are_refused(models):
    model, _ = models
    latents, ref, states, mask, pooled, timestep = _inputs()
    with pytest.raises(ValueError, match="ref_latents must be one latent frame"):
        _ours(model, latents, ref[..., :4], states, mask, pooled, timestep)
    with pytest.raises(ValueError, match="reuse_cache needs a cache"):
        _ours(model, latents, ref, states, mask, pooled, timestep, cache=LastBlockCache(), reuse_cache=True)
