"""The sampling runs the CFG parallel tests compare: each built the same way on every rank and in one process,
on the Ulysses tests' tiny float64 models (`ulysses_scenarios`).

CFG parallel splits the guidance branches of one batched model call: the runs under it batch them (13B T2V and I2V
with cfg_batching "batched", as the Multi-GPU node and --cfg-parallel set it; 1.5 by default), and 13B T2V and
I2V are compared with the single process running them one call at a time, their default."""

from __future__ import annotations

import torch

from . import ulysses_scenarios as sc


def run13(model, batching: str, batch: int = 1, steps: int = 3):
    """13B T2V with real CFG, prompts of 24 and 16 tokens (9 and 5 valid): batched, the shorter is padded."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v

    request = T2VRequest(width=64, height=48, num_frames=5, steps=steps, seed=1, batch_size=batch, true_cfg=2.0,
                         cfg_batching=batching)
    return generate_t2v(model, sc._embeds13(9, seed=5), request, sc._embeds13(5, seed=6, length=16))


def run_i2v(transformer, batching: str):
    """13B I2V with real CFG, prompts of 24 and 20 tokens; v2's first-frame tokens held by the first rank of each
    half under ulysses 2."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VConditioning, I2VRequest, generate_i2v

    image = torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(10))
    conditioning = I2VConditioning(transformer.variant, sc._embeds13(9, seed=11),
                                   sc._embeds13(6, seed=12, length=20), image, 64, 48)
    request = I2VRequest(num_frames=5, steps=3, seed=1, true_cfg=2.0, cfg_batching=batching)
    return generate_i2v(transformer, conditioning, request)["samples"]


def _both(run, **kwargs):
    """(the run under CFG parallel, the single-process run it must equal): batched, then one call at a time."""
    return lambda m: run(m, "batched", **kwargs), lambda m: run(m, "sequential", **kwargs)


def _same(run):
    return run, run


def _cached(run):
    return lambda t: sc.run_cached(t, run)


# name -> (model builder, sampling run under CFG parallel, the single-process run it must equal)
SCENARIOS = {
    # real CFG, the negative prompt of another length: one row per branch
    "t2v13_cfg": (sc.model13, *_both(run13)),
    # two videos with real CFG: [positive, positive, negative, negative], two rows per half
    "t2v13_cfg_batch2": (sc.model13, *_both(run13, batch=2)),
    # I2V v2 (first-frame tokens) with real CFG, the prompts of different lengths
    "i2v_v2_cfg": (lambda: sc.model_i2v("i2v_v2"), *_both(run_i2v)),
    # three videos without CFG: rows split 2 and 1, gathered by size
    "t2v13_batch3": (sc.model13, *_same(lambda m: sc.run13(m, batch=3, valid=7))),
    # cfg 3 with the positive and negative rows batched (the sampler's default), prompts of valid lengths 5 and 8
    "t2v15_cfg": (sc.model15, *_same(lambda m: sc.run15(m))),
    # HunyuanCustom's own block loop, the image branch third: [positive, negative, image] split 2 and 1
    "custom_ip_cfg": (sc.model_custom, *_same(sc.run_custom)),
    # TeaCache on batched CFG: each half measures its own branch, the skip is decided on both (one skip of 8 steps
    # in one process for thresholds 0.3 to 0.6); the same batched calls in one process (a cache measures per call)
    "t2v13_cfg_teacache": (lambda: sc.with_cache(sc.loaded13(), "teacache", 0.4),
                           *_same(_cached(lambda t: run13(t, "batched", steps=8)))),
}
FOUR_RANKS = ("t2v13_cfg", "i2v_v2_cfg", "t2v13_batch3", "t2v15_cfg", "custom_ip_cfg",
              "t2v13_cfg_teacache")  # cfg 2 x ulysses 2
# cfg 2 x ulysses 1: each rank runs its rows whole
TWO_RANKS = ("t2v13_cfg", "t2v13_cfg_batch2", "i2v_v2_cfg", "t2v15_cfg", "custom_ip_cfg", "t2v13_cfg_teacache")
