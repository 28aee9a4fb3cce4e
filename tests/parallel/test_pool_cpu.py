"""The ComfyUI worker pool on 2 CPU processes (gloo): its latent equals one process's, the workers keep the model
between runs, Cancel stops both ranks at the same step, a killed worker is reported by rank and the next run
starts afresh. One pool serves the module (starting one imports torch and diffusers twice, which costs more than
the runs); the killed-worker test is last and starts the second."""

import os
import signal

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.denoise.text_embeds import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import load_transformer
from hunyuan_video_suite.pipelines.parallel import pool as pool_module
from hunyuan_video_suite.pipelines.parallel import wire
from hunyuan_video_suite.pipelines.parallel.pool import RunHooks, WorkerDied, WorkerPool
from hunyuan_video_suite.pipelines.parallel.worker import Job, ModelSpec

WORLD = 2
TEXT_DIM, POOLED_DIM = 32, 16


class Cancelled(Exception):
    """Stands for ComfyUI's interrupt, raised by the node's progress hook."""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = tiny_transformer(TEXT_DIM, POOLED_DIM, 16, variant="t2v", seed=3)
    return save_transformer(model, tmp_path_factory.mktemp("pool") / "hunyuan_video_t2v_720p_bf16.safetensors")


@pytest.fixture(scope="module")
def loaded(model_file):
    return load_transformer(model_file, dtype="fp32")


@pytest.fixture(scope="module")
def started():
    """The module's pool (started again if a test left it closed), each worker on one thread."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    pools = []
    yield pools
    for pool in pools:
        pool.close()
    if previous is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = previous


@pytest.fixture
def pool(started):
    if not started or not started[-1].alive:
        started.append(WorkerPool(WORLD, "cpu").start())
    return started[-1]


def _embeds(valid: int = 7, seed: int = 5, length: int = 24) -> TextEmbeds:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return TextEmbeds(torch.randn(1, length, TEXT_DIM, generator=g), mask, torch.randn(1, POOLED_DIM, generator=g))


def _job(model_file, loaded, steps=3, seed=1, weight_dtype="fp32", previews=False):
    request = T2VRequest(width=64, height=48, num_frames=5, steps=steps, seed=seed)
    fields = {"speed": loaded.speed, "memory": loaded.memory, "loras": ()}
    spec = ModelSpec(load_transformer, str(model_file), "t2v", weight_dtype)
    return Job(spec, generate_t2v, (_embeds(), request), {}, fields, (64, 48, 5, 1), "auto", previews)


def _single(loaded, job):
    return generate_t2v(loaded, *job.args)


def test_the_pool_samples_what_one_process_samples(pool, model_file, loaded):
    job = _job(model_file, loaded, previews=True)
    steps, previews, infos = [], [], []
    hooks = RunHooks(on_step=lambda done, total: steps.append((done, total)),
                     on_preview=lambda done, total, x0: previews.append((done, x0.shape)), on_info=infos.append)
    latents = pool.run(job, hooks)
    torch.testing.assert_close(latents, _single(loaded, job), atol=1e-5, rtol=0)
    assert steps == [(1, 3), (2, 3), (3, 3)]  # rank 0's progress, in order
    assert previews == [(i, (1, 16, 2, 6, 8)) for i in (1, 2, 3)]  # first and last of the 2 latent frames
    assert any(text.startswith("speed: attention") for text in infos)
    assert pool.loads == [1, 1]


def test_a_second_run_reuses_the_loaded_workers(pool, model_file, loaded):
    pids = pool.pids
    pool.run(_job(model_file, loaded))
    job = _job(model_file, loaded, seed=4)
    latents = pool.run(job)
    torch.testing.assert_close(latents, _single(loaded, job), atol=1e-5, rtol=0)
    assert pool.pids == pids and pool.loads == [1, 1]  # same processes, the model loaded once
    pool.run(_job(model_file, loaded, weight_dtype="bf16"))
    assert pool.loads == [2, 2]  # another load option: loaded again


def test_cancel_from_the_progress_hook_stops_both_ranks_at_one_step(pool, model_file, loaded):
    def cancel_after_the_first_step(done, total):
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        pool.run(_job(model_file, loaded, steps=4), RunHooks(on_step=cancel_after_the_first_step))
    stops = {rank: outcome for rank, outcome in pool.outcomes.items()}
    assert set(stops) == {0, 1} and stops[0] == stops[1] and stops[0][0] == "cancelled"
    assert 1 <= stops[0][1] < 4  # the same step end on both ranks, before the last
    loads = list(pool.loads)
    job = _job(model_file, loaded)
    torch.testing.assert_close(pool.run(job), _single(loaded, job), atol=1e-5, rtol=0)  # ready for the next
    assert pool.alive and pool.loads == loads


def test_cancel_while_the_model_loads_stops_before_the_first_step(pool, model_file, loaded):
    steps = []

    def interrupted():
        raise Cancelled

    with pytest.raises(Cancelled):
        pool.run(_job(model_file, loaded), RunHooks(on_step=lambda *a: steps.append(a), check_interrupt=interrupted))
    assert not steps and pool.outcomes == {0: ("cancelled", 0), 1: ("cancelled", 0)}


def test_hv15_loads_in_the_same_pool_and_samples_what_one_process_samples(pool, tmp_path):
    from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
    from hunyuan_video_suite.pipelines.hunyuan_video_15 import transformer_loading as loading15
    from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import Request15, generate
    from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15

    model = tiny_transformer15(TEXT_DIM, 24, 20, seed=4)
    path = save_transformer15(model, tmp_path / "hunyuanvideo1.5_480p_t2v.safetensors")
    loaded15 = loading15.load_transformer(path, dtype="fp32")
    g = torch.Generator().manual_seed(7)
    qwen_mask, byt5_mask = torch.zeros(1, 12, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long)
    qwen_mask[:, :5], byt5_mask[:, :2] = 1, 1
    positive = TextEmbeds15(torch.randn(1, 12, TEXT_DIM, generator=g), qwen_mask, torch.randn(1, 6, 24, generator=g),
                            byt5_mask)
    request = Request15(width=64, height=48, num_frames=5, steps=2, cfg=1.0, seed=2)
    loads = pool.loads[0]
    spec = ModelSpec(loading15.load_transformer, str(path), loaded15.variant.name, "fp32")
    fields = {"speed": loaded15.speed, "memory": loaded15.memory, "loras": ()}
    latents = pool.run(Job(spec, generate, (positive, None, request), {}, fields, (64, 48, 5, 1)))
    torch.testing.assert_close(latents, generate(loaded15, positive, None, request), atol=1e-5, rtol=0)
    assert pool.loads == [loads + 1] * 2


def test_a_killed_worker_names_its_rank_and_the_next_run_starts_afresh(pool, model_file, loaded):
    killed = pool.pids[1]

    def kill_rank_1(done, total):
        if done == 1:
            os.kill(killed, signal.SIGKILL)

    with pytest.raises(WorkerDied, match=r"rank 1 \(CPU\) stopped \(exit code -9, SIGKILL\)"):
        pool.run(_job(model_file, loaded, steps=3), RunHooks(on_step=kill_rank_1))
    assert not pool.alive and not pool.processes  # every worker stopped, none left waiting
    try:
        fresh = pool_module.pool_for(WORLD, "cpu")
        job = _job(model_file, loaded)
        torch.testing.assert_close(fresh.run(job), _single(loaded, job), atol=1e-5, rtol=0)
        assert killed not in fresh.pids and fresh.loads == [1, 1]
        assert pool_module.pool_for(WORLD, "cpu") is fresh  # the same settings keep the running pool
    finally:
        pool_module.close_pool()


def test_kept_objects_travel_once():
    module, other = torch.nn.Linear(64, 64), torch.nn.Linear(2, 2)
    sender, kept = wire.KeptObjects(), {}
    first = sender.job(("job", module), keep=[module])
    again = sender.job(("job", module), keep=[module])
    assert len(again) < len(first) // 4  # the weights travelled with the first job only
    received = wire.receive_job(first, kept)[1]
    assert wire.receive_job(again, kept)[1] is received  # the worker's same object, run after run
    torch.testing.assert_close(received.weight, module.weight)
    wire.receive_job(sender.job(("job", other), keep=[other]), kept)
    assert received not in kept.values() and len(kept) == 1  # an object no job keeps any more is dropped


def test_the_ranks_agree_on_one_stop_step():
    import multiprocessing

    agreement = wire.StopAgreement.create(multiprocessing.get_context("spawn"), 3)
    assert not agreement.opened.is_set()
    assert agreement.passes(1, 1) and agreement.passes(1, 2)  # rank 1 went on past step 2
    assert agreement.passes(2, 1)
    agreement.request(0, 2)  # rank 0 is told to stop at the end of step 2
    assert agreement.passes(0, 2) and agreement.passes(2, 2)  # one rank is past 2: all stop at 3
    assert not any(agreement.passes(rank, 3) for rank in range(3))
    agreement.reset()
    agreement.request(0, 1)
    assert not agreement.passes(0, 1) and not agreement.passes(1, 1)  # nobody past 1: all stop there
