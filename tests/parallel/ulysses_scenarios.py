"""The sampling runs the Ulysses tests compare: each built the same way on every rank and in one process.

The tiny models compute in float64: a sharded run sums in another order than one process, and float32's
rounding, amplified by CFG and random weights, reaches 1e-5 by itself; float64 leaves only real mismatches.
A run returns the latent, or a dict of it and what a step cache or the offloader did (`ran`: per model
call, whether the last block computed; `metrics`: each relative change a cache measured; `onloads`)."""

from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "hunyuan_video_suite"
TEXT_DIM, POOLED_DIM, BYT5_DIM, IMAGE_DIM = 32, 16, 24, 20


def register_pack():
    """Import the pack as `hunyuan_video_suite` (as conftest does) in a worker process."""
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT)])
        sys.modules[PACK_NAME] = importlib.util.module_from_spec(spec)


def _embeds13(valid: int, seed: int, length: int = 24):
    from hunyuan_video_suite.pipelines.denoise.text_embeds import TextEmbeds

    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return TextEmbeds(torch.randn(1, length, TEXT_DIM, generator=g), mask, torch.randn(1, POOLED_DIM, generator=g))


def model13(variant: str = "t2v", heads: int = 2, seed: int = 3):
    """The tiny 13B model; with more `heads` (4 ranks need 4), the same config and fresh random weights."""
    from diffusers import HunyuanVideoTransformer3DModel
    from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer

    model = tiny_transformer(TEXT_DIM, POOLED_DIM, 16, variant=variant, seed=seed)
    if heads != model.config.num_attention_heads:
        torch.manual_seed(seed)
        model = HunyuanVideoTransformer3DModel.from_config({**model.config, "num_attention_heads": heads}).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, 0.2)
    return model.double()


def model15(meanflow: bool = False, sr: bool = False):
    from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
    from hunyuan_video_suite.pipelines.hunyuan_video_15 import attention

    attention.install()  # the 1.5 mask-free layout, before parallelize
    model = tiny_transformer15(TEXT_DIM, BYT5_DIM, IMAGE_DIM, meanflow=meanflow, seed=4, layers=1 if sr else 2,
                               sr=sr).double()
    # diffusers' 1.5 timestep embedding feeds float32 sinusoids to its linear layers: it stays float32, its output
    # goes on in float64
    model.time_embed.float().register_forward_hook(lambda module, args, output: output.double())
    return model


def run13(model, batch: int = 1, valid: int = 7, negative_valid: int | None = None, steps: int = 3,
          size: tuple[int, int, int] = (64, 48, 5)):
    """13B T2V: 64x48, 5 frames (24 video tokens), 3 steps; with `negative_valid`, real CFG with a negative prompt
    of another length (the rows of a batched call differ)."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v

    negative = _embeds13(negative_valid, seed=6) if negative_valid else None
    width, height, frames = size
    request = T2VRequest(width=width, height=height, num_frames=frames, steps=steps, seed=1, batch_size=batch,
                         true_cfg=2.0 if negative else 1.0)
    return generate_t2v(model, _embeds13(valid, seed=5), request, negative)


def model_i2v(variant: str):
    from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

    model = tiny_transformer(TEXT_DIM, POOLED_DIM, 16, variant=variant, seed=9).double()
    return LoadedTransformer(model=model, variant=variant, source="test")


def run_i2v(transformer, num_frames: int = 5):
    """13B I2V (v1: image channels; v2: first-frame tokens, held by rank 0 at 5 frames and split over both ranks
    at 1 frame), real CFG."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VConditioning, I2VRequest, generate_i2v

    image = torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(10))
    conditioning = I2VConditioning(transformer.variant, _embeds13(9, seed=11), _embeds13(6, seed=12), image, 64, 48)
    request = I2VRequest(num_frames=num_frames, steps=3, seed=1, true_cfg=2.0)
    return generate_i2v(transformer, conditioning, request)["samples"]


def _embeds15(valid: int, seed: int):
    from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15

    g = torch.Generator().manual_seed(seed)
    qwen_mask = torch.zeros(1, 12, dtype=torch.long)
    qwen_mask[:, :valid] = 1
    byt5_mask = torch.zeros(1, 6, dtype=torch.long)
    byt5_mask[:, :2] = 1
    return TextEmbeds15(torch.randn(1, 12, TEXT_DIM, generator=g), qwen_mask,
                        torch.randn(1, 6, BYT5_DIM, generator=g), byt5_mask)


def _loaded15(model, variant: str):
    from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15
    from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant

    return LoadedTransformer15(model=model, variant=Variant(variant, sr_meanflow=model.config.use_meanflow),
                               source="test")


def run15(model, qwen_valid: int = 5, negative_valid: int = 8, batch: int = 1, steps: int = 2):
    """1.5 T2V with batched CFG (positive and negative rows of different valid length in one call); `model` bare
    or loaded."""
    from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import Request15, generate

    transformer = model if hasattr(model, "variant") else _loaded15(model, "480p_t2v")
    request = Request15(width=64, height=48, num_frames=5, steps=steps, cfg=3.0, seed=2, batch_size=batch)
    return generate(transformer, _embeds15(qwen_valid, 7), _embeds15(negative_valid, 8), request)


def run_i2v15(model, variant: str = "480p_i2v", cfg: float = 3.0):
    """1.5 I2V: the first-frame latent in the 65-channel input, SigLIP tokens (all valid) in the context of both CFG
    branches; the step-distilled variant (MeanFlow: a second timestep per call) at CFG 1."""
    from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import ImageCondition15, Request15, generate

    g = torch.Generator().manual_seed(13)
    image = ImageCondition15(latent=torch.randn(1, 32, 1, 3, 4, generator=g), siglip=torch.randn(1, 29, IMAGE_DIM,
                             generator=g), width=64, height=48, resolution="480p")
    request = Request15(width=64, height=48, num_frames=5, steps=2, cfg=cfg, seed=3)
    negative = _embeds15(9, 15) if cfg > 1.0 else None
    return generate(_loaded15(model, variant), _embeds15(4, 14), negative, request, image=image)


def run_sr15(model, image: bool):
    """1.5 super-resolution to 720p (3542 tokens a frame): the 98-channel input (noisy latent, first frame and
    mask, the LQ latent and ones, zeroed from the second step), MeanFlow when the SR model has it."""
    from hunyuan_video_suite.pipelines.demo.hv15_upsampler import tiny_upsampler
    from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import ImageCondition15
    from hunyuan_video_suite.pipelines.hunyuan_video_15.super_resolution import SRRequest, generate_sr

    g = torch.Generator().manual_seed(16)
    base = torch.randn(1, 32, 1, 3, 5, generator=g)  # 80x48: the 720p bucket of its aspect is 1232x736
    condition = None
    if image:
        condition = ImageCondition15(latent=torch.randn(1, 32, 1, 46, 77, generator=g), siglip=torch.randn(
            1, 29, IMAGE_DIM, generator=g), width=1232, height=736, resolution="720p")
    request = SRRequest(steps=2, flow_shift=2.0, noise_augmentation=0.7, seed=4)
    return generate_sr(_loaded15(model, "720p_sr_distilled"), tiny_upsampler("720p", seed=2), _embeds15(6, 17), base,
                       request, image=condition)


# ----------------------------------------------------------------------------- HunyuanCustom


def model_custom(heads: int = 2):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

    model = model13(variant="custom", heads=heads, seed=21)
    return LoadedTransformer(model=model, variant="custom", source="test")


def _custom_embeds(valid: int, seed: int, length: int = 16):
    """A prompt with the authors' quirky mask: ones at the start and two at the end (`valid` in all)."""
    embeds = _embeds13(valid, seed, length)
    embeds.attention_mask[:, valid - 2 : valid] = 0
    embeds.attention_mask[:, -2:] = 1
    return embeds


def run_custom(transformer, width: int = 64, height: int = 48, num_frames: int = 5, steps: int = 3,
               ip_cfg_scale: float = 2.0, step_cache: bool = False, batching: str = "batched"):
    """Custom reference-to-video: the reference tokens before the video tokens, real CFG, the image branch (three
    rows of two text lengths in one call) or the authors' step cache at 30 steps."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import (
        CustomConditioning,
        CustomRequest,
        generate_custom,
    )

    g = torch.Generator().manual_seed(22)
    posterior = (1, 32, 1, height // 8, width // 8)
    reference, white = torch.randn(*posterior, generator=g), torch.randn(*posterior, generator=g)
    conditioning = CustomConditioning(_custom_embeds(9, 23), _custom_embeds(6, 24), reference, white, width, height)
    request = CustomRequest(num_frames=num_frames, steps=steps, cfg=3.0, flow_shift=5.0, ip_cfg_scale=ip_cfg_scale,
                            step_cache=step_cache, cfg_batching=batching, seed=5)
    return generate_custom(transformer, conditioning, request)


# ----------------------------------------------------------------------------- step caches, offload


@contextmanager
def cache_record(model):
    """Record, per model call, whether the last block computed (a skip leaves it out), and each relative change
    the cache measured: `step_cache.relative_change` (TeaCache; First Block Cache under sequence parallel) and
    diffusers' own First Block Cache decision in one process (its formula restated here to see its value)."""
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook
    from hunyuan_video_suite.pipelines.speed import step_cache

    record = {"ran": [], "metrics": []}
    blocks = [*model.transformer_blocks, *getattr(model, "single_transformer_blocks", ())]
    hooks = [blocks[0].register_forward_pre_hook(lambda module, args: record["ran"].append(False)),
             blocks[-1].attn.register_forward_hook(lambda module, args, out: record["ran"].__setitem__(-1, True))]
    measure, decide = step_cache.relative_change, FBCHeadBlockHook._should_compute_remaining_blocks

    def measured(*args):
        record["metrics"].append(measure(*args))
        return record["metrics"][-1]

    def decided(head, residual):
        previous = head.state_manager.get_state().head_block_residual
        if previous is not None:
            record["metrics"].append(((residual - previous).abs().mean() / previous.abs().mean()).item())
        return decide(head, residual)

    step_cache.relative_change, FBCHeadBlockHook._should_compute_remaining_blocks = measured, decided
    try:
        yield record
    finally:
        step_cache.relative_change, FBCHeadBlockHook._should_compute_remaining_blocks = measure, decide
        for hook in hooks:
            hook.remove()


def with_cache(transformer, preset: str, threshold: float):
    from dataclasses import replace

    transformer.speed = replace(transformer.speed, cache=preset, cache_threshold=threshold)
    return transformer


def run_cached(transformer, run, offload: bool = False) -> dict:
    """`run(transformer)` with what its cache did; with `offload`, every block streamed (CPU to CPU) and the
    feed-forwards chunked by 5 tokens, set up in `transformer_on_device`'s order."""
    from hunyuan_video_suite.pipelines.memory import token_chunking
    from hunyuan_video_suite.pipelines.memory.offload import TRANSFORMER_BLOCKS, model_on_device

    model = transformer.model
    with cache_record(model) as record:
        if not offload:
            return {"latents": run(transformer), **record}
        token_chunking.enable(model, 5)
        try:
            with model_on_device(model, TRANSFORMER_BLOCKS, "cpu", resident=0) as offloader:
                latents = run(transformer)
        finally:
            token_chunking.disable(model)
        return {"latents": latents, "onloads": offloader.onload_count, **record}


def loaded13(heads: int = 2):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer

    return LoadedTransformer(model=model13(heads=heads), variant="t2v", source="test")


def run13_cfg_batch2(transformer, steps: int = 3):
    return run13(transformer, batch=2, valid=9, negative_valid=5, steps=steps)


# name -> (model builder, sampling run on that model); every rank and the single process run the same pair
SCENARIOS = {
    "t2v13": (model13, lambda m: run13(m)),
    "t2v13_cfg_batch2": (model13, run13_cfg_batch2),
    # 48x48, one frame: 9 video tokens, shared 5 and 4 (real sizes often split unevenly: 848x480 has 53 columns)
    "t2v13_odd_tokens": (model13, lambda m: run13(m, size=(48, 48, 1))),
    "i2v_v1": (lambda: model_i2v("i2v_v1"), run_i2v),
    "i2v_v2": (lambda: model_i2v("i2v_v2"), run_i2v),
    "i2v_v2_one_frame": (lambda: model_i2v("i2v_v2"), lambda t: run_i2v(t, num_frames=1)),
    "t2v15": (model15, lambda m: run15(m)),
    "t2v15_batch2": (model15, lambda m: run15(m, qwen_valid=3, negative_valid=11, batch=2)),
    # context lengths 7 and 8: rank 0 gets 4 of each, rank 1 3 and 4; both must attend row by row
    "t2v15_equal_shares": (model15, lambda m: run15(m, qwen_valid=5, negative_valid=6)),
    "i2v15": (model15, run_i2v15),
    "i2v15_step_distilled": (lambda: model15(meanflow=True), lambda m: run_i2v15(m, "480p_i2v_step_distilled", 1.0)),
    "sr15_i2v": (lambda: model15(sr=True), lambda m: run_sr15(m, image=True)),
    "sr15_meanflow": (lambda: model15(meanflow=True, sr=True), lambda m: run_sr15(m, image=False)),
    "custom": (model_custom, run_custom),
    "custom_step_cache": (model_custom, lambda t: run_custom(t, 32, 32, 1, 30, 0.0, step_cache=True)),
    # cache thresholds: each the middle of a range giving the same skips in one process (the tiny random models
    # change far more per step than real ones)
    "t2v13_teacache": (lambda: with_cache(loaded13(), "teacache", 0.4),
                       lambda t: run_cached(t, lambda t: run13_cfg_batch2(t, steps=8))),
    "t2v15_first_block": (lambda: with_cache(_loaded15(model15(), "480p_t2v"), "first_block", 0.95),
                          lambda t: run_cached(t, lambda t: run15(t, steps=8))),
    "custom_first_block": (lambda: with_cache(model_custom(), "first_block", 0.7),
                           lambda t: run_cached(t, lambda t: run_custom(t, steps=8))),
    "t2v13_offload_chunks_teacache": (lambda: with_cache(loaded13(), "teacache", 0.4),
                               lambda t: run_cached(t, lambda t: run13_cfg_batch2(t, steps=8), offload=True)),
}
# 4 ranks: 4-head models (the tiny ones have 2), odd text lengths, batch 2, HunyuanCustom
SCENARIOS_4 = {
    "t2v13_4ranks_cfg_batch2": (lambda: model13(heads=4), lambda m: run13(m, batch=2, valid=7, negative_valid=5)),
    "custom_4ranks": (lambda: model_custom(heads=4), lambda t: run_custom(t, num_frames=1)),
}


def assert_same_run(got, want, atol: float = 1e-5) -> None:
    """A rank's run equals the single process's: latents to `atol`, the same cache skips and onloads, and the
    relative changes the cache measured to float64 precision (the ranks measure the whole sequence)."""
    if not isinstance(want, dict):
        torch.testing.assert_close(got, want, atol=atol, rtol=0)
        return
    assert got.keys() == want.keys()
    torch.testing.assert_close(got["latents"], want["latents"], atol=atol, rtol=0)
    assert got["ran"] == want["ran"]
    assert got.get("onloads") == want.get("onloads")
    assert len(got["metrics"]) == len(want["metrics"]) > 0
    torch.testing.assert_close(torch.tensor(got["metrics"]), torch.tensor(want["metrics"]), atol=0, rtol=1e-9)


def assert_sharded(splits: list[set]) -> None:
    """Each rank's (tokens, its share) at the first blocks: every rank held a part, the parts made the whole."""
    assert splits[0], "no first block ran"
    for total in {total for total, _ in splits[0]}:
        shares = [sorted(share for whole, share in rank if whole == total) for rank in splits]
        assert all(len(share) == 1 for share in shares), shares
        assert sum(share[0] for share in shares) == total and max(share[0] for share in shares) < total
