"""Ulysses sequence parallel on 2 CPU processes (gloo) equals the single-process run: 13B and 1.5 T2V, odd
text lengths, batch 2 with CFG rows of different lengths; the wrong processor order is detected.

The two ranks run every scenario in one launch (importing torch and diffusers twice costs more than the
sampling), so the first test pays for the launch and the others read its results."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from parallel import ulysses_scenarios as sc

HERE = Path(__file__).resolve().parent
WORLD = 2
TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("ulysses") / "latents"
    port = str(_free_port())
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, str(HERE / "ulysses_worker.py"), str(out), *sc.SCENARIOS],
                                      cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} failed:\n{logs[rank][-4000:]}"
    saved = [torch.load(f"{out}.rank{rank}") for rank in range(WORLD)]
    for rank, got in enumerate(saved):
        assert not got["failures"], f"rank {rank}: " + "\n".join(got["failures"].values())
    return saved


@pytest.mark.parametrize("name", list(sc.SCENARIOS))
def test_two_ranks_equal_one_process(ranks_output, name):
    build, run = sc.SCENARIOS[name]
    single = run(build())
    for got in ranks_output:  # every rank ends with the whole latent
        torch.testing.assert_close(got["results"][name], single, atol=1e-5, rtol=0)


def test_the_wrong_processor_order_is_detected(ranks_output):
    errors = ranks_output[0]["results"]["order_errors"]
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
