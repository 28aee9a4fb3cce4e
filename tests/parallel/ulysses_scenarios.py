"""The sampling runs the Ulysses tests compare: each built the same way on every rank and in one process.

The tiny models compute in float64: a sharded run sums in another order than one process, and float32's
rounding, amplified by CFG and random weights, reaches 1e-5 by itself; float64 leaves only real mismatches."""

from __future__ import annotations

import importlib.util
import sys
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


def model13():
    from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer

    return tiny_transformer(TEXT_DIM, POOLED_DIM, 16, variant="t2v", seed=3).double()


def model15():
    from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
    from hunyuan_video_suite.pipelines.hunyuan_video_15 import attention

    attention.install()  # the 1.5 mask-free layout, before parallelize
    model = tiny_transformer15(TEXT_DIM, BYT5_DIM, IMAGE_DIM, seed=4).double()
    # diffusers' 1.5 timestep embedding feeds float32 sinusoids to its linear layers: it stays float32, its output
    # goes on in float64
    model.time_embed.float().register_forward_hook(lambda module, args, output: output.double())
    return model


def run13(model, batch: int = 1, valid: int = 7, negative_valid: int | None = None):
    """13B T2V: 64x48, 5 frames (24 video tokens), 3 steps; with `negative_valid`, real CFG with a negative prompt
    of another length (the rows of a batched call differ)."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v

    negative = _embeds13(negative_valid, seed=6) if negative_valid else None
    request = T2VRequest(width=64, height=48, num_frames=5, steps=3, seed=1, batch_size=batch,
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
    return generate_i2v(transformer, conditioning, I2VRequest(num_frames=num_frames, steps=3, seed=1, true_cfg=2.0))["samples"]


def run15(model, qwen_valid: int = 5, negative_valid: int = 8, batch: int = 1):
    """1.5 T2V with batched CFG (positive and negative rows of different valid length in one call)."""
    from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import Request15, generate
    from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
    from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15
    from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant

    def embeds(valid, seed):
        g = torch.Generator().manual_seed(seed)
        qwen_mask = torch.zeros(1, 12, dtype=torch.long)
        qwen_mask[:, :valid] = 1
        byt5_mask = torch.zeros(1, 6, dtype=torch.long)
        byt5_mask[:, :2] = 1
        return TextEmbeds15(torch.randn(1, 12, TEXT_DIM, generator=g), qwen_mask,
                            torch.randn(1, 6, BYT5_DIM, generator=g), byt5_mask)

    transformer = LoadedTransformer15(model=model, variant=Variant("480p_t2v"), source="test")
    request = Request15(width=64, height=48, num_frames=5, steps=2, cfg=3.0, seed=2, batch_size=batch)
    return generate(transformer, embeds(qwen_valid, 7), embeds(negative_valid, 8), request)


# name -> (model builder, sampling run on that model)
SCENARIOS = {
    "t2v13": (model13, lambda m: run13(m)),
    "t2v13_cfg_batch2": (model13, lambda m: run13(m, batch=2, valid=9, negative_valid=5)),
    "i2v_v1": (lambda: model_i2v("i2v_v1"), run_i2v),
    "i2v_v2": (lambda: model_i2v("i2v_v2"), run_i2v),
    "i2v_v2_one_frame": (lambda: model_i2v("i2v_v2"), lambda t: run_i2v(t, num_frames=1)),
    "t2v15": (model15, lambda m: run15(m)),
    "t2v15_batch2": (model15, lambda m: run15(m, qwen_valid=3, negative_valid=11, batch=2)),
}
