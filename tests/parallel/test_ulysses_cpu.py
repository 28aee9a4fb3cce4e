"""Ulysses sequence parallel on 2 CPU processes (gloo) equals the single-process run: 13B T2V and I2V v1/v2,
HunyuanCustom (reference tokens, three CFG rows of two text lengths, the authors' step cache), 1.5 T2V/I2V
(MeanFlow too) and super-resolution, odd text lengths, batch 2; step caches skip alike on every rank and as one
process does; block offload composes with it; the wrong processor order is detected.

The two ranks run every scenario in one launch (importing torch and diffusers twice costs more than the
sampling), so the first test pays for the launch and the others read its results."""

import pytest
import torch
from parallel import ulysses_scenarios as sc
from parallel.launch import launch
from parallel.ulysses_worker import ORDER_ERRORS, WORKER

WORLD = 2
TIMEOUT_S = 300
CACHED = [name for name in sc.SCENARIOS if "teacache" in name or "first_block" in name]


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("ulysses") / "latents"
    return launch(WORLD, WORKER, [*sc.SCENARIOS, ORDER_ERRORS], out, TIMEOUT_S)


@pytest.fixture(scope="module")
def single():
    """The single-process runs, made once (the cache tests read them twice)."""
    cache = {}

    def run(name):
        if name not in cache:
            build, sample = sc.SCENARIOS[name]
            cache[name] = sample(build())
        return cache[name]

    return run


@pytest.mark.parametrize("name", list(sc.SCENARIOS))
def test_two_ranks_equal_one_process(ranks_output, single, name):
    for got in ranks_output:  # every rank ends with the whole latent
        sc.assert_same_run(got["results"][name], single(name))
    sc.assert_sharded([got["splits"][name] for got in ranks_output])


@pytest.mark.parametrize("name", CACHED)
def test_a_cache_preset_skips_alike_on_every_rank(ranks_output, single, name):
    """The ranks measure the whole sequence (the statistics summed over them), so they skip the same calls, and
    the same as one process: the thresholds sit where one process both skips and computes."""
    ran = [got["results"][name]["ran"] for got in ranks_output]
    assert ran[0] == ran[1] == single(name)["ran"]
    assert 0 < ran[0].count(False) < len(ran[0]) - 2


def test_offload_streams_the_blocks_on_every_rank_as_one_process(ranks_output, single):
    """Block offload (every block streamed, CPU to CPU here) and token chunking under sequence parallel and
    TeaCache: the shard's torch pre-hook runs before the block's diffusers hooks (cache, then offload) and its
    chunked forward, so each rank streams the blocks one process streams."""
    name = "t2v13_offload_chunks_teacache"
    onloads = [got["results"][name]["onloads"] for got in ranks_output]
    calls = len(single(name)["ran"])
    assert onloads[0] == onloads[1] == single(name)["onloads"]
    assert calls < onloads[0] < 2 * calls  # two blocks a computed call, fewer where TeaCache skipped


def test_the_wrong_processor_order_is_detected(ranks_output):
    errors = ranks_output[0]["results"][ORDER_ERRORS]
    assert "enable_parallelism was already called" in errors["enable_first"]
    assert "set after enable_parallelism" in errors["set_after"]
    assert "transformer_blocks.0.attn" in errors["set_after"]


def test_a_degree_the_heads_cannot_cover_is_refused():
    from hunyuan_video_suite.pipelines.parallel.ulysses import check_degree

    check_degree(24, 8)
    check_degree(24, 5)  # 'anything' pads the heads
    with pytest.raises(ValueError, match="do not split over 5 ranks"):
        check_degree(24, 5, anything=False)
    with pytest.raises(ValueError, match="at most 2"):
        check_degree(2, 4)


def test_one_process_cache_decisions_are_unchanged():
    """Without a reduce installed (one process), TeaCache's metric is the plain mean ratio, bit for bit."""
    from hunyuan_video_suite.pipelines.speed.step_cache import relative_change

    g = torch.Generator().manual_seed(0)
    current, previous = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    current, previous = current.double(), previous.double()
    assert relative_change(current, previous) == ((current - previous).abs().mean() / previous.abs().mean()).item()
    halves = [(current[:, :2], previous[:, :2]), (current[:, 2:], previous[:, 2:])]
    sums = [torch.stack([(c - p).abs().sum(), p.abs().sum()]) for c, p in halves]
    assert relative_change(current[:, :2], previous[:, :2], lambda t: sums[0] + sums[1]) == pytest.approx(
        relative_change(current, previous), rel=1e-12)
