"""The multi-GPU benchmark runs only where several GPUs are lent, so its code is kept working here: two CPU
processes over gloo run it on a toy model (no figures are taken from it). HunyuanVideo 1.5 is the launched
family because its sampler batches the CFG branches, which CFG parallel splits; the 13B family runs in one
process, where every parallel row must say why it did not run."""

import os
import subprocess
import sys

import pytest
from conftest import PACK_ROOT

SCRIPT = PACK_ROOT / "benchmarks" / "speed_multigpu.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
TITLES = ("one GPU (rank 0 alone)", "Ulysses", "ring", "unified (ring x Ulysses)", "Ulysses + CFG parallel",
          "ring + CFG parallel", "unified + CFG parallel")


def _rows(stdout: str) -> dict[str, list[str]]:
    """The table: each row's cells after its title, keyed by the title."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("setup"))
    rows = {}
    for line in lines[header + 1 :]:
        title = next((t for t in sorted(TITLES, key=len, reverse=True) if line.startswith(t + " ")), None)
        if title:
            rows[title] = line[len(title) :].split()
    return rows


def _measured(cells: list[str]) -> dict[str, float]:
    """N, s/step, speed-up, efficiency and max |diff| of a measured row (its mesh takes 1 or 5 cells)."""
    mesh = 1 if cells[1] == "-" else 5
    n, rest = cells[0], cells[1 + mesh :]
    return {"n": float(n), "s": float(rest[0]), "speedup": float(rest[1]), "efficiency": float(rest[2]),
            "diff": float(rest[5])}


@pytest.fixture(scope="module")
def two_ranks():
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
         "--tiny", "--device", "cpu", "--family", "hv15", "--steps", "1"],
        capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_two_ranks_measure_ulysses_and_cfg_parallel_against_one(two_ranks):
    rows = _rows(two_ranks)
    assert set(rows) == set(TITLES), two_ranks
    one = _measured(rows["one GPU (rank 0 alone)"])
    assert one["n"] == 1 and one["speedup"] == 1.0 and one["diff"] == 0.0
    for title, mesh in (("Ulysses", "1 x 1 x 2"), ("Ulysses + CFG parallel", "2 x 1 x 1")):
        cells = rows[title]
        assert " ".join(cells[1:6]) == mesh, cells
        got = _measured(cells)
        assert got["n"] == 2 and got["s"] > 0
        assert got["speedup"] == pytest.approx(one["s"] / got["s"], rel=0.02, abs=0.01)
        assert got["efficiency"] == pytest.approx(got["speedup"] / 2, abs=0.01)
        assert got["diff"] < 1e-5  # the parallel run samples the one-GPU video
    assert "measured on rank 0 in this run" in two_ranks


def test_setups_the_engine_refuses_say_why(two_ranks):
    rows = _rows(two_ranks)
    for title in ("ring", "unified (ring x Ulysses)", "ring + CFG parallel", "unified + CFG parallel"):
        assert "skipped:" in rows[title], rows[title]
    assert "softmax statistics" in " ".join(rows["ring"])
    assert "per CFG half" in " ".join(rows["ring + CFG parallel"])


def test_one_process_measures_the_one_gpu_row_only():
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--cfg", "2", "--steps", "1",
                           "--setups", "one,ulysses,ulysses+cfg"], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = _rows(done.stdout)
    assert _measured(rows["one GPU (rank 0 alone)"])["s"] > 0
    assert "needs 2 or more ranks" in " ".join(rows["Ulysses"])
    assert "needs 2 or more ranks" in " ".join(rows["Ulysses + CFG parallel"])  # 13B true CFG batches its branches
