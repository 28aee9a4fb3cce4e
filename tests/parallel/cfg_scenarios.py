"""The sampling runs the CFG parallel tests compare: each built the same way on every rank and in one process,
on the Ulysses tests' tiny float64 models (`ulysses_scenarios`).

CFG parallel splits the guidance branches of one batched model call. 13B T2V has no cfg_batching option (its
branches run one call at a time), so its runs here batch them, as the 1.5 sampler does by default."""

from __future__ import annotations

import functools
from contextlib import contextmanager

from . import ulysses_scenarios as sc


@contextmanager
def batched_branches():
    """13B T2V with both guidance branches of a step in one call."""
    from hunyuan_video_suite.pipelines.hunyuan_video_13b import t2v

    original = t2v.SamplingSettings
    t2v.SamplingSettings = functools.partial(original, batch_branches=True)
    try:
        yield
    finally:
        t2v.SamplingSettings = original


def run13_batched(model, **kwargs):
    with batched_branches():
        return sc.run13(model, **kwargs)


# name -> (model builder, sampling run on that model)
SCENARIOS = {
    # real CFG, the negative prompt of another valid length: one row per branch
    "t2v13_cfg": (sc.model13, lambda m: run13_batched(m, valid=9, negative_valid=5)),
    # two videos with real CFG: [positive, positive, negative, negative], two rows per half
    "t2v13_cfg_batch2": (sc.model13, lambda m: run13_batched(m, batch=2, valid=9, negative_valid=5)),
    # three videos without CFG: rows split 2 and 1, gathered by size
    "t2v13_batch3": (sc.model13, lambda m: sc.run13(m, batch=3, valid=7)),
    # cfg 3 with the positive and negative rows batched (the sampler's default), prompts of valid lengths 5 and 8
    "t2v15_cfg": (sc.model15, lambda m: sc.run15(m)),
    # HunyuanCustom's own block loop, the image branch third: [positive, negative, image] split 2 and 1
    "custom_ip_cfg": (sc.model_custom, sc.run_custom),
    # TeaCache on batched CFG: each half measures its own branch, the skip is decided on both (one skip of 8 steps
    # in one process for thresholds 0.3 to 0.6)
    "t2v13_cfg_teacache": (lambda: sc.with_cache(sc.loaded13(), "teacache", 0.4),
                           lambda t: sc.run_cached(t, lambda t: run13_batched(t, valid=9, negative_valid=5, steps=8))),
}
FOUR_RANKS = ("t2v13_cfg", "t2v13_batch3", "t2v15_cfg", "custom_ip_cfg", "t2v13_cfg_teacache")  # cfg 2 x ulysses 2
# cfg 2 x ulysses 1: each rank runs its rows whole
TWO_RANKS = ("t2v13_cfg", "t2v13_cfg_batch2", "t2v15_cfg", "custom_ip_cfg", "t2v13_cfg_teacache")
