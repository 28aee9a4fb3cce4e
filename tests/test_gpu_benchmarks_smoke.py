"""The GPU benchmarks run only where a GPU is lent, so their code is kept working here: each has a
--smoke mode that runs the same code on the CPU with a toy model (no figures are taken from it)."""

import os
import subprocess
import sys

from conftest import PACK_ROOT


def _smoke(script, *args):
    # one torch thread: the toy models gain nothing from more, and on a busy CPU every multi-threaded op
    # waits for its workers to be scheduled (measured: 30x slower per model call under load)
    done = subprocess.run([sys.executable, str(PACK_ROOT / "benchmarks" / script), "--smoke", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_offload_benchmark_runs_every_setting():
    for weights in ("bf16", "fp8"):
        out = _smoke("gpu_offload.py", "--weights", weights)
        for setting in ("off", "auto", "40", "20", "0"):
            assert f"64x32x5 offload={setting}: " in out
        assert "0/5 blocks on the GPU, the rest streamed" in out and "refused" not in out


def test_speed_benchmark_runs_every_setting():
    out = _smoke("speed_gpu.py")
    for setting in ("plain diffusers HunyuanVideoPipeline", "ours, every feature off", "ours, mask-free sdpa",
                    "ours, mask-free auto + compile"):
        assert setting in out
    assert "sdpa, trimmed" in out


def test_hv15_speed_benchmark_runs_every_setting():
    out = _smoke("speed_gpu_hv15.py", "--steps", "1")
    for setting in ("plain diffusers HunyuanVideo15Pipeline", "ours, defaults (mask-free auto, CFG batched)",
                    "ours, mask-free auto, CFG sequential", "ours, defaults + first_block cache",
                    "ours, defaults + teacache_fast", "ours, offload auto, CFG sequential (12 GB free)"):
        assert setting in out
    assert "out of memory" not in out and "refused" not in out and "memory plan: all 2 blocks on the GPU" in out
