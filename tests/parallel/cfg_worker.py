"""One rank of the CFG parallel CPU tests: joins the gloo group, runs every scenario named on the command line with
cfg_parallel (the rest of the ranks of a half on Ulysses), saves the latents, the (rows, video tokens) the first
block's attention saw, and the error a call of one row raises. Started by `test_cfg_parallel_cpu.py`."""

from __future__ import annotations

import sys
import traceback

import torch
from parallel import cfg_scenarios as cs
from parallel import ulysses_scenarios as sc

torch.set_num_threads(1)


def _parallel(transformer, seen: list):
    """`transformer` (a loaded one or a bare model) CFG parallel, the first block's attention inputs recorded."""
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    def record(module, args, kwargs):
        seen.append(tuple(kwargs["hidden_states"].shape[:2]))

    model = getattr(transformer, "model", transformer)
    parallelize(model, cfg_parallel=True)
    model.transformer_blocks[0].attn.register_forward_pre_hook(record, with_kwargs=True)
    return transformer


def _one_row_error() -> str:
    """13B T2V without CFG: every call carries one row, which cfg_parallel refuses."""
    try:
        sc.run13(_parallel(sc.model13(), []))
    except ValueError as e:
        return str(e)
    return ""


def main(out: str, names: list[str]) -> None:
    from hunyuan_video_suite.pipelines.parallel.ranks import close_ranks, init_ranks

    ranks = init_ranks()
    results, seen, failures = {}, {}, {}
    for name in names:
        build, run, _ = cs.SCENARIOS[name]
        seen[name] = []
        try:
            results[name] = run(_parallel(build(), seen[name]))
        except Exception:  # reported to the test, which fails with it
            failures[name] = traceback.format_exc()
    try:
        results["one_row"] = _one_row_error()
    except Exception:
        failures["one_row"] = traceback.format_exc()
    torch.save({"results": results, "seen": seen, "failures": failures}, f"{out}.rank{ranks.rank}")
    close_ranks()


if __name__ == "__main__":
    sc.register_pack()
    main(sys.argv[1], sys.argv[2:])
