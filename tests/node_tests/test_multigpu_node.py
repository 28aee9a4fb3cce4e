"""The Multi-GPU node: one GPU changes nothing, what the workers could not run is refused before any starts, and
the T2V sampler on two workers (CPU processes over gloo standing in for GPUs) gives one process's latent while
rank 0 moves the node's progress bar and previews. One pool for the module."""

from types import SimpleNamespace

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS, host
from hunyuan_video_suite.nodes.shared import multigpu
from hunyuan_video_suite.nodes.types import HV15_TRANSFORMER
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.denoise.text_embeds import TextEmbeds
from hunyuan_video_suite.pipelines.parallel import pool as pool_module
from hunyuan_video_suite.pipelines.parallel.choice import ParallelChoice

TEXT_DIM, POOLED_DIM = 32, 16
T2V = dict(width=64, height=48, num_frames=5, steps=3, embedded_guidance=6.0, cfg=1.0, flow_shift=7.0, seed=2)


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    path = tmp_path_factory.mktemp("multigpu") / "hunyuan_video_t2v_720p_bf16.safetensors"
    save_transformer(tiny_transformer(TEXT_DIM, POOLED_DIM, 16, variant="t2v", seed=3), path)
    return _node("HYVS_TransformerLoader")(str(path), "auto", "fp32")[0]


@pytest.fixture
def no_workers(monkeypatch):
    """Fails the test if a worker pool would start."""
    monkeypatch.setattr(pool_module.WorkerPool, "start", lambda self: pytest.fail("a worker pool started"))


def _positive() -> TextEmbeds:
    g = torch.Generator().manual_seed(5)
    mask = torch.zeros(1, 24, dtype=torch.long)
    mask[:, :7] = 1
    return TextEmbeds(torch.randn(1, 24, TEXT_DIM, generator=g), mask, torch.randn(1, POOLED_DIM, generator=g))


def _t2v(transformer, **changes):
    return _node("HYVS_T2VSampler")(transformer, _positive(), **{**T2V, **changes})[0]["samples"]


def _on(transformer, gpus=2, parallel="ulysses", cfg_parallel=False):
    return _node("HYVS_MultiGPU")(transformer, gpus, parallel, cfg_parallel)[0]


def test_one_gpu_samples_here_as_without_the_node(transformer, no_workers):
    one = _on(transformer, gpus=1)
    assert one.parallel == ParallelChoice(1) and one.model is transformer.model and transformer.parallel is None
    torch.testing.assert_close(_t2v(one), _t2v(transformer), atol=0, rtol=0)


def test_more_gpus_than_comfyui_sees_are_refused_before_any_worker_starts(transformer, no_workers, monkeypatch):
    with pytest.raises(ValueError, match="asks for 2 GPUs but this ComfyUI sees no CUDA GPU"):
        _t2v(_on(transformer))  # the CPU here
    monkeypatch.setattr(multigpu, "local_gpus", lambda: ("cuda", 3))
    with pytest.raises(ValueError, match="asks for 4 GPUs but this ComfyUI sees 3 CUDA GPUs: set gpus to at most 3"):
        _t2v(_on(transformer, gpus=4))


def test_what_the_workers_could_not_run_is_refused_first(transformer, no_workers, monkeypatch):
    monkeypatch.setattr(multigpu, "local_gpus", lambda: ("cpu", 8))
    with pytest.raises(ValueError, match="cfg_parallel splits the two guidance branches of one batched model call"):
        _t2v(_on(transformer, cfg_parallel=True))  # CFG off: one branch
    with pytest.raises(ValueError, match="needs an attention kernel that returns its softmax statistics"):
        _t2v(_on(transformer, parallel="ring"))  # no such kernel on a CPU
    masked = _node("HYVS_SpeedOptions")(transformer, "masked", "off", 0.0, False)[0]
    with pytest.raises(ValueError, match="mask-free attention only"):
        _t2v(_on(masked))
    with pytest.raises(ValueError, match="3 GPUs do not halve"):
        _on(transformer, gpus=3, cfg_parallel=True)


def test_cfg_parallel_batches_the_t2v_branches(transformer, monkeypatch):
    """The T2V sampler has no cfg_batching input: one call per branch, as always, but one batched call for the two
    halves of the GPUs to split under cfg_parallel."""
    jobs = []

    class Pool:
        spec = None

        def run(self, job, hooks, keep):
            jobs.append(job)
            return torch.zeros(1)

    monkeypatch.setattr(multigpu, "local_gpus", lambda: ("cpu", 2))
    monkeypatch.setattr(pool_module, "pool_for", lambda *args: Pool())
    _t2v(_on(transformer, cfg_parallel=True), cfg=3.0, negative=_positive())
    _t2v(_on(transformer), cfg=3.0, negative=_positive())
    assert [job.args[1].cfg_batching for job in jobs] == ["batched", "sequential"]


def test_the_hv15_twin_takes_the_hv15_transformer():
    node = NODE_CLASS_MAPPINGS["HYVS_HV15MultiGPU"]
    assert node.INPUT_TYPES()["required"]["transformer"][0] == HV15_TRANSFORMER
    assert node.RETURN_TYPES == (HV15_TRANSFORMER,)


class FakeBar:
    updates = []

    def __init__(self, total, node_id=None):
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        FakeBar.updates.append((self.node_id, value, total, preview))


class Previewer:
    """latent_preview's previewer: records the latent frames it is given."""

    def __init__(self):
        self.shapes = []

    def get_previewer(self, device, latent_format):
        return self

    def decode_latent_to_preview_image(self, preview_format, x0):
        self.shapes.append(tuple(x0.shape))
        return "JPEG", None, 512


def test_t2v_on_two_workers_equals_one_process(transformer, monkeypatch):
    single = _t2v(transformer)
    FakeBar.updates, previewer, texts = [], Previewer(), []
    monkeypatch.setattr(multigpu, "local_gpus", lambda: ("cpu", 2))  # CPU processes over gloo stand in for GPUs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each worker on one thread
    monkeypatch.setattr(host, "_comfy_utils", SimpleNamespace(ProgressBar=FakeBar))
    monkeypatch.setattr(host, "_latent_preview", previewer)
    monkeypatch.setattr(host, "send_progress_text", lambda text, node_id: texts.append(text))
    try:
        parallel = _node("HYVS_T2VSampler")(_on(transformer), _positive(), **T2V, unique_id="7")[0]["samples"]
        pool = pool_module.pool_for(2, "cpu")
        assert pool.loads == [1, 1]
    finally:
        pool_module.close_pool()
    torch.testing.assert_close(parallel, single, atol=1e-5, rtol=0)
    assert [(node, value, total) for node, value, total, _ in FakeBar.updates] == [("7", i, 3) for i in (1, 2, 3)]
    assert all(preview == ("JPEG", None, 512) for *_, preview in FakeBar.updates)  # rank 0's previews
    assert previewer.shapes == [(1, 16, 1, 6, 8)] * 3  # the first frame of the latent rank 0 sent
    assert texts[0] == "multi-GPU: ulysses over 2 GPUs" and any(text.startswith("speed: ") for text in texts)
