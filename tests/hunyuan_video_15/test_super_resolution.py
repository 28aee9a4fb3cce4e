"""HunyuanVideo 1.5 super-resolution on tiny weights (issue 19, item 5): the SR conditioning, the zeroing schedule
and the noise augmentation of `generate_sr` equal an independent restatement of the authors' SR pipeline
(`hyvideo/pipelines/hunyuan_video_sr_pipeline.py` with the base pipeline's `_prepare_cond_latents`,
`get_task_mask`, `prepare_latents`, `hyvideo/utils/data_utils.py` `generate_crop_size_list` and
`hyvideo/schedulers/scheduling_flow_match_discrete.py`), written here from their code, not from ours; the bucket
map equals theirs; the SR DiT loads as its variant and the samplers refuse what does not fit.

The one liberty is the randomness the authors leave to torch's global generator (`torch.randn_like` of the
augmentation): the restatement draws it as our module documents, from the seed's CPU generator after the fresh
noise, so that the results can be compared exactly.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hunyuan_video_suite.pipelines.demo.hv15_text import tiny_siglip
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_upsampler import tiny_upsampler
from hunyuan_video_suite.pipelines.demo.hv15_vae import tiny_vae15
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import ImageCondition15, Request15, generate
from hunyuan_video_suite.pipelines.hunyuan_video_15.super_resolution import (
    SRRequest,
    generate_sr,
    lq_steps,
    prepare_sr_image,
    sr_request,
    sr_size,
)
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import (
    LoadedTransformer15,
    keep_timesteps_exact,
    load_transformer,
)
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from PIL import Image

# A narrow image embedder (the real SigLIP width is 1152): cheaper on the CPU, and T2V's 729 zero tokens must take
# the transformer's own width, not a hard-coded 1152.
DIMS = dict(text_dim=32, byt5_dim=24, image_dim=64)
SCALING = 1.03682  # the VAE's scaling_factor: the authors' latents are VAE latents times it
SIZE_MAP = {"480p": 640, "720p": 960, "1080p": 1440}  # the SR pipeline's SizeMap
BASE_OF = {"720p": "480p", "1080p": "720p"}  # SR_PIPELINE_CONFIGS' base_resolution
RECIPE_STEPS = {"720p": 6, "1080p": 8}  # SR_PIPELINE_CONFIGS' num_inference_steps (flow_shift 2.0)
SEED = 11


# ----------------------------------------------------------------------------- the authors' formulation, restated


def authors_crop_sizes(base_size: int, patch_size: int = 16, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """data_utils.generate_crop_size_list: (wp * patch, hp * patch) for every grid of about (base/patch)^2 patches."""
    num_patches = round((base_size / patch_size) ** 2)
    sizes, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch_size, hp * patch_size))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


class AuthorsBucketMap:
    """Their BucketMap: both lists read as (w, h); each LR bucket goes to the first HR bucket of nearest w/h."""

    def __init__(self, lr_base: int, hr_base: int):
        self.lr = authors_crop_sizes(lr_base)
        self.hr = authors_crop_sizes(hr_base)
        hr_ratios = np.array([float(w) / float(h) for w, h in self.hr])
        self.map = {}
        for lr_w, lr_h in self.lr:
            self.map[(lr_w, lr_h)] = self.hr[int(np.abs(hr_ratios - float(lr_w) / float(lr_h)).argmin())]

    def __call__(self, lr_bucket: tuple[int, int]) -> tuple[int, int]:
        if lr_bucket not in self.map:
            raise ValueError(f"LR bucket {lr_bucket} not found in bucket map")
        return self.map[lr_bucket]


@functools.cache
def authors_bucket_map(resolution: str) -> AuthorsBucketMap:
    return AuthorsBucketMap(SIZE_MAP[BASE_OF[resolution]], SIZE_MAP[resolution])


def authors_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlowMatchDiscreteScheduler(shift, reverse=True).set_timesteps: float32 sigmas linspace(1, 0, N + 1) shifted
    s*sigma / (1 + (s - 1) * sigma); the model's timesteps are the first N sigmas times 1000."""
    sigmas = torch.linspace(1, 0, steps + 1)
    sigmas = (shift * sigmas) / (1 + (shift - 1) * sigmas)
    return sigmas, (sigmas[:-1] * 1000).to(torch.float32)


def authors_lq(lr_latents: torch.Tensor, resolution: str, upsampler, strength: float, seed: int):
    """(fresh noise, noised LQ latents, (width, height)) as their SR pipeline makes them from base latents that are
    in VAE space (a LATENT): scaled by 1.03682 (their lq_latents are the base pipeline's final latents), mapped to
    the HR bucket, resized per frame (bilinear, align_corners False), upsampled in fp32, then
    `(1 - t/1000) * lq + (t/1000) * noise` with t = 1000 * strength (add_noise_to_lq)."""
    lq = lr_latents.float() * SCALING
    batch, channels, frames, lr_h, lr_w = lq.shape
    width, height = authors_bucket_map(resolution)((lr_w * 16, lr_h * 16))
    shape = (batch, 32, frames, height // 16, width // 16)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32)  # prepare_latents
    augmentation = torch.randn(shape, generator=generator, dtype=torch.float32)  # their randn_like, drawn here
    per_frame = lq.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, lr_h, lr_w)  # b c f h w -> (b f) c h w
    per_frame = F.interpolate(per_frame, size=shape[-2:], mode="bilinear", align_corners=False)
    lq = per_frame.reshape(batch, frames, channels, *shape[-2:]).permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        lq = upsampler(lq.to(dtype=torch.float32)).to(latents.dtype)
    t = (torch.tensor([1000.0]) * strength).reshape(1, 1, 1, 1, 1)
    lq = (1 - t / 1000.0) * lq + (t / 1000.0) * augmentation
    return latents, lq, (width, height)


def authors_condition(lq: torch.Tensor, image: ImageCondition15 | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition, zero_lq_condition): [cond latent (32), task mask (1), lq (32), ones (1)] and the same with the
    LQ part and its ones zeroed (`_prepare_cond_latents`, `get_task_mask`, `_prepare_lq_cond_latents`)."""
    batch, channels, frames, height, width = lq.shape
    if image is not None:  # i2v: the first-frame latent repeated over the frames, then frames 1: zeroed
        cond = image.latent.float().repeat(batch, 1, frames, 1, 1)
        cond[:, :, 1:] = 0.0
    else:
        cond = torch.zeros(batch, channels, frames, height, width)
    task_mask = torch.zeros(frames)
    if image is not None:
        task_mask[0] = 1.0
    mask = torch.zeros(batch, 1, frames, height, width)
    mask[:, :, task_mask.nonzero().squeeze(1)] = 1.0  # merge_tensor_by_mask(zeros, ones, task_mask, dim=2)
    ones = torch.ones(batch, 1, frames, height, width)
    condition = torch.concat([cond, mask, lq, ones], dim=1)
    zero_lq = condition.clone()
    zero_lq[:, channels + 1 : 2 * channels + 1] = torch.zeros_like(lq)
    zero_lq[:, 2 * channels + 1] = 0
    return condition, zero_lq


@torch.no_grad()
def authors_sr(model, upsampler, prompt: TextEmbeds15, lr_latents, resolution, steps, strength, seed, meanflow,
               image: ImageCondition15 | None = None, shift: float = 2.0, zero_below: float | None = None
               ) -> torch.Tensor:
    """Their SR loop at CFG 1 (guidance_scale 1.0: one call, the prompt only); returns VAE-space latents.
    `zero_below` (1000 * strength, their `1000 * noise_scale`) only exists to show that the tests can fail."""
    zero_below = 1000 * strength if zero_below is None else zero_below
    latents, lq, _ = authors_lq(lr_latents, resolution, upsampler, strength, seed)
    condition, zero_lq_condition = authors_condition(lq, image)
    batch = latents.shape[0]
    if image is None:  # _prepare_vision_states: zeros for t2v
        vision_states = torch.zeros(batch, 729, DIMS["image_dim"])
    else:
        vision_states = image.siglip.float().repeat(batch, 1, 1)
    sigmas, timesteps = authors_schedule(steps, shift)
    for i, t in enumerate(timesteps):
        if t < zero_below:
            condition = zero_lq_condition
        model_input = torch.concat([latents, condition], dim=1)
        timestep_r = None
        if meanflow:
            timestep_r = (torch.tensor([0.0]) if i == len(timesteps) - 1 else timesteps[i + 1]).repeat(batch)
        noise_pred = model(hidden_states=model_input, timestep=t.repeat(batch), timestep_r=timestep_r,
                           encoder_hidden_states=prompt.qwen.repeat(batch, 1, 1),
                           encoder_attention_mask=prompt.qwen_mask.repeat(batch, 1),
                           encoder_hidden_states_2=prompt.byt5.repeat(batch, 1, 1),
                           encoder_attention_mask_2=prompt.byt5_mask.repeat(batch, 1),
                           image_embeds=vision_states, return_dict=False)[0]
        latents = latents.to(torch.float32) + noise_pred.float() * (sigmas[i + 1] - sigmas[i])  # Euler step
    return latents / SCALING


# ----------------------------------------------------------------------------- tiny parts


def _prompt(seed: int = 1) -> TextEmbeds15:
    generator = torch.Generator().manual_seed(seed)
    return TextEmbeds15(
        qwen=torch.randn(1, 12, DIMS["text_dim"], generator=generator),
        qwen_mask=torch.tensor([[1] * 9 + [0] * 3]),
        byt5=torch.randn(1, 8, DIMS["byt5_dim"], generator=generator) * torch.tensor([1.0] * 3 + [0.0] * 5)[:, None],
        byt5_mask=torch.tensor([[1] * 3 + [0] * 5]),
    )


PROMPT = _prompt()


@functools.cache
def _sr_model(meanflow: bool):
    # One block keeps the restated loop's diffusers forward, with its dense [L, L] masks over 4-9k tokens, quick.
    model = tiny_transformer15(**DIMS, sr=True, meanflow=meanflow, seed=4 if meanflow else 3, layers=1)
    keep_timesteps_exact(model)
    return model


@functools.cache
def _upsampler(resolution: str):
    return tiny_upsampler(resolution, seed=2)


def _loaded(resolution: str, meanflow: bool) -> LoadedTransformer15:
    return LoadedTransformer15(model=_sr_model(meanflow), variant=Variant(f"{resolution}_sr_distilled",
                                                                          sr_meanflow=meanflow), source="tiny")


def _lr_latents(frames: int, width: int, height: int, seed: int = 5) -> torch.Tensor:
    """Base latents in VAE space (a LATENT), of a base clip `width` x `height`."""
    return torch.randn(1, 32, frames, height // 16, width // 16, generator=torch.Generator().manual_seed(seed))


def _image(resolution: str, width: int, height: int, seed: int = 9) -> ImageCondition15:
    """I2V inputs built by hand at the SR size: a random first-frame latent and random SigLIP tokens."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 32, 1, height // 16, width // 16, generator=generator)
    siglip = torch.randn(1, 729, DIMS["image_dim"], generator=generator)
    return ImageCondition15(latent=latent, siglip=siglip, width=width, height=height, resolution=resolution)


# ----------------------------------------------------------------------------- 1. the SR loop


CASES = [  # (resolution, task, meanflow, strength, steps, frames, base width x height)
    ("720p", "i2v", False, 0.7, 2, 1, (848, 480)),  # t 1000 with the LQ, 667 without
    ("720p", "t2v", True, 0.5, 4, 1, (480, 848)),  # t 1000, 857, 667 with the LQ, 400 without (0.7: 2 with)
    ("1080p", "t2v", False, 0.7, 2, 1, (1280, 720)),
    ("1080p", "i2v", True, 0.5, 2, 1, (960, 960)),  # the LQ at both steps: 667 is not below 500
]


@pytest.mark.parametrize("resolution,task,meanflow,strength,steps,frames,base", CASES)
def test_generate_sr_equals_the_authors_sr_loop(resolution, task, meanflow, strength, steps, frames, base):
    lr = _lr_latents(frames, *base)
    width, height = authors_bucket_map(resolution)(base)
    image = _image(resolution, width, height) if task == "i2v" else None
    request = SRRequest(steps=steps, flow_shift=2.0, noise_augmentation=strength, seed=SEED)
    calls = []
    model = _sr_model(meanflow)
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        infos = []
        ours = generate_sr(_loaded(resolution, meanflow), _upsampler(resolution), PROMPT, lr, request, image=image,
                           on_info=infos.append)
    finally:
        hook.remove()
    assert len(calls) == steps  # CFG 1: one call per step
    assert infos[0].startswith(f"{width}x{height};")
    assert ours.shape == (1, 32, frames, height // 16, width // 16)
    assert ("timestep_r" in calls[0] and calls[0]["timestep_r"] is not None) == meanflow
    theirs = authors_sr(model, _upsampler(resolution), PROMPT, lr, resolution, steps, strength, SEED, meanflow,
                        image=image)
    # Our mask-free attention (valid context tokens only) and diffusers' padded masked attention sum in another
    # order: equal to float precision (4e-6 on values up to 13). A missing 1.03682, another zeroing step, mask or
    # MeanFlow input each move the result by far more (the next test, and mutations of the module tried by hand).
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_the_restatement_tells_the_recipes_apart():
    """The comparison above can fail: the authors' loop without the zeroing step or the MeanFlow input lands far
    from `generate_sr`, and another strength, seed or scaling changes the LQ latents it starts from."""
    resolution, lr, upsampler = "720p", _lr_latents(1, 848, 480), _upsampler("720p")
    model = _sr_model(True)
    request = SRRequest(steps=2, flow_shift=2.0, noise_augmentation=0.7, seed=SEED)
    ours = generate_sr(_loaded(resolution, True), upsampler, PROMPT, lr, request)

    def theirs(**change):
        args = dict(strength=0.7, seed=SEED, meanflow=True, lr_latents=lr) | change
        return authors_sr(model, upsampler, PROMPT, args.pop("lr_latents"), resolution, 2, **args)

    torch.testing.assert_close(ours, theirs(), atol=1e-5, rtol=1e-5)
    for other in (theirs(zero_below=0.0), theirs(meanflow=False)):  # the LQ never zeroed; no timestep_r
        assert (other - ours).abs().max() > 1e-3
    _, reference, _ = authors_lq(lr, resolution, upsampler, 0.7, SEED)  # the LQ the loop starts from changes with
    for strength, seed, latents in ((0.6, SEED, lr), (0.7, SEED + 1, lr), (0.7, SEED, lr * SCALING)):
        _, lq, _ = authors_lq(latents, resolution, upsampler, strength, seed)  # the strength, the seed, the scaling
        assert (lq - reference).abs().max() > 1e-3


# ----------------------------------------------------------------------------- 2. the zeroing schedule


@pytest.mark.parametrize("resolution,task,lq_count", [("720p", "i2v", 3), ("1080p", "t2v", 4)])
def test_the_lq_condition_is_zeroed_below_700_with_the_recipe(resolution, task, lq_count):
    base = {"720p": (848, 480), "1080p": (1280, 720)}[resolution]
    lr = _lr_latents(2 if resolution == "720p" else 1, *base)  # two frames: each resized alone
    width, height = authors_bucket_map(resolution)(base)
    image = _image(resolution, width, height) if task == "i2v" else None
    transformer = _loaded(resolution, False)
    request = sr_request(transformer.variant, seed=SEED)
    assert (request.steps, request.flow_shift, request.noise_augmentation) == (RECIPE_STEPS[resolution], 2.0, 0.7)
    _, timesteps = authors_schedule(request.steps, 2.0)
    assert int((timesteps >= 700).sum()) == lq_count == lq_steps(request.steps, 2.0, 0.7)

    seen = []

    def record(module, args, kwargs):
        seen.append((kwargs["hidden_states"].clone(), float(kwargs["timestep"][0])))

    hook = transformer.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate_sr(transformer, _upsampler(resolution), PROMPT, lr, request, image=image)
    finally:
        hook.remove()

    _, lq, _ = authors_lq(lr, resolution, _upsampler(resolution), 0.7, SEED)
    condition, zeroed = authors_condition(lq, image)
    assert len(seen) == request.steps
    with_lq = 0
    for (model_input, t), expected_t in zip(seen, timesteps.tolist()):
        assert model_input.shape[1] == 98 and t == pytest.approx(expected_t, abs=1e-3)
        torch.testing.assert_close(model_input[:, 32:65], condition[:, :33], atol=0, rtol=0)  # first frame + mask
        if t >= 700:
            with_lq += 1
            torch.testing.assert_close(model_input[:, 65:98], condition[:, 33:], atol=1e-6, rtol=1e-6)
            assert torch.equal(model_input[:, 97], torch.ones_like(model_input[:, 97]))
        else:
            assert not model_input[:, 65:98].any()
            torch.testing.assert_close(model_input[:, 32:98], zeroed, atol=0, rtol=0)
    assert with_lq == lq_count
    if image is not None:  # i2v: the first-frame latent and a mask of 1 at latent frame 0 only
        assert seen[0][0][:, 64, 0].eq(1).all() and not seen[0][0][:, 64, 1:].any()
        assert torch.equal(seen[0][0][:, 32:64, :1], image.latent) and not seen[0][0][:, 32:64, 1:].any()
    else:
        assert not seen[0][0][:, 32:65].any()


def test_lq_steps_follow_the_authors_threshold():
    for steps in (2, 4, 6, 8):
        _, timesteps = authors_schedule(steps, 2.0)
        for strength in (0.5, 0.7, 0.9):
            assert lq_steps(steps, 2.0, strength) == int((~(timesteps < 1000 * strength)).sum()), (steps, strength)
    assert (lq_steps(6, 2.0, 0.7), lq_steps(8, 2.0, 0.7)) == (3, 4)


# ----------------------------------------------------------------------------- 3. the bucket map


@pytest.mark.parametrize("resolution", ["720p", "1080p"])
def test_sr_size_is_the_authors_bucket_map_for_every_lr_bucket(resolution):
    bucket_map = authors_bucket_map(resolution)
    assert len(bucket_map.map) > 100
    for (lr_w, lr_h), expected in bucket_map.map.items():
        assert sr_size(lr_w, lr_h, resolution) == expected, (lr_w, lr_h)


def test_sr_size_examples_and_refusal():
    assert sr_size(848, 480, "720p") == (1280, 720)
    assert sr_size(480, 848, "720p") == (720, 1280)
    assert sr_size(1280, 720, "1080p") == (1904, 1072)
    assert sr_size(960, 960, "1080p") == (1440, 1440)
    with pytest.raises(ValueError, match="resolution must be one of 720p, 1080p"):
        sr_size(848, 480, "480p")


# ----------------------------------------------------------------------------- 4. loading and refusals


@pytest.mark.parametrize("meanflow", [False, True])
@pytest.mark.parametrize("resolution", ["720p", "1080p"])
def test_the_sr_dit_loads_as_its_variant(tmp_path, resolution, meanflow):
    model = tiny_transformer15(**DIMS, sr=True, meanflow=meanflow, layers=1)
    name = f"hunyuanvideo1.5_{resolution}_sr_distilled_fp16.safetensors"
    loaded = load_transformer(save_transformer15(model, tmp_path / name))
    assert loaded.variant.name == f"{resolution}_sr_distilled" and loaded.variant.is_sr
    assert loaded.variant.meanflow == meanflow  # from the weights: the name does not say
    assert loaded.model.config.in_channels == 98
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, atol=0, rtol=0, msg=key)
    # the authors' folder: named by its version string, or named otherwise with config.json's ideal_resolution
    for folder in (f"{resolution}_sr_distilled", "sr_transformer"):
        path = save_transformer15(model, tmp_path / "authors" / folder, layout="authors_folder",
                                  variant=f"{resolution}_sr_distilled")
        found = load_transformer(path).variant
        assert (found.name, found.meanflow) == (f"{resolution}_sr_distilled", meanflow)


def test_an_sr_dit_whose_name_says_no_resolution_is_refused(tmp_path):
    path = save_transformer15(tiny_transformer15(**DIMS, sr=True, layers=1), tmp_path / "hv15_sr_distilled.safetensors")
    with pytest.raises(CheckpointError, match="set the loader's variant to 720p_sr_distilled or 1080p_sr_distilled"):
        load_transformer(path)
    assert load_transformer(path, variant="1080p_sr_distilled").variant.name == "1080p_sr_distilled"
    with pytest.raises(CheckpointError, match="super-resolution DiT"):
        load_transformer(path, variant="720p_t2v")


def test_the_samplers_refuse_what_does_not_fit():
    sr_720 = _loaded("720p", False)
    lr = _lr_latents(1, 848, 480)
    with pytest.raises(ValueError, match="it lifts a finished base video"):
        generate(sr_720, PROMPT, None, Request15(width=96, height=64, num_frames=1, steps=1, cfg=1.0))
    base = LoadedTransformer15(model=_sr_model(False), variant=Variant("480p_t2v"), source="tiny")
    with pytest.raises(ValueError, match="load a super-resolution DiT"):
        generate_sr(base, _upsampler("720p"), PROMPT, lr, SRRequest(steps=1))
    with pytest.raises(ValueError, match="the upsampler is the 1080p one.*hunyuanvideo15_latent_upsampler_720p"):
        generate_sr(sr_720, _upsampler("1080p"), PROMPT, lr, SRRequest(steps=1))
    with pytest.raises(ValueError, match="the upsampler is the 720p one"):
        generate_sr(_loaded("1080p", False), _upsampler("720p"), PROMPT, _lr_latents(1, 1280, 720), SRRequest(steps=1))
    for latent in (torch.zeros(1, 16, 1, 30, 53), torch.zeros(1, 32, 30, 53)):  # a 13B latent; an image latent
        with pytest.raises(ValueError, match="latent must be a HunyuanVideo 1.5 video latent"):
            generate_sr(sr_720, _upsampler("720p"), PROMPT, latent, SRRequest(steps=1))
    for image in (_image("480p", 848, 480), _image("720p", 720, 1280), _image("1080p", 1280, 720)):
        with pytest.raises(ValueError, match=r"SR stage makes 1280x720 \(720p\): prepare it with prepare_sr_image"):
            generate_sr(sr_720, _upsampler("720p"), PROMPT, lr, SRRequest(steps=1), image=image)
    with pytest.raises(ValueError, match="noise_augmentation must be between 0 and 1"):
        generate_sr(sr_720, _upsampler("720p"), PROMPT, lr, SRRequest(steps=1, noise_augmentation=1.5))


def _authors_fit(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """get_image_condition_latents' transform (torchvision Resize LANCZOS to cover, CenterCrop) as uint8 pixels;
    torchvision's crop offsets are int(round((size - crop) / 2))."""
    original_height, original_width = picture.shape[:2]
    scale = max(width / original_width, height / original_height)
    resized = Image.fromarray(picture).resize((int(round(original_width * scale)), int(round(original_height * scale))),
                                              Image.LANCZOS)
    top, left = int(round((resized.height - height) / 2.0)), int(round((resized.width - width) / 2.0))
    return np.asarray(resized)[top : top + height, left : left + width]


def _authors_siglip_crop(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """data_utils.resize_and_center_crop: PIL resize to cover, PIL crop of the centred (float) box."""
    pil = Image.fromarray(picture)
    scale = max(width / pil.width, height / pil.height)
    resized = pil.resize((int(round(pil.width * scale)), int(round(pil.height * scale))), Image.LANCZOS)
    left, top = (resized.width - width) / 2, (resized.height - height) / 2
    return np.array(resized.crop((left, top, (resized.width + width) / 2, (resized.height + height) / 2)))


def test_prepare_sr_image_is_the_authors_sr_image_conditioning():
    """The first-frame latent at the size asked (the SR output size; a small one here, for the tiny VAE's sake on
    the CPU) and the SigLIP tokens of the picture's own bucket at the SR resolution, as the authors' SR pipeline
    (get_image_condition_latents at the output size; _prepare_vision_states at the transformer's resolution)."""
    vae, vision = tiny_vae15(seed=1), tiny_siglip(seed=2)
    picture = np.random.default_rng(3).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)  # 4:3
    image = torch.tensor(picture, dtype=torch.float32).unsqueeze(0) / 255
    width, height = 128, 64  # 2:1: neither the picture's aspect nor its bucket's, so both crops matter
    condition = prepare_sr_image(vae, vision, image, width, height, "720p")
    assert (condition.width, condition.height, condition.resolution) == (width, height, "720p")
    assert condition.latent.shape == (1, 32, 1, height // 16, width // 16)

    pixels = torch.from_numpy(_authors_fit(picture, width, height).copy()).float().div(255).permute(2, 0, 1)
    with torch.no_grad():
        latent = vae.encode((pixels * 2 - 1).unsqueeze(0).unsqueeze(2)).latent_dist.mode() * SCALING
    torch.testing.assert_close(condition.latent, latent, atol=1e-5, rtol=1e-5)

    # SigLIP: the picture's own nearest bucket at the SR resolution (get_closest_ratio on h/w rounded to 5
    # decimals over the (h, w)-read 720p list): 832x1104 for 4:3, not the output size.
    buckets = authors_crop_sizes(SIZE_MAP["720p"])
    ratios = np.array([round(float(h) / float(w), 5) for h, w in buckets])
    bucket_h, bucket_w = buckets[int(np.abs(ratios - 300 / 400).argmin())]
    assert (bucket_h, bucket_w) == (832, 1104)

    def tokens_of(crop: np.ndarray) -> torch.Tensor:  # the processor: bicubic to the square, /255, (x - 0.5) / 0.5
        size = vision.config.image_size
        square = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = torch.from_numpy((square / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
        with torch.no_grad():
            return vision(pixel_values=pixels).last_hidden_state

    torch.testing.assert_close(condition.siglip, tokens_of(_authors_siglip_crop(picture, bucket_w, bucket_h)),
                               atol=1e-5, rtol=1e-5)
    # the tokens of the crop to the output size differ: the comparison tells the two crops apart
    assert (tokens_of(_authors_siglip_crop(picture, width, height)) - condition.siglip).abs().max() > 1e-3
