"""Each step of the authors' HunyuanCustom recipe, on a tiny LLaVA (16 image tokens) and tiny VAE/transformer."""

import pytest
import torch
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.denoise.flow_matching import SamplingSettings
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import (
    CACHED_STEPS,
    CustomRequest,
    ReferenceTokens,
    generate_custom,
    pad_to_size,
    prepare_custom,
    sample_posterior,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom_prompt import (
    CUSTOM_NEGATIVE_PROMPT,
    custom_text,
    encode_custom_prompts,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import (
    MAX_PROMPT_TOKENS,
    T2V_TEMPLATE,
    template_crop_start,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.vae_loading import vae_constants
from hunyuan_video_suite.pipelines.hunyuan_video_13b.vision_loading import vision_constants

PROMPT = "A cat walks on the beach at sunset."
RED = torch.tensor([0.8, 0.2, 0.1])


@pytest.fixture(scope="module")
def parts():
    encoders = tiny.tiny_text_encoders(seed=0, llava=True)
    vae = tiny.tiny_vae(seed=0)
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                             vae.config.latent_channels, variant="custom", seed=0)
    return encoders, vae, LoadedTransformer(model, "custom", "tiny")


def _flat(color, height, width):
    return color.view(1, 1, 3).expand(height, width, 3).clone()


# ----------------------------------------------------------------------------- 1. reference padding

@pytest.mark.parametrize("src, target, inner", [
    ((20, 10), (64, 48), (20, 0, 24, 48)),   # tall picture: full height, centred between white columns
    ((10, 40), (64, 48), (0, 16, 64, 16)),   # wide picture: full width, white bands above and below
    ((21, 10), (56, 56), (15, 0, 26, 56)),   # width truncated to whole pixels (56 * 10 / 21 = 26.7)
])
def test_reference_is_padded_white_keeping_aspect_and_centred(src, target, inner):
    left, top, width, height = inner
    padded = pad_to_size(_flat(RED, *src), *target)
    assert padded.shape == (target[1], target[0], 3)
    inside = torch.zeros(target[1], target[0], dtype=torch.bool)
    inside[top:top + height, left:left + width] = True
    assert (padded[~inside] == 1.0).all()  # white 255
    expected = (RED * 255).round() / 255
    assert torch.allclose(padded[inside], expected.expand(int(inside.sum()), 3), atol=1e-6)


def test_reference_latent_is_a_seeded_posterior_sample_of_the_padded_frame(parts):
    encoders, vae, _ = parts
    image = torch.rand(1, 24, 16, 3, generator=torch.Generator().manual_seed(1))
    cond = prepare_custom(encoders, vae, image, PROMPT, width=64, height=48)
    frame = pad_to_size(image[0], 64, 48)
    with torch.no_grad():
        posterior = vae.encode((frame.permute(2, 0, 1) * 2 - 1)[None, :, None]).latent_dist
    draw = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    expected = (posterior.mean + posterior.std * draw) * vae_constants()["scaling_factor"]
    torch.testing.assert_close(sample_posterior(cond.reference, torch.Generator().manual_seed(7)), expected)
    assert cond.reference.shape == (1, 2 * vae.config.latent_channels, 1, 6, 8)
    other = sample_posterior(cond.reference, torch.Generator().manual_seed(8))
    assert (other - expected).abs().max() > 1e-3  # sampled, not the mean
    with torch.no_grad():
        white = vae.encode(torch.ones(1, 3, 1, 48, 64)).latent_dist.mean
    torch.testing.assert_close(cond.white.chunk(2, dim=1)[0], white)


# ----------------------------------------------------------------------------- 2. text fusion

def test_text_is_the_t2v_template_then_the_subject_sentence():
    assert custom_text("a dog runs", "dog") == T2V_TEMPLATE.format("a dog runs") + "\nThe dog looks like<image>"


def _llava_states(encoders, text, square):
    """The skip-2 hidden states of transformers' own LLaVA over `text` with the `<image>` token expanded
    as LLaVA's processor does, and `square` normalised with CLIP's mean/std (no resize: it is S x S)."""
    tokenizer, llava = encoders.llm_tokenizer, encoders.llava
    crop = template_crop_start(tokenizer, T2V_TEMPLATE)
    encoded = tokenizer(text, max_length=crop + MAX_PROMPT_TOKENS, padding="max_length", truncation=True, return_tensors="pt")
    ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    count = encoders.vision.num_tokens
    at = int((ids == image_id).nonzero())
    ids = torch.cat([ids[:at], torch.full((count,), image_id), ids[at + 1:]])
    mask = torch.cat([mask[:at], torch.ones(count, dtype=mask.dtype), mask[at + 1:]])
    c = vision_constants()
    pixels = ((square - torch.tensor(c["image_mean"])) / torch.tensor(c["image_std"])).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = llava(input_ids=ids[None], attention_mask=mask[None], pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[-3][0], mask, at, crop


def test_prompt_states_and_masks_follow_the_authors(parts):
    encoders, _, _ = parts
    side = encoders.vision.image_size
    picture = _flat(RED, side // 2, side)  # wide: no resize needed, white bands above and below
    square = pad_to_size(picture, side, side)
    positive, negative = encode_custom_prompts(encoders, PROMPT, CUSTOM_NEGATIVE_PROMPT, "cat", square[None])
    n = encoders.vision.num_tokens
    assert n == 16

    states, true_mask, at, crop = _llava_states(encoders, custom_text(PROMPT, "cat"), square)
    real = true_mask[crop:].bool()
    assert positive.prompt_embeds.shape[1] == MAX_PROMPT_TOKENS + n - 1
    torch.testing.assert_close(positive.prompt_embeds[0][real], states[crop:][real], atol=1e-5, rtol=1e-5)
    # The quirk: the N - 1 extra ones go at the end of the mask, not where the image tokens sit.
    text_ones = at - crop + 1  # prompt tokens up to and including the first image token
    expected = torch.zeros(MAX_PROMPT_TOKENS + n - 1, dtype=torch.long)
    expected[:text_ones] = 1
    expected[-(n - 1):] = 1
    assert positive.attention_mask[0].tolist() == expected.tolist()
    assert int(real.sum()) == int(positive.attention_mask.sum())

    # Negative: an all-white picture, the authors' default subject, the mask shortened by N - 1.
    white = torch.ones(side, side, 3)
    states, true_mask, at, crop = _llava_states(encoders, custom_text(CUSTOM_NEGATIVE_PROMPT, "person"), white)
    real = true_mask[crop:].bool()
    torch.testing.assert_close(negative.prompt_embeds[0][real], states[crop:][real], atol=1e-5, rtol=1e-5)
    kept = at - crop + 1
    assert negative.attention_mask[0].tolist() == [1] * kept + [0] * (MAX_PROMPT_TOKENS + n - 1 - kept)


def _legacy_llava_states(encoders, text, square):
    """The skip-2 hidden states of HunyuanCustom's pinned LLaVA (transformers 4.41.2), written from its
    legacy `_merge_input_ids_with_image_features`: text embeddings placed around the image features
    (right padding), position ids counted over the merged mask, and the embeddings of pad tokens
    zeroed; then the language model. Image features from transformers' own LLaVA."""
    tokenizer, llava = encoders.llm_tokenizer, encoders.llava
    crop = template_crop_start(tokenizer, T2V_TEMPLATE)
    encoded = tokenizer(text, max_length=crop + MAX_PROMPT_TOKENS, padding="max_length", truncation=True, return_tensors="pt")
    ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
    c = vision_constants()
    pixels = ((square - torch.tensor(c["image_mean"])) / torch.tensor(c["image_std"])).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = llava.model.get_image_features(pixel_values=pixels, vision_feature_layer=llava.config.vision_feature_layer,
                                                  vision_feature_select_strategy=llava.config.vision_feature_select_strategy)
        features = torch.cat(list(getattr(features, "pooler_output", features)))  # [patches, D]
        text_embeds = encoders.llm.get_input_embeddings()(ids)
    is_image = ids == tokenizer.convert_tokens_to_ids("<image>")
    new_positions = torch.cumsum(is_image * (len(features) - 1) + 1, 0) - 1
    length = int(is_image.sum()) * (len(features) - 1) + len(ids)
    merged = torch.zeros(length, text_embeds.shape[1])
    merged_mask = torch.zeros(length, dtype=torch.long)
    merged[new_positions[~is_image]] = text_embeds[~is_image]
    merged_mask[new_positions[~is_image]] = mask[~is_image]
    for_image = torch.ones(length, dtype=torch.bool)
    for_image[new_positions[~is_image]] = False
    merged[for_image] = features
    merged_mask[for_image] = 1
    positions = (merged_mask.cumsum(0) - 1).masked_fill(merged_mask == 0, 1)
    merged[new_positions[ids == tokenizer.pad_token_id]] = 0
    with torch.no_grad():
        out = encoders.llm(inputs_embeds=merged[None], attention_mask=merged_mask[None], position_ids=positions[None],
                           output_hidden_states=True)
    return out.hidden_states[-3][0], crop


def test_short_prompts_read_the_pad_positions_of_the_legacy_llava_merge(parts):
    """Through the mask quirk the refiner reads the last N - 1 positions, which for a short prompt are
    pad tokens; HunyuanCustom's transformers zeroed their input embeddings, so their states are those."""
    encoders, _, _ = parts
    side = encoders.vision.image_size
    square = pad_to_size(_flat(RED, side // 2, side), side, side)
    positive, _ = encode_custom_prompts(encoders, PROMPT, CUSTOM_NEGATIVE_PROMPT, "cat", square[None])
    legacy, crop = _legacy_llava_states(encoders, custom_text(PROMPT, "cat"), square)
    torch.testing.assert_close(positive.prompt_embeds[0], legacy[crop:], atol=1e-5, rtol=1e-5)

    n = encoders.vision.num_tokens
    read_by_refiner = positive.attention_mask[0, -(n - 1):]
    assert read_by_refiner.all()
    current, _, _, crop = _llava_states(encoders, custom_text(PROMPT, "cat"), square)  # today's transformers: no zeroing
    assert (current[crop:][-(n - 1):] - legacy[crop:][-(n - 1):]).abs().max() > 1e-3


def test_subject_word_is_checked(parts):
    encoders, vae, _ = parts
    for bad in ("", "  ", "cat<image>", "two\nlines"):
        with pytest.raises(ValueError, match="subject"):
            prepare_custom(encoders, vae, torch.rand(1, 8, 8, 3), PROMPT, subject=bad, width=64, height=48)


def test_a_prompt_that_would_lose_the_image_token_is_refused(parts):
    encoders, vae, _ = parts
    with pytest.raises(ValueError, match="prompt is too long for HunyuanCustom"):
        prepare_custom(encoders, vae, torch.rand(1, 8, 8, 3), "cat " * 300, width=64, height=48)


def test_text_encoders_without_vision_are_refused(parts):
    _, vae, _ = parts
    with pytest.raises(ValueError, match="llava_llama3_vision.safetensors"):
        prepare_custom(tiny.tiny_text_encoders(seed=0), vae, torch.rand(1, 8, 8, 3), PROMPT, width=64, height=48)


# ----------------------------------------------------------------------------- 3. branches, cache, sampling

def test_the_reference_goes_to_both_cfg_branches_and_white_with_the_image_branch():
    ref, white = torch.full((1, 4, 1, 2, 2), 2.0), torch.full((1, 4, 1, 2, 2), -1.0)
    plain = ReferenceTokens(ref, white, image_branch=False, step_cache=False)
    assert torch.equal(plain.call_kwargs(("positive",))["ref_latents"], ref)
    assert torch.equal(plain.call_kwargs(("negative",))["ref_latents"], ref)
    assert torch.equal(plain.call_kwargs(("positive", "negative"))["ref_latents"], torch.cat([ref, ref]))
    ip = ReferenceTokens(ref, white, image_branch=True, step_cache=False)
    batched = ip.call_kwargs(("positive", "negative", "image"))["ref_latents"]
    assert torch.equal(batched, torch.cat([white, white, ref]))


def test_the_authors_cache_schedule_applies_at_30_steps_only():
    refs = ReferenceTokens(torch.zeros(1), torch.zeros(1), image_branch=False, step_cache=True)
    reused = set()
    for index in range(30):
        refs.begin_step(index, 30)
        if refs.call_kwargs(("positive",))["reuse_cache"]:
            reused.add(index)
    assert reused == set(CACHED_STEPS) == {11, 12, 14, 15, 17, 18, 20, 21}
    for index in range(20):
        refs.begin_step(index, 20)
        assert not refs.call_kwargs(("positive",))["reuse_cache"]
    off = ReferenceTokens(torch.zeros(1), torch.zeros(1), image_branch=False, step_cache=False)
    off.begin_step(11, 30)
    assert "cache" not in off.call_kwargs(("positive",))


def test_image_cfg_scale_decays_linearly_to_one():
    settings = SamplingSettings(steps=30, image_cfg=3.0)
    scales = [settings.image_cfg_at(i) for i in range(30)]
    assert scales[0] == 3.0
    assert scales[-1] == pytest.approx(1.0, abs=1e-3)
    steps = [a - b for a, b in zip(scales, scales[1:])]
    assert max(steps) - min(steps) < 1e-9


def test_sampling_is_seeded_and_batched_cfg_matches_sequential(parts):
    encoders, vae, transformer = parts
    image = torch.rand(1, 30, 20, 3, generator=torch.Generator().manual_seed(2))
    cond = prepare_custom(encoders, vae, image, PROMPT, subject="cat", width=64, height=48)
    request = dict(num_frames=5, steps=3, seed=11, step_cache=False)
    sequential = generate_custom(transformer, cond, CustomRequest(**request, cfg_batching="sequential"))
    assert sequential.shape == (1, 16, 2, 6, 8)
    batched = generate_custom(transformer, cond, CustomRequest(**request, cfg_batching="batched"))
    torch.testing.assert_close(batched, sequential, atol=1e-3, rtol=1e-3)
    again = generate_custom(transformer, cond, CustomRequest(**request, cfg_batching="sequential"))
    assert torch.equal(again, sequential)
    other_seed = generate_custom(transformer, cond, CustomRequest(**{**request, "seed": 12}, cfg_batching="sequential"))
    assert (other_seed - sequential).abs().max() > 1e-2
    with_ip = generate_custom(transformer, cond, CustomRequest(**request, ip_cfg_scale=2.0))
    assert (with_ip - sequential).abs().max() > 1e-3
    ip_batched = generate_custom(transformer, cond, CustomRequest(**request, ip_cfg_scale=2.0, cfg_batching="batched"))
    torch.testing.assert_close(ip_batched, with_ip, atol=1e-3, rtol=1e-3)


def test_samplers_refuse_the_other_kind_of_transformer(parts):
    encoders, vae, transformer = parts
    cond = prepare_custom(encoders, vae, torch.rand(1, 8, 8, 3), PROMPT, width=64, height=48)
    t2v_model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, seed=0)
    with pytest.raises(ValueError, match="Custom sampler needs the HunyuanCustom transformer"):
        generate_custom(LoadedTransformer(t2v_model, "t2v", "tiny"), cond, CustomRequest(num_frames=1, steps=1))
    with pytest.raises(ValueError, match="Custom Ref2V Conditioning and Custom Sampler"):
        generate_t2v(transformer, cond.positive, T2VRequest(width=64, height=48, num_frames=1, steps=1))


@pytest.mark.parametrize("changes, message", [
    ({"num_frames": 8}, "num_frames must be 4k\\+1"),
    ({"cfg": 0.5}, "cfg must be 1.0"),
    ({"ip_cfg_scale": 2.0, "cfg": 1.0}, "ip_cfg_scale needs cfg above 1.0"),
    ({"cfg_batching": "sometimes"}, "cfg_batching must be one of auto, batched, sequential"),
    ({"steps": 0}, "steps must be at least 1"),
])
def test_bad_requests_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        CustomRequest(**changes).validate()


def test_step_cache_skips_all_but_the_last_block_on_the_scheduled_steps(parts):
    encoders, vae, transformer = parts
    cond = prepare_custom(encoders, vae, torch.rand(1, 8, 8, 3), PROMPT, width=32, height=32)
    model = transformer.model
    calls = {"first": 0, "last": 0}
    hooks = [model.transformer_blocks[0].register_forward_hook(lambda *_: calls.__setitem__("first", calls["first"] + 1)),
             model.single_transformer_blocks[-1].register_forward_hook(lambda *_: calls.__setitem__("last", calls["last"] + 1))]
    try:
        request = dict(num_frames=1, steps=30, seed=4, cfg_batching="sequential")
        cached = generate_custom(transformer, cond, CustomRequest(**request, step_cache=True))
        assert calls == {"first": 2 * (30 - len(CACHED_STEPS)), "last": 2 * 30}  # two CFG branches a step
        uncached = generate_custom(transformer, cond, CustomRequest(**request, step_cache=False))
    finally:
        for hook in hooks:
            hook.remove()
    assert (cached - uncached).abs().max() > 1e-4
    assert torch.isfinite(cached).all()
