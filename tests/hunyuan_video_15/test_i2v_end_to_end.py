"""Image-to-video end to end on tiny models: prompt encoding, the picture's latent and SigLIP tokens, the 65-channel
input and the latents equal diffusers' HunyuanVideo15ImageToVideoPipeline (fp32), for a picture already at a bucket
size (where the authors' and diffusers' bucket rules agree and no resize happens)."""

import numpy as np
import pytest
import torch
from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15ImageToVideoPipeline
from hunyuan_video_suite.pipelines.demo.hv15_text import tiny_siglip, tiny_text_encoders15
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import tiny_vae15
from hunyuan_video_suite.pipelines.hunyuan_video_15.image_conditioning import prepare_image
from hunyuan_video_suite.pipelines.hunyuan_video_15.prompt_encoding import encode_pair
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import generate, recipe_request
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15, keep_timesteps_exact
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.hunyuan_video_15.vision_loading import image_processor
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions
from PIL import Image

PROMPT = 'A shop sign that reads "OPEN" in the rain, the camera slowly moves in.'
NEGATIVE = "blurry, low quality"  # no quoted text: diffusers' byT5 for it is empty too


@pytest.fixture(scope="module")
def parts():
    encoders, vision, vae = tiny_text_encoders15(), tiny_siglip(), tiny_vae15()
    model = tiny_transformer15(text_dim=encoders.qwen.config.hidden_size, byt5_dim=encoders.byt5.config.d_model,
                               image_dim=vision.config.hidden_size, seed=5)
    keep_timesteps_exact(model)
    picture = np.random.default_rng(0).integers(0, 256, size=(480, 848, 3), dtype=np.uint8)
    return encoders, vision, vae, model, picture


def test_i2v_latents_equal_diffusers(parts):
    encoders, vision, vae, model, picture = parts
    transformer = LoadedTransformer15(model=model, variant=Variant("480p_i2v"), source="tiny",
                                      speed=SpeedOptions(attention="masked"))
    image = torch.tensor(picture, dtype=torch.float32).unsqueeze(0) / 255
    condition = prepare_image(vae, vision, image, "480p")
    assert (condition.width, condition.height) == (848, 480)
    positive, negative = encode_pair(encoders, PROMPT, NEGATIVE)
    assert positive.byt5_mask.any() and not negative.byt5_mask.any()
    request = recipe_request(transformer.variant, 848, 480, num_frames=5, steps=2, seed=3, batch_cfg=False)
    ours = generate(transformer, positive, negative, request, image=condition)

    pipe = HunyuanVideo15ImageToVideoPipeline(
        text_encoder=encoders.qwen, tokenizer=encoders.qwen_tokenizer, transformer=model, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=request.flow_shift), text_encoder_2=encoders.byt5,
        tokenizer_2=encoders.byt5_tokenizer, guider=ClassifierFreeGuidance(guidance_scale=request.cfg),
        image_encoder=vision, feature_extractor=image_processor(vision))
    pipe.prompt_template_encode_start_idx = encoders.crop_start  # diffusers' 108 is the real tokenizer's
    noise = torch.randn(request.latent_shape(), generator=torch.Generator("cpu").manual_seed(request.seed))
    theirs = pipe(image=Image.fromarray(picture), prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=5,
                  num_inference_steps=2, latents=noise, output_type="latent", return_dict=False)[0]
    torch.testing.assert_close(ours * 1.03682, theirs, atol=1e-5, rtol=1e-5)
