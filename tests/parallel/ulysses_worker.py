"""One rank of the Ulysses CPU tests: joins the gloo group, runs the named scenarios Ulysses-parallel and saves
what they return (and, for `order_errors`, the errors the processor-order checks raise). Started by
`launch.launch(world, WORKER, ...)`: `python -m parallel.ulysses_worker OUT NAME...` from tests/, a process a rank."""

from __future__ import annotations

import sys
import traceback

import torch
from parallel import ulysses_scenarios as sc

ORDER_ERRORS = "order_errors"
WORKER = "parallel.ulysses_worker"


def _parallel(model, splits: set):
    """`model` (a LoadedTransformer or a bare model) made parallel; `splits` collects (tokens, this rank's) of the
    video stream at each call's first block: equality alone would not show a sequence left whole (attention over
    keys repeated N times gives the same result)."""
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    parallel = parallelize(getattr(model, "model", model))
    parallel.model.transformer_blocks[0].register_forward_hook(
        lambda module, args, out: splits.add((parallel._split.total, out[0].shape[1])))
    return model


def _order_errors() -> dict[str, str]:
    """The wrong orders: enable_parallelism before the mask-free processors, and a processor set afterwards."""
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
    from hunyuan_video_suite.pipelines.parallel.ranks import accelerator_count_fixed
    from hunyuan_video_suite.pipelines.parallel.ulysses import ProcessorOrderError, parallelize
    from hunyuan_video_suite.pipelines.speed.attention import MaskFreeAttention

    errors = {}
    model = sc.model13()
    config = ContextParallelConfig(ulysses_degree=torch.distributed.get_world_size(), ulysses_anything=True)
    with accelerator_count_fixed():
        model.enable_parallelism(config=config, cp_plan={})
    try:
        parallelize(model)
    except ProcessorOrderError as e:
        errors["enable_first"] = str(e)
    model = _parallel(sc.model13(), set())
    model.transformer_blocks[0].attn.set_processor(HunyuanVideoAttnProcessor2_0())
    try:
        with MaskFreeAttention.for_model(model).lengths((7,)):
            model(hidden_states=torch.zeros(1, 16, 2, 6, 8), timestep=torch.ones(1),
                  encoder_hidden_states=torch.zeros(1, 24, sc.TEXT_DIM), encoder_attention_mask=torch.ones(1, 24),
                  pooled_projections=torch.zeros(1, sc.POOLED_DIM), guidance=torch.ones(1))
    except ProcessorOrderError as e:
        errors["set_after"] = str(e)
    return errors


def main(out: str, names: list[str]) -> None:
    from hunyuan_video_suite.pipelines.parallel.ranks import close_ranks, init_ranks

    torch.set_num_threads(1)
    ranks = init_ranks()
    scenarios = {**sc.SCENARIOS, **sc.SCENARIOS_4}
    results, failures, splits = {}, {}, {}
    for name in names:
        try:
            if name == ORDER_ERRORS:
                results[name] = _order_errors()
            else:
                build, run = scenarios[name]
                splits[name] = set()
                results[name] = run(_parallel(build(), splits[name]))
        except Exception:  # reported to the test, which fails with it
            failures[name] = traceback.format_exc()
    torch.save({"results": results, "failures": failures, "splits": splits}, f"{out}.rank{ranks.rank}")
    close_ranks()


if __name__ == "__main__":
    sc.register_pack()
    main(sys.argv[1], sys.argv[2:])
