"""13B T2V and I2V (v1 concat, v2 token replace) with cfg_batching "batched" run both CFG branches in one model call,
prompts of different token counts included (the shorter padded with masked tokens), and give the sequential run's
latent; "sequential" (the default) and "auto" run one call per branch."""

from dataclasses import replace

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.denoise.text_embeds import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b import custom, t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VConditioning, I2VRequest, generate_i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v, same_length
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

TEXT_DIM, POOLED_DIM, CHANNELS = 32, 16, 16
ATTENTION = ("auto", "masked")  # mask-free (row by row on each prompt's valid tokens) and diffusers' masked path


def _embeds(valid: int, length: int, seed: int) -> TextEmbeds:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return TextEmbeds(torch.randn(1, length, TEXT_DIM, generator=g), mask, torch.randn(1, POOLED_DIM, generator=g))


def _loaded(variant: str, attention: str) -> LoadedTransformer:
    """A tiny float64 transformer (float32 rounding, amplified by CFG, would reach the tolerance by itself)."""
    model = tiny_transformer(TEXT_DIM, POOLED_DIM, CHANNELS, variant=variant, seed=7).double()
    transformer = LoadedTransformer(model=model, variant=variant, source="test")
    transformer.speed = replace(transformer.speed, attention=attention)
    return transformer


def _calls(model) -> tuple[list, object]:
    """The batch rows of every model call (at the first block's attention), and the hook to remove."""
    rows = []
    hook = model.transformer_blocks[0].attn.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    return rows, hook


def _t2v(transformer, batching: str, batch: int = 1):
    request = T2VRequest(width=64, height=48, num_frames=5, steps=3, true_cfg=3.0, seed=4, batch_size=batch,
                         cfg_batching=batching)
    rows, hook = _calls(transformer.model)
    try:  # prompts of 24 and 16 tokens, 9 and 5 of them valid
        latents = generate_t2v(transformer, _embeds(9, 24, 1), request, negative=_embeds(5, 16, 2))
    finally:
        hook.remove()
    return latents, rows


def _i2v(transformer, batching: str):
    image = torch.randn(1, CHANNELS, 1, 6, 8, generator=torch.Generator().manual_seed(3))
    conditioning = I2VConditioning(transformer.variant, _embeds(6, 12, 5), _embeds(10, 20, 6), image, 64, 48)
    request = I2VRequest(num_frames=5, steps=3, seed=2, true_cfg=2.5, cfg_batching=batching)
    rows, hook = _calls(transformer.model)
    try:
        latents = generate_i2v(transformer, conditioning, request)["samples"]
    finally:
        hook.remove()
    return latents, rows


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("batch", [1, 2])
def test_t2v_batched_equals_sequential(attention, batch):
    transformer = _loaded("t2v", attention)
    sequential, one_at_a_time = _t2v(transformer, "sequential", batch)
    batched, together = _t2v(transformer, "batched", batch)
    assert one_at_a_time == [batch] * 6 and together == [2 * batch] * 3  # 3 steps: two calls each, or one of both
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("variant", ["i2v_v1", "i2v_v2"])
def test_i2v_batched_equals_sequential(variant, attention):
    transformer = _loaded(variant, attention)
    sequential, one_at_a_time = _i2v(transformer, "sequential")
    batched, together = _i2v(transformer, "batched")
    assert one_at_a_time == [1] * 6 and together == [2] * 3
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=0)


def test_sequential_is_the_default_and_auto_stays_sequential():
    transformer = _loaded("t2v", "auto")
    assert T2VRequest().cfg_batching == I2VRequest().cfg_batching == "sequential"
    assert _t2v(transformer, "auto")[1] == [1] * 6
    assert t2v.CFG_BATCHING == custom.CFG_BATCHING  # the same choices as HunyuanCustom's (and the CLI's)


def test_without_cfg_there_is_nothing_to_batch():
    transformer = _loaded("t2v", "auto")
    rows, hook = _calls(transformer.model)
    request = T2VRequest(width=64, height=48, num_frames=5, steps=2, seed=4, cfg_batching="batched")
    try:
        generate_t2v(transformer, _embeds(9, 24, 1), request, negative=_embeds(5, 16, 2))
    finally:
        hook.remove()
    assert rows == [1, 1]


def test_the_shorter_prompt_is_padded_with_masked_tokens():
    long, short = _embeds(9, 24, 1), _embeds(5, 16, 2)
    padded_long, padded_short = same_length(long, short)
    assert padded_long is long and padded_short.seq_len == 24
    torch.testing.assert_close(padded_short.prompt_embeds[:, :16], short.prompt_embeds, atol=0, rtol=0)
    assert not padded_short.prompt_embeds[:, 16:].any() and padded_short.attention_mask.sum() == 5
    assert padded_short.pooled is short.pooled


@pytest.mark.parametrize("request_class", [T2VRequest, I2VRequest])
def test_an_unknown_cfg_batching_is_refused(request_class):
    with pytest.raises(ValueError, match="cfg_batching must be one of auto, batched, sequential; got 'always'"):
        request_class(cfg_batching="always").validate()
