"""Ulysses sequence parallel on 4 CPU processes (gloo) equals the single-process run: 13B T2V at batch 2 with real
CFG and odd text lengths (7 and 5 tokens over 4 ranks), and HunyuanCustom (reference tokens, three CFG rows of
two lengths in one call), on 4-head tiny models. One launch runs both; the 2-core CI box runs the 4 ranks
at one thread each."""

import pytest
from parallel import ulysses_scenarios as sc
from parallel.launch import launch
from parallel.ulysses_worker import WORKER

WORLD = 4
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory):
    return launch(WORLD, WORKER, list(sc.SCENARIOS_4), tmp_path_factory.mktemp("ulysses4") / "latents", TIMEOUT_S)


@pytest.mark.parametrize("name", list(sc.SCENARIOS_4))
def test_four_ranks_equal_one_process(ranks_output, name):
    build, run = sc.SCENARIOS_4[name]
    single = run(build())
    for got in ranks_output:
        sc.assert_same_run(got["results"][name], single)
    sc.assert_sharded([got["splits"][name] for got in ranks_output])
