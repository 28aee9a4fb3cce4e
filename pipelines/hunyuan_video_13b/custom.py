"""HunyuanCustom reference-to-video: the subject of one reference image kept through a generated video.

The recipe is the authors' (hymm_sp/sample_batch.py, data_kits, the Custom pipeline):
1. the reference is padded with white to the video's aspect ratio and size (aspect kept, centred),
   scaled to [-1, 1] and VAE-encoded as one latent frame; the authors *sample* the posterior, so
   the latent depends on the job's seed; times the VAE scaling factor it is `ref_latents`;
2. text: see `custom_prompt` (the reference padded white to the vision tower's square);
3. the transformer sees the reference tokens before the video tokens (`custom_transformer`), the
   same reference in the positive and negative branch; real CFG 7.5, no guidance embedding,
   shift 13, 30 steps, 129 frames;
4. optional `ip_cfg_scale`: a third branch, positive prompt with the reference, against the two
   others given the latent of an all-white image;
5. optional step cache, at exactly 30 steps as the authors have it: on steps 11, 12, 14, 15, 17,
   18, 20, 21 only the last single block runs, on the hidden state kept from the step before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..denoise.flow_matching import (
    LatentConditioning,
    PreviewCallback,
    SamplingSettings,
    StepCallback,
    denoise,
    initial_noise,
)
from ..lora.run import loras_for_run, with_lora_summary
from ..speed.options import open_speed
from .custom_prompt import CUSTOM_NEGATIVE_PROMPT, DEFAULT_SUBJECT, encode_custom_prompts
from .custom_transformer import CustomTransformer, LastBlockCache
from .image_prompt import require_vision
from .lora_keys import FAMILY
from .prompt_encoding import TextEmbeds
from .rope import check_riflex, riflex_rope
from .t2v import CFG_BATCHING  # noqa: F401 - HunyuanCustom's choices are T2V's (the Custom node lists them)
from .t2v import SIZE_MULTIPLE, VAE_SPATIAL, VAE_TEMPORAL, check_cfg_batching, check_sampling
from .vae_loading import vae_constants

WHITE = 1.0
CUSTOM_SIZES = ((1280, 720), (720, 1280), (896, 512), (512, 896))  # (width, height) the authors run
CACHE_STEPS = 30
CACHED_STEPS = frozenset({11, 12, 14, 15, 17, 18, 20, 21})
# Activation memory of one guidance branch, in hidden-state widths per token (bf16): a rough
# rule read off the authors' peak figures (80 GB at 720p, 60 GB at 512x896, both with batched CFG).
BRANCH_ACTIVATION_WIDTHS = 28

__all__ = ["CUSTOM_NEGATIVE_PROMPT", "CustomConditioning", "CustomRequest", "generate_custom", "prepare_custom"]


# ----------------------------------------------------------------------------- reference image

def pad_to_size(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE `[H, W, 3]` in 0..1 scaled to fit `width` x `height` (aspect kept) and centred on white.

    As the authors' `pad_image`: the side that limits is scaled to the target, the other is
    truncated to whole pixels; bilinear resampling without antialiasing (OpenCV's INTER_LINEAR),
    8-bit pixel values as their uint8 pipeline holds them.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be one RGB picture [H, W, 3], got shape {tuple(image.shape)}")
    src_h, src_w = image.shape[:2]
    if width / src_w > height / src_h:
        new_h = height
        new_w = int(src_w / src_h * new_h)
    else:
        new_w = width
        new_h = int(src_h / src_w * new_w)
    pixels = (image.float().clamp(0, 1) * 255).round().permute(2, 0, 1).unsqueeze(0)
    if (new_h, new_w) != (src_h, src_w):
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False).round().clamp(0, 255)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = torch.full((3, height, width), 255.0)
    canvas[:, top:top + new_h, left:left + new_w] = pixels[0]
    return (canvas / 255).permute(1, 2, 0)


@torch.no_grad()
def reference_posterior(vae, image: torch.Tensor) -> torch.Tensor:
    """The VAE posterior parameters (mean and log-variance stacked on channels) of one frame `[H, W, 3]`."""
    device = next(vae.parameters()).device
    pixels = (image.permute(2, 0, 1) * 2 - 1)[None, :, None].to(device=device, dtype=vae.dtype)
    return vae.encode(pixels).latent_dist.parameters.float().cpu()


def sample_posterior(parameters: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from the posterior, scaled to the transformer's latent space, as the authors do."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    draw = DiagonalGaussianDistribution(parameters).sample(generator=generator)
    return draw * vae_constants()["scaling_factor"]


# ----------------------------------------------------------------------------- conditioning

@dataclass
class CustomConditioning:
    """What the Custom sampler needs from the reference and the prompts (CPU tensors)."""

    positive: TextEmbeds
    negative: TextEmbeds
    reference: torch.Tensor  # VAE posterior parameters of the padded reference [1, 2C, 1, h, w]
    white: torch.Tensor  # the same of an all-white frame (the ip_cfg_scale branches)
    width: int
    height: int


def check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}")


def prepare_custom(encoders, vae, image: torch.Tensor, prompt: str, negative_prompt: str = CUSTOM_NEGATIVE_PROMPT,
                   subject: str = DEFAULT_SUBJECT, width: int = 1280, height: int = 720, device="cpu") -> CustomConditioning:
    """Encode the reference (VAE posterior and LLaVA tokens) and both prompts for a Custom job.

    `image` is ComfyUI's IMAGE `[B, H, W, 3]`; its first picture is the reference.
    """
    check_size(width, height)
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] < 1 or image.shape[-1] != 3:
        raise ValueError(f"image must be an IMAGE [B, H, W, 3], got {getattr(image, 'shape', type(image).__name__)}")
    reference = image[0].cpu()
    side = require_vision(encoders).image_size
    square = pad_to_size(reference, side, side).unsqueeze(0)
    positive, negative = encode_custom_prompts(encoders, prompt, negative_prompt, subject, square, device)
    frame = pad_to_size(reference, width, height)
    return CustomConditioning(
        positive=positive.to("cpu"),
        negative=negative.to("cpu"),
        reference=reference_posterior(vae, frame),
        white=reference_posterior(vae, torch.full_like(frame, WHITE)),
        width=width,
        height=height,
    )


class ReferenceTokens(LatentConditioning):
    """Gives each guidance branch its reference latent and step cache.

    Without the image branch both CFG branches get the reference; with it (ip_cfg_scale) the
    positive and negative branches get the white latent and the image branch the reference, as the
    authors batch them. One cache per model call, so batched and sequential branches both work.
    """

    def __init__(self, reference: torch.Tensor, white: torch.Tensor, image_branch: bool, step_cache: bool):
        self.latents = {"reference": reference, "white": white}
        self.image_branch = image_branch
        self.step_cache = step_cache
        self.caches: dict[tuple[str, ...], LastBlockCache] = {}
        self.reuse = False

    def begin_step(self, index: int, total: int) -> None:
        self.reuse = self.step_cache and total == CACHE_STEPS and index in CACHED_STEPS

    def latent_for(self, branch: str) -> torch.Tensor:
        if self.image_branch and branch != "image":
            return self.latents["white"]
        return self.latents["reference"]

    def call_kwargs(self, branches: tuple[str, ...]) -> dict:
        kwargs = {"ref_latents": torch.cat([self.latent_for(b) for b in branches])}
        if self.step_cache:
            kwargs["cache"] = self.caches.setdefault(branches, LastBlockCache())
            kwargs["reuse_cache"] = self.reuse
        return kwargs


# ----------------------------------------------------------------------------- sampling

@dataclass
class CustomRequest:
    num_frames: int = 129
    steps: int = 30
    cfg: float = 7.5
    flow_shift: float = 13.0
    ip_cfg_scale: float = 0.0
    step_cache: bool = True
    cfg_batching: str = "auto"
    seed: int = 0
    riflex: str = "auto"  # see rope.RIFLEX_CHOICES

    def validate(self) -> None:
        check_sampling(self.num_frames, self.steps, self.cfg, self.seed)
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be above 0, got {self.flow_shift}")
        if self.ip_cfg_scale < 0:
            raise ValueError(f"ip_cfg_scale must be 0 (off) or more, got {self.ip_cfg_scale}")
        if self.ip_cfg_scale > 0 and self.cfg <= 1.0:
            raise ValueError("ip_cfg_scale needs cfg above 1.0 (it adds a third branch to classifier-free guidance)")
        check_cfg_batching(self.cfg_batching)
        check_riflex(self.riflex)


def require_custom(transformer) -> None:
    variant = getattr(transformer, "variant", None)
    if variant != "custom":
        raise ValueError(
            f"transformer is a {variant or 'non-Custom'} model; the Custom sampler needs the HunyuanCustom transformer "
            "(e.g. hunyuan_video_custom_720p_fp8_scaled.safetensors, variant custom)"
        )


def branches_fit_together(device, tokens: int, hidden: int, branches: int) -> bool:
    """Whether the CUDA memory left (weights already in place) holds the activations of `branches` passes at once."""
    device = torch.device(device)
    if device.type != "cuda" or branches < 2:
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return free > branches * tokens * hidden * 2 * BRANCH_ACTIVATION_WIDTHS


def generate_custom(transformer, conditioning: CustomConditioning, request: CustomRequest, device="cpu",
                    on_step: StepCallback | None = None, on_info: Callable[[str], None] | None = None,
                    on_preview: PreviewCallback | None = None) -> torch.Tensor:
    """Sample a Custom latent `[1, C, T, H/8, W/8]` (VAE space) with `transformer` on `device`.

    `on_info` receives one line on the speed options in force (skipped calls included) and the LoRAs applied
    (`transformer.loras`, installed for this run) after sampling."""
    request.validate()
    require_custom(transformer)
    speed_cache = getattr(getattr(transformer, "speed", None), "cache", "off")
    if request.step_cache and request.steps == CACHE_STEPS and speed_cache != "off":
        raise ValueError(
            f"step_cache (the authors' schedule) and the Speed Options cache '{speed_cache}' both skip work: turn one off"
        )
    check_size(conditioning.width, conditioning.height)
    model = transformer.model
    channels = model.config.out_channels
    shape = (1, channels, (request.num_frames - 1) // VAE_TEMPORAL + 1,
             conditioning.height // VAE_SPATIAL, conditioning.width // VAE_SPATIAL)
    if conditioning.reference.shape[1] != 2 * channels or tuple(conditioning.reference.shape[3:]) != shape[3:]:
        raise ValueError(
            f"the conditioning's reference latent {tuple(conditioning.reference.shape)} does not fit this model's "
            f"{channels}-channel latent of {conditioning.width}x{conditioning.height}: encode it with the matching VAE"
        )
    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    reference = sample_posterior(conditioning.reference, generator).to(device)
    white = sample_posterior(conditioning.white, generator).to(device)
    use_cfg = request.cfg > 1.0
    branches = 1 + use_cfg + (request.ip_cfg_scale > 0)
    frames_with_reference = shape[2] + 1
    tokens = frames_with_reference * shape[3] * shape[4] // model.config.patch_size ** 2 + conditioning.positive.prompt_embeds.shape[1]
    batched = request.cfg_batching == "batched" or (
        request.cfg_batching == "auto" and branches_fit_together(device, tokens, model.config.num_attention_heads
                                                                 * model.config.attention_head_dim, branches)
    )
    settings = SamplingSettings(steps=request.steps, flow_shift=request.flow_shift, embedded_guidance=None,
                                true_cfg=request.cfg, image_cfg=request.ip_cfg_scale, batch_branches=batched)
    refs = ReferenceTokens(reference.to(model.dtype), white.to(model.dtype), request.ip_cfg_scale > 0, request.step_cache)
    noise = initial_noise(shape, request.seed).to(device)
    loras = loras_for_run(transformer, FAMILY)
    with riflex_rope(model, request.num_frames, request.riflex), open_speed(transformer, request.steps, device) as speed:
        latents = denoise(CustomTransformer(model), noise, conditioning.positive,
                          conditioning.negative if use_cfg else None, settings, on_step, refs, speed, on_preview)
    if on_info is not None:
        on_info(with_lora_summary(speed.summary(), loras))
    return latents / vae_constants()["scaling_factor"]
