"""CFG parallel on CPU processes (gloo) equals the single-process run: 4 ranks as cfg 2 x ulysses 2 and 2 ranks as
cfg 2 x ulysses 1, on 13B T2V and I2V v2 with real CFG and a negative prompt of another length (batched there, one
call at a time in the single process), 1.5 T2V with cfg 3, batches of 2 and 3 videos; each half runs only its rows.
The plans refused before anything is touched: a call of one row, an odd number of ranks, ring and unified attention
without a kernel returning the softmax statistics (the CPU, SDPA). Ring and unified numerics need GPUs (no CPU kernel
returns those statistics) and are not run here.

One launch per world size runs every scenario (importing torch and diffusers per rank costs more than sampling)."""

import re

import pytest
import torch
from parallel import cfg_scenarios as cs
from parallel import ulysses_scenarios as sc
from parallel.launch import launch

TIMEOUT_S = 240
VIDEO_TOKENS_13B = 24  # 64x48, 5 frames: 2 x 6 x 8 latent, 2x2 patches


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    return launch(4, "parallel.cfg_worker", list(cs.FOUR_RANKS), tmp_path_factory.mktemp("cfg4") / "latents", TIMEOUT_S)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return launch(2, "parallel.cfg_worker", list(cs.TWO_RANKS), tmp_path_factory.mktemp("cfg2") / "latents", TIMEOUT_S)


@pytest.fixture(scope="module")
def single():
    known = {}

    def run(name):
        if name not in known:
            build, _, sample = cs.SCENARIOS[name]
            known[name] = sample(build())
        return known[name]

    return run


@pytest.mark.parametrize("name", cs.FOUR_RANKS)
def test_cfg_2_x_ulysses_2_equals_one_process(four_ranks, single, name):
    for got in four_ranks:  # every rank ends with every branch and the whole latent (and the same cache skips)
        sc.assert_same_run(got["results"][name], single(name))


@pytest.mark.parametrize("name", cs.TWO_RANKS)
def test_cfg_2_x_ulysses_1_equals_one_process(two_ranks, single, name):
    for got in two_ranks:
        sc.assert_same_run(got["results"][name], single(name))


def test_each_half_runs_its_own_rows(four_ranks, two_ranks):
    for ranks, tokens in ((four_ranks, VIDEO_TOKENS_13B // 2), (two_ranks, VIDEO_TOKENS_13B)):
        for got in ranks:  # one branch per rank and call, its video tokens shared by the half's ranks
            assert set(got["seen"]["t2v13_cfg"]) == set(got["seen"]["i2v_v2_cfg"]) == {(1, tokens)}
            assert len(got["seen"]["t2v13_cfg"]) == len(got["seen"]["i2v_v2_cfg"]) == 3  # one call a step
    # three rows: the first half takes two, the second one
    assert [set(got["seen"]["t2v13_batch3"]) for got in four_ranks] == [{(2, 12)}, {(2, 12)}, {(1, 12)}, {(1, 12)}]
    for ranks in (four_ranks, two_ranks):  # HunyuanCustom's loop: positive and negative on one half, image on the other
        half = len(ranks) // 2
        assert [{rows for rows, _ in got["seen"]["custom_ip_cfg"]} for got in ranks] == [{2}] * half + [{1}] * half
    assert {rows for got in two_ranks for rows, _ in got["seen"]["t2v13_cfg_batch2"]} == {2}


def test_a_call_of_one_row_is_refused(four_ranks, two_ranks):
    for got in four_ranks + two_ranks:
        message = got["results"]["one_row"]
        assert "this call carries 1 row" in message and "cfg_batching 'batched'" in message


@pytest.fixture
def fake_group(monkeypatch):
    """A process group of `size` ranks as parallelize reads it; the refusals tested come before any collective."""

    def make(size: int):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: size)

    return make


def _untouched(model) -> bool:
    return ("forward" not in model.__dict__ and getattr(model, "_hyvs_mask_free", None) is None
            and getattr(model, "_parallel_config", None) is None)


def test_cfg_parallel_on_an_odd_number_of_ranks_is_refused(fake_group):
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    fake_group(3)
    model = sc.model13()
    with pytest.raises(ValueError, match="needs an even number of ranks, got 3"):
        parallelize(model, cfg_parallel=True)
    assert _untouched(model)


@pytest.mark.parametrize("mode, attention, cfg_parallel", [("ring", "sdpa", False), ("ring", "flash", True),
                                                           ("unified", "sage", False)])
def test_ring_and_unified_are_refused_without_softmax_statistics(fake_group, mode, attention, cfg_parallel):
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    fake_group(8 if cfg_parallel else 4)
    model = sc.model13()
    with pytest.raises(ValueError) as refused:
        parallelize(model, attention=attention, device="cpu", mode=mode, cfg_parallel=cfg_parallel)
    message = str(refused.value)
    assert f"parallel mode '{mode}' needs an attention kernel that returns its softmax statistics" in message
    assert "attention 'flash' (FlashAttention-2) or 'sage' on a CUDA GPU" in message
    assert f"attention '{attention}' runs sdpa" in message
    if attention != "sdpa":  # asked for a GPU kernel on the CPU: why it fell back is said
        assert "needs a CUDA GPU, this runs on cpu" in message
    assert _untouched(model)


def test_an_unknown_mode_is_refused(fake_group):
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    fake_group(2)
    with pytest.raises(ValueError, match="parallel mode must be one of ulysses, ring, unified; got 'tensor'"):
        parallelize(sc.model13(), mode="tensor")


@pytest.mark.parametrize("world, heads, mode, cfg_parallel, shape", [
    (4, 24, "ulysses", True, (2, 1, 2)),
    (2, 24, "ulysses", True, (2, 1, 1)),  # each rank runs its branch whole: no context parallel
    (32, 24, "ring", False, (1, 32, 1)),  # ring splits no heads
    (8, 24, "unified", False, (1, 2, 4)),  # ulysses as large as the heads allow, ring 2 or more
    (8, 24, "unified", True, (2, 2, 2)),
    (6, 16, "unified", False, (1, 3, 2)),  # 1.5's 16 heads do not split in 3
])
def test_the_mesh_plan(world, heads, mode, cfg_parallel, shape):
    from hunyuan_video_suite.pipelines.parallel.mesh import plan_mesh

    plan = plan_mesh(world, heads, mode, cfg_parallel)
    assert plan.shape == shape
    config = plan.context_config(None)
    if plan.sequence == 1:
        assert config is None
        return
    assert (config.ring_degree, config.ulysses_degree) == shape[1:]
    assert config.ulysses_anything == (mode == "ulysses") and config.ring_anything == (mode == "ring")


@pytest.mark.parametrize("world, mode, cfg_parallel, degree, message", [
    (2, "unified", False, None, "2 ranks per branch have no such split; use mode 'ulysses' or 'ring'"),
    (2, "ring", True, None, "mode 'ring' shares each sequence over 2 or more ranks, got 1 per CFG half"),
    (1, "ulysses", False, None, "mode 'ulysses' shares each sequence over 2 or more ranks, got 1"),
    (4, "ulysses", True, 4, "degree 4 does not fit the process group: 4 ranks in 2 CFG halves share each sequence "
                            "over 2"),
])
def test_plans_the_ranks_cannot_hold_are_refused(world, mode, cfg_parallel, degree, message):
    from hunyuan_video_suite.pipelines.parallel.mesh import plan_mesh

    with pytest.raises(ValueError, match=re.escape(message)):
        plan_mesh(world, 24, mode, cfg_parallel, degree=degree)
