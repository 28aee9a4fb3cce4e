"""Image-to-video: equal to diffusers' HunyuanVideoImageToVideoPipeline where it does the same thing, and
the rest (v2's clean first frame, dynamic mode, v1's frame count, buckets) checked by what defines it."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.denoise.flow_matching import initial_noise
from hunyuan_video_suite.pipelines.hunyuan_video_13b import i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VRequest, generate_i2v, prepare_i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.image_prompt import (
    I2V_TEMPLATE,
    IMAGE_TOKEN,
    MissingVisionError,
    encode_i2v_prompt,
    image_processor,
    to_uint8_images,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import template_crop_start
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer
from hunyuan_video_suite.pipelines.video.decoding import DROP_FRAMES_KEY, TilingOptions, decode_latents
from PIL import Image

PROMPT = "a cat walks on the beach"
NEGATIVE = "blurry, static"
WIDTH, HEIGHT, FRAMES = 64, 48, 9


@pytest.fixture(scope="module")
def encoders():
    return tiny.tiny_text_encoders(seed=0, llava=True)


@pytest.fixture(scope="module")
def vae():
    return tiny.tiny_vae(seed=0)


@pytest.fixture(scope="module")
def image():
    """8-bit values, so the PIL image diffusers gets holds exactly the same picture."""
    values = torch.rand(1, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(3))
    return (values * 255).round() / 255


def _transformer(encoders, variant):
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, variant=variant)
    return LoadedTransformer(model=model, variant=variant, source="test")


def _diffusers(encoders, vae, transformer):
    return HunyuanVideoImageToVideoPipeline(
        text_encoder=encoders.llava, tokenizer=encoders.llm_tokenizer, transformer=transformer.model, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=encoders.clip,
        tokenizer_2=encoders.clip_tokenizer, image_processor=image_processor(encoders.vision.image_size),
    )


def _template(encoders):
    """diffusers' template dict with the offsets of the tokenizer in use (its defaults are the real Llama-3's)."""
    tokenizer = encoders.llm_tokenizer
    start = tokenizer(I2V_TEMPLATE)["input_ids"].index(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    tokens = encoders.vision.num_tokens
    return {"template": I2V_TEMPLATE, "crop_start": template_crop_start(tokenizer, I2V_TEMPLATE),
            "image_emb_start": start, "image_emb_end": start + tokens, "image_emb_len": tokens}


@pytest.mark.parametrize("interleave", [1, 4])
@pytest.mark.parametrize("prompt", [PROMPT, "a red car in the city street, " * 40], ids=["short", "truncated"])
def test_prompt_embedding_matches_diffusers(encoders, vae, image, interleave, prompt):
    pipe = _diffusers(encoders, vae, _transformer(encoders, "i2v_v2"))
    pil = Image.fromarray(to_uint8_images(image)[0])
    reference, reference_mask = pipe._get_llama_prompt_embeds(
        pil, prompt, _template(encoders), device="cpu", dtype=torch.float32, image_embed_interleave=interleave
    )
    ours = encode_i2v_prompt(encoders, prompt, image, interleave)
    torch.testing.assert_close(ours.prompt_embeds, reference, atol=1e-6, rtol=1e-6)
    assert torch.equal(ours.attention_mask.long(), reference_mask.long())
    assert ours.attention_mask[0, : encoders.vision.num_tokens // interleave].all()  # image tokens come first


@pytest.mark.parametrize("variant,cfg", [("i2v_v1", 1.0), ("i2v_v1", 3.0), ("i2v_v2", 1.0)])
def test_latents_and_frames_match_diffusers(encoders, vae, image, variant, cfg):
    transformer = _transformer(encoders, variant)
    interleave = i2v.DEFAULT_INTERLEAVE[variant]
    conditioning = prepare_i2v(encoders, vae, image, PROMPT, variant=variant, resolution="custom", width=WIDTH,
                               height=HEIGHT, negative_prompt=NEGATIVE, interleave=interleave)
    latent = generate_i2v(transformer, conditioning, I2VRequest(num_frames=FRAMES, steps=3, seed=5, true_cfg=cfg))

    pipe = _diffusers(encoders, vae, transformer)
    kwargs = dict(image=Image.fromarray(to_uint8_images(image)[0]), prompt=PROMPT, height=HEIGHT, width=WIDTH,
                  num_frames=FRAMES, num_inference_steps=3, guidance_scale=6.0, prompt_template=_template(encoders),
                  image_embed_interleave=interleave, true_cfg_scale=cfg, negative_prompt=NEGATIVE if cfg > 1 else None)
    reference = pipe(**kwargs, generator=torch.Generator().manual_seed(5), output_type="latent").frames
    ours = latent["samples"] * vae.config.scaling_factor
    # diffusers' latent output leaves out v1's first latent frame (the one its decoded output drops).
    torch.testing.assert_close(ours[:, :, 1:] if variant == "i2v_v1" else ours, reference, atol=1e-5, rtol=1e-5)

    video = pipe(**kwargs, generator=torch.Generator().manual_seed(5), output_type="pt").frames
    frames = decode_latents(vae, latent["samples"], TilingOptions(spatial=False, temporal=False))
    frames = frames[:, latent.get(DROP_FRAMES_KEY, 0):]
    assert frames.shape[1] == (FRAMES - 4 if variant == "i2v_v1" else FRAMES)  # the authors drop v1's first 4
    torch.testing.assert_close(frames, video.permute(0, 1, 3, 4, 2), atol=1e-4, rtol=1e-4)


def _record_model_inputs(monkeypatch, model):
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["hidden_states"].detach().clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    return seen


def test_v2_keeps_the_first_frame_clean_after_every_step(encoders, vae, image, monkeypatch):
    transformer = _transformer(encoders, "i2v_v2")
    conditioning = prepare_i2v(encoders, vae, image, PROMPT, variant="i2v_v2", resolution="custom", width=WIDTH,
                               height=HEIGHT)
    after_steps = []
    original_fix = i2v.TokenReplaceConditioning.fix

    def spy(self, latents):
        fixed = original_fix(self, latents)
        after_steps.append(fixed)
        return fixed

    monkeypatch.setattr(i2v.TokenReplaceConditioning, "fix", spy)
    inputs = _record_model_inputs(monkeypatch, transformer.model)
    latent = generate_i2v(transformer, conditioning, I2VRequest(num_frames=FRAMES, steps=4, seed=1))
    assert len(inputs) == 4
    for step in inputs + after_steps[-4:]:
        torch.testing.assert_close(step[:, :, :1], conditioning.image_latent, atol=0, rtol=0)
    torch.testing.assert_close(latent["samples"][:, :, :1] * vae.config.scaling_factor, conditioning.image_latent)
    assert not torch.allclose(latent["samples"][:, :, 1:2], latent["samples"][:, :, :1])


@pytest.mark.parametrize("variant", ["i2v_v1", "i2v_v2"])
def test_dynamic_mode_starts_from_pure_noise_and_stability_from_a_trace_of_the_image(encoders, vae, image, variant,
                                                                                       monkeypatch):
    transformer = _transformer(encoders, variant)
    conditioning = prepare_i2v(encoders, vae, image, PROMPT, variant=variant, resolution="custom", width=WIDTH,
                               height=HEIGHT)
    inputs = _record_model_inputs(monkeypatch, transformer.model)
    noise = initial_noise((1, 16, 3, HEIGHT // 8, WIDTH // 8), 11)
    for mode, start in (("dynamic", noise), ("stability", 0.999 * noise + 0.001 * conditioning.image_latent)):
        inputs.clear()
        generate_i2v(transformer, conditioning, I2VRequest(num_frames=FRAMES, steps=2, seed=11, mode=mode))
        first = inputs[0][:, :16]
        if variant == "i2v_v2":  # frame 0 is the image itself in the model's input
            first, start = first[:, :, 1:], start[:, :, 1:]
        torch.testing.assert_close(first, start, atol=1e-7, rtol=0)


def test_mode_picks_its_shift_unless_set():
    assert I2VRequest(mode="stability").shift == 7.0
    assert I2VRequest(mode="dynamic").shift == 17.0
    assert I2VRequest(mode="dynamic", flow_shift=5.0).shift == 5.0


def test_v1_samples_the_authors_latent_length_and_gives_4_frames_fewer(encoders, vae, image):
    """The authors sample (num_frames - 1) // 4 + 1 latent frames for v1 and drop the first 4 decoded frames."""
    conditioning = prepare_i2v(encoders, vae, image, PROMPT, variant="i2v_v1", resolution="custom", width=WIDTH,
                               height=HEIGHT)
    for frames in (5, 13):
        latent = generate_i2v(_transformer(encoders, "i2v_v1"), conditioning, I2VRequest(num_frames=frames, steps=1))
        assert latent["samples"].shape[2] == (frames - 1) // 4 + 1
        decoded = decode_latents(vae, latent["samples"], TilingOptions(spatial=False, temporal=False))
        assert decoded[:, latent[DROP_FRAMES_KEY]:].shape[1] == frames - 4
    with pytest.raises(ValueError, match="num_frames must be 5 or more for I2V v1"):
        generate_i2v(_transformer(encoders, "i2v_v1"), conditioning, I2VRequest(num_frames=1, steps=1))


def _authors_crop_sizes(base_size, patch_size=32, max_ratio=4.0):
    """HunyuanVideo-I2V `generate_crop_size_list`, restated: walk the (rows, columns) patch grids of about
    (base/patch)^2 patches from the tallest down, keeping those within the aspect limit."""
    budget = round((base_size / patch_size) ** 2)
    sizes, rows, columns = [], budget, 1
    while rows > 0:
        if max(rows, columns) / min(rows, columns) <= max_ratio:
            sizes.append((rows * patch_size, columns * patch_size))
        if (columns + 1) * rows <= budget:
            columns += 1
        else:
            rows -= 1
    return sizes


def _authors_closest(height, width, sizes):
    """HunyuanVideo-I2V `get_closest_ratio` on numpy arrays, as their inference.py calls it."""
    ratios = np.array([round(float(h) / float(w), 5) for h, w in sizes])
    aspect = float(height) / float(width)
    differences = ratios - aspect
    side = differences <= 0 if aspect >= 1 else differences > 0
    candidates = np.flatnonzero(side)
    return sizes[candidates[np.argmin(np.abs(differences[candidates]))]]


def test_bucket_choice_is_the_authors_for_every_aspect_ratio():
    rng = np.random.default_rng(0)
    shapes = {(h, w) for h in range(200, 2001, 45) for w in range(200, 2001, 45)}
    shapes |= {(int(h), int(w)) for h, w in rng.integers(64, 4096, size=(400, 2))}
    shapes |= {(1080, 1920), (1920, 1080), (1000, 1000), (1000, 800), (800, 1000), (1024, 1025), (1025, 1024)}
    differences = []
    for resolution, base in i2v.RESOLUTION_BASES.items():
        sizes = _authors_crop_sizes(base)
        assert i2v.bucket_sizes(resolution) == sizes
        differences += [(resolution, h, w) for h, w in shapes if i2v.nearest_bucket(h, w, resolution) != _authors_closest(h, w, sizes)]
    assert len(shapes) > 1000 and differences == []
    # The issue's examples, where a nearest-on-either-side rule differs from the authors'.
    assert i2v.nearest_bucket(1080, 1920, "360p") == (352, 608)
    assert i2v.nearest_bucket(1080, 1920, "540p") == (544, 928)
    assert i2v.nearest_bucket(1000, 800, "720p") == (1056, 864)


def test_fit_image_keeps_the_aspect_and_takes_the_centre():
    picture = torch.zeros(1, 40, 100, 3)
    picture[:, :, 40:60] = 1.0  # a white band in the middle fifth
    fitted = i2v.fit_image(picture, 32, 32)
    assert fitted.shape == (1, 32, 32, 3)
    assert fitted[0, :, 16].min() > 0.99  # the centre column is the band, not stretched away
    assert fitted[0, :, 0].max() < 0.01 and fitted[0, :, -1].max() < 0.01
    assert i2v.fit_image(picture, 100, 40) is picture


def test_fit_image_is_the_authors_resize_and_centre_crop():
    """torchvision's Resize(the bucket's shorter side) on the 8-bit PIL image, then CenterCrop."""
    picture = torch.rand(1, 50, 81, 3, generator=torch.Generator().manual_seed(2))
    fitted = i2v.fit_image(picture, 64, 48)
    pil = Image.fromarray(to_uint8_images(picture)[0]).resize((int(48 * 81 / 50), 48), Image.BILINEAR)
    left = int(round((pil.width - 64) / 2.0))
    expected = torch.tensor(np.asarray(pil.crop((left, 0, left + 64, 48))), dtype=torch.float32) / 255
    torch.testing.assert_close(fitted[0], expected, atol=0, rtol=0)


def test_conditioning_reports_the_chosen_size(encoders, vae):
    wide = torch.rand(1, 36, 64, 3)
    conditioning = prepare_i2v(encoders, vae, wide, PROMPT, resolution="360p", negative_prompt=None)
    assert (conditioning.height, conditioning.width) == i2v.nearest_bucket(36, 64, "360p")
    assert conditioning.image_latent.shape[-2:] == (conditioning.height // 8, conditioning.width // 8)
    assert conditioning.negative is None


def test_wrong_inputs_are_refused_before_sampling(encoders, vae, image):
    with pytest.raises(ValueError, match="width must be a positive multiple of 16 for resolution 'custom', got 100"):
        prepare_i2v(encoders, vae, image, PROMPT, resolution="custom", width=100, height=48)
    with pytest.raises(ValueError, match="image must be one picture, got a batch of 2"):
        prepare_i2v(encoders, vae, image.repeat(2, 1, 1, 1), PROMPT, resolution="custom", width=64, height=48)
    t2v_only = tiny.tiny_text_encoders(seed=0)
    with pytest.raises(MissingVisionError, match="llava_llama3_vision.safetensors in ComfyUI's models/clip_vision"):
        prepare_i2v(t2v_only, vae, image, PROMPT, resolution="custom", width=64, height=48)

    v2 = prepare_i2v(encoders, vae, image, PROMPT, variant="i2v_v2", resolution="custom", width=64, height=48,
                     negative_prompt=None)
    with pytest.raises(ValueError, match="made for image-to-video v2 .* but the transformer is image-to-video v1"):
        generate_i2v(_transformer(encoders, "i2v_v1"), v2, I2VRequest(num_frames=5, steps=1))
    with pytest.raises(ValueError, match="the transformer is text-to-video; image-to-video needs the I2V v1"):
        generate_i2v(_transformer(encoders, "t2v"), v2, I2VRequest(num_frames=5, steps=1))
    with pytest.raises(ValueError, match="cfg above 1.0 needs the negative branch"):
        generate_i2v(_transformer(encoders, "i2v_v2"), v2, I2VRequest(num_frames=5, steps=1, true_cfg=2.0))
    for field, value, message in (("num_frames", 6, "num_frames must be 4k\\+1"), ("mode", "wild", "mode must be one of"),
                                  ("flow_shift", -1.0, "flow_shift must be above 0")):
        request = I2VRequest(num_frames=5, steps=1)
        setattr(request, field, value)
        with pytest.raises(ValueError, match=message):
            generate_i2v(_transformer(encoders, "i2v_v2"), v2, request)


def test_same_seed_same_video(encoders, vae, image):
    conditioning = prepare_i2v(encoders, vae, image, PROMPT, variant="i2v_v2", resolution="custom", width=WIDTH,
                               height=HEIGHT, negative_prompt=None)
    transformer = _transformer(encoders, "i2v_v2")
    runs = [generate_i2v(transformer, conditioning, I2VRequest(num_frames=5, steps=2, seed=seed, mode="dynamic"))
            for seed in (4, 4, 5)]
    assert torch.equal(runs[0]["samples"], runs[1]["samples"])
    assert not torch.allclose(runs[0]["samples"], runs[2]["samples"])


def test_the_real_vision_file_layout_gives_576_tokens_of_llama_width():
    """ComfyUI's llava_llama3_vision.safetensors layout (SPEC §2) at full size, on the meta device."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.vision_loading import vision_from_state_dict

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    state = {
        "vision_model.embeddings.class_embedding": meta(1024),
        "vision_model.embeddings.patch_embedding.weight": meta(1024, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": meta(577, 1024),
        "vision_model.pre_layrnorm.weight": meta(1024), "vision_model.pre_layrnorm.bias": meta(1024),
        "vision_model.post_layernorm.weight": meta(1024), "vision_model.post_layernorm.bias": meta(1024),
        "multi_modal_projector.linear_1.weight": meta(4096, 1024), "multi_modal_projector.linear_1.bias": meta(4096),
        "multi_modal_projector.linear_2.weight": meta(4096, 4096), "multi_modal_projector.linear_2.bias": meta(4096),
    }
    for i in range(24):
        layer = f"vision_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"{layer}self_attn.{proj}.weight"], state[f"{layer}self_attn.{proj}.bias"] = meta(1024, 1024), meta(1024)
        for norm in ("layer_norm1", "layer_norm2"):
            state[f"{layer}{norm}.weight"], state[f"{layer}{norm}.bias"] = meta(1024), meta(1024)
        state[f"{layer}mlp.fc1.weight"], state[f"{layer}mlp.fc1.bias"] = meta(4096, 1024), meta(4096)
        state[f"{layer}mlp.fc2.weight"], state[f"{layer}mlp.fc2.bias"] = meta(1024, 4096), meta(1024)
    vision = vision_from_state_dict(state, dtype=torch.bfloat16, device="meta")
    config = vision.tower.config
    assert (vision.image_size, vision.num_tokens, config.num_hidden_layers, config.num_attention_heads) == (336, 576, 24, 16)
    assert vision.projector.linear_2.out_features == 4096


def test_t2v_and_i2v_prompts_are_stripped_as_the_authors_and_custom_is_not(encoders, image):
    """hyvideo/inference.py strips the prompt and the negative prompt; HunyuanCustom's code does not."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom_prompt import encode_custom_prompts
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import encode_prompt

    padded = f"  {PROMPT}\n"
    for encode in (lambda text: encode_prompt(encoders, text), lambda text: encode_i2v_prompt(encoders, text, image, 4)):
        plain, stripped = encode(PROMPT), encode(padded)
        assert torch.equal(stripped.prompt_embeds, plain.prompt_embeds) and torch.equal(stripped.pooled, plain.pooled)
    square = torch.rand(1, encoders.vision.image_size, encoders.vision.image_size, 3)
    plain, _ = encode_custom_prompts(encoders, PROMPT, "bad", "cat", square)
    kept, _ = encode_custom_prompts(encoders, padded, "bad", "cat", square)
    assert not torch.equal(kept.prompt_embeds, plain.prompt_embeds)


def test_an_empty_negative_is_the_authors_default_and_interleave_stays_in_their_range(encoders, vae, image):
    """hyvideo/inference.py puts NEGATIVE_PROMPT_I2V in place of an empty negative prompt, and their text
    encoder thins the image tokens only for an interleave of 1 to 5."""
    args = dict(variant="i2v_v2", resolution="custom", width=WIDTH, height=HEIGHT)
    empty = prepare_i2v(encoders, vae, image, PROMPT, negative_prompt=" \n", **args)
    default = prepare_i2v(encoders, vae, image, PROMPT, **args)
    assert torch.equal(empty.negative.prompt_embeds, default.negative.prompt_embeds)
    with pytest.raises(ValueError, match="image_interleave must be 0 .* or 1 to 5, got 6"):
        prepare_i2v(encoders, vae, image, PROMPT, interleave=6, **args)
