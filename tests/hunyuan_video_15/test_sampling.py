"""HunyuanVideo 1.5 sampling on tiny weights: T2V latents equal diffusers' HunyuanVideo15Pipeline (fp32), CFG
batched as the authors run it equals diffusers' one pass per branch, the step-distilled model takes the
authors' MeanFlow step, and the I2V input is the authors' 65 channels."""

import numpy as np
import pytest
import torch
from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import tiny_vae15
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import (
    FirstFrameCondition,
    ImageCondition15,
    Request15,
    generate,
)
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15, keep_timesteps_exact
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions

DIMS = dict(text_dim=32, byt5_dim=24, image_dim=1152)  # SigLIP's width: T2V passes 729 x 1152 zeros
SCALING = 1.03682


def _loaded(variant: str, attention="masked", seed=0) -> LoadedTransformer15:
    model = tiny_transformer15(**DIMS, meanflow=variant.endswith("step_distilled"), seed=seed)
    keep_timesteps_exact(model)
    return LoadedTransformer15(model=model, variant=Variant(variant), source="tiny", speed=SpeedOptions(attention=attention))


def _embeds(valid_qwen: int, valid_byt5: int, seed: int) -> TextEmbeds15:
    generator = torch.Generator().manual_seed(seed)
    return TextEmbeds15(
        qwen=torch.randn(1, 12, DIMS["text_dim"], generator=generator),
        qwen_mask=torch.tensor([[1] * valid_qwen + [0] * (12 - valid_qwen)]),
        byt5=torch.randn(1, 8, DIMS["byt5_dim"], generator=generator) * (valid_byt5 > 0),
        byt5_mask=torch.tensor([[1] * valid_byt5 + [0] * (8 - valid_byt5)]),
    )


POSITIVE, NEGATIVE = _embeds(9, 3, 1), _embeds(4, 0, 2)  # the authors' negative has an empty byT5 input
REQUEST = dict(width=96, height=64, num_frames=5, steps=2, cfg=6.0, flow_shift=5.0, seed=7)


def _diffusers_t2v(transformer, request: Request15, noise: torch.Tensor) -> torch.Tensor:
    pipe = HunyuanVideo15Pipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=tiny_vae15(),
                                  scheduler=FlowMatchEulerDiscreteScheduler(shift=request.flow_shift),
                                  text_encoder_2=None, tokenizer_2=None,
                                  guider=ClassifierFreeGuidance(guidance_scale=request.cfg))
    out = pipe(prompt_embeds=POSITIVE.qwen, prompt_embeds_mask=POSITIVE.qwen_mask, prompt_embeds_2=POSITIVE.byt5,
               prompt_embeds_mask_2=POSITIVE.byt5_mask, negative_prompt_embeds=NEGATIVE.qwen,
               negative_prompt_embeds_mask=NEGATIVE.qwen_mask, negative_prompt_embeds_2=NEGATIVE.byt5,
               negative_prompt_embeds_mask_2=NEGATIVE.byt5_mask, height=request.height, width=request.width,
               num_frames=request.num_frames, num_inference_steps=request.steps, latents=noise.clone(),
               output_type="latent", return_dict=False)
    return out[0]


@pytest.mark.parametrize("attention", ["masked", "sdpa"])
@pytest.mark.parametrize("batch_cfg", [False, True])
def test_t2v_latents_equal_diffusers(attention, batch_cfg):
    transformer = _loaded("480p_t2v", attention)
    request = Request15(**REQUEST, batch_cfg=batch_cfg)
    ours = generate(transformer, POSITIVE, NEGATIVE, request)
    noise = torch.randn(request.latent_shape(), generator=torch.Generator("cpu").manual_seed(request.seed))
    theirs = _diffusers_t2v(transformer.model, request, noise)
    # Mask-free attention (valid tokens only) and batched branches sum in another order: equal to float precision,
    # which CFG 6 amplifies 11-fold (one masked pass per branch is diffusers' own path: 1e-5).
    tolerance = 1e-5 if attention == "masked" and not batch_cfg else 1e-4
    torch.testing.assert_close(ours * SCALING, theirs, atol=tolerance, rtol=tolerance)


def test_cfg_one_runs_one_pass_and_differs_from_cfg_six():
    transformer = _loaded("720p_t2v_distilled")
    calls = []
    transformer.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    distilled = generate(transformer, POSITIVE, None, Request15(**{**REQUEST, "cfg": 1.0}))
    assert len(calls) == REQUEST["steps"]
    guided = generate(transformer, POSITIVE, NEGATIVE, Request15(**REQUEST))
    assert (distilled - guided).abs().max() > 1e-3


def test_step_distilled_takes_the_authors_meanflow_step():
    """The authors' loop (hunyuan_video_pipeline.py, restated): Euler over shifted sigmas, each call told the
    next timestep (`timestep_r`, 0 at the last step), the model given float32 timesteps."""
    transformer = _loaded("480p_i2v_step_distilled")
    model = transformer.model
    first = torch.randn(1, 32, 1, 4, 6, generator=torch.Generator().manual_seed(5))
    image = ImageCondition15(latent=first, siglip=torch.randn(1, 729, 1152, generator=torch.Generator().manual_seed(6)),
                             width=96, height=64, resolution="480p")
    request = Request15(**{**REQUEST, "cfg": 1.0, "flow_shift": 7.0, "steps": 4})
    ours = generate(transformer, POSITIVE, None, request, image=image)

    sigmas = np.linspace(1.0, 0.0, request.steps + 1)
    sigmas = request.flow_shift * sigmas / (1 + (request.flow_shift - 1) * sigmas)
    latents = torch.randn(request.latent_shape(), generator=torch.Generator("cpu").manual_seed(request.seed))
    cond = torch.zeros(1, 33, *latents.shape[2:])
    cond[:, :32, :1] = first
    cond[:, 32, 0] = 1.0
    with torch.no_grad():
        for i in range(request.steps):
            t = torch.tensor([sigmas[i] * 1000.0], dtype=torch.float32)
            r = torch.tensor([sigmas[i + 1] * 1000.0 if i + 1 < request.steps else 0.0], dtype=torch.float32)
            velocity = model(hidden_states=torch.cat([latents, cond], dim=1), timestep=t, timestep_r=r,
                             encoder_hidden_states=POSITIVE.qwen, encoder_attention_mask=POSITIVE.qwen_mask,
                             encoder_hidden_states_2=POSITIVE.byt5, encoder_attention_mask_2=POSITIVE.byt5_mask,
                             image_embeds=image.siglip, return_dict=False)[0]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * velocity
    torch.testing.assert_close(ours * SCALING, latents, atol=1e-4, rtol=1e-4)  # float64 sigmas here, float32 there


def test_the_i2v_input_is_the_authors_65_channels():
    first = torch.randn(2, 32, 1, 3, 5)
    condition = FirstFrameCondition((2, 32, 4, 3, 5), first, "cpu", torch.float32)
    latents = torch.randn(2, 32, 4, 3, 5)
    model_input = condition.model_input(latents)
    expected_cond = first.repeat(1, 1, 4, 1, 1)
    expected_cond[:, :, 1:] = 0.0
    mask = torch.zeros(2, 1, 4, 3, 5)
    mask[:, :, 0] = 1.0
    torch.testing.assert_close(model_input, torch.cat([latents, expected_cond, mask], dim=1), atol=0, rtol=0)
    t2v = FirstFrameCondition((2, 32, 4, 3, 5), None, "cpu", torch.float32).model_input(latents)
    assert t2v.shape[1] == 65 and not t2v[:, 32:].any()


def test_jobs_the_variant_cannot_do_are_refused_before_sampling():
    image = ImageCondition15(torch.zeros(1, 32, 1, 4, 6), torch.ones(1, 729, 1152), 96, 64, "720p")
    with pytest.raises(ValueError, match="connect image conditioning"):
        generate(_loaded("720p_i2v"), POSITIVE, NEGATIVE, Request15(**REQUEST))
    with pytest.raises(ValueError, match="needs an I2V variant"):
        generate(_loaded("720p_t2v"), POSITIVE, NEGATIVE, Request15(**REQUEST), image=image)
    with pytest.raises(ValueError, match="sample at the image's size"):
        generate(_loaded("720p_i2v"), POSITIVE, NEGATIVE, Request15(**{**REQUEST, "width": 64}), image=image)
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1"):
        generate(_loaded("720p_t2v"), POSITIVE, NEGATIVE, Request15(**{**REQUEST, "num_frames": 10}))


def test_prompts_from_other_text_encoders_are_refused():
    wide = TextEmbeds15(torch.zeros(1, 12, 48), POSITIVE.qwen_mask, POSITIVE.byt5, POSITIVE.byt5_mask)
    with pytest.raises(ValueError, match="positive was encoded by a Qwen2.5-VL of width 48; this transformer reads width 32"):
        generate(_loaded("720p_t2v"), wide, NEGATIVE, Request15(**REQUEST))
