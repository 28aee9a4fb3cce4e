"""One rank of the Ulysses CPU tests: joins the gloo group, runs every scenario Ulysses-parallel, saves the
latents (rank 0) and the errors the processor-order checks raise. Started by `test_ulysses_cpu.py`."""

from __future__ import annotations

import sys
import traceback

import torch
import ulysses_scenarios as sc

torch.set_num_threads(1)


def _parallel(model):
    from hunyuan_video_suite.pipelines.parallel.ulysses import parallelize

    parallelize(getattr(model, "model", model))  # a LoadedTransformer or a bare model
    return model


def _order_errors() -> dict[str, str]:
    """The wrong orders: enable_parallelism before the mask-free processors, and a processor set afterwards."""
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
    from hunyuan_video_suite.pipelines.parallel.ranks import accelerator_count_fixed
    from hunyuan_video_suite.pipelines.parallel.ulysses import ProcessorOrderError, parallelize

    errors = {}
    model = sc.model13()
    with accelerator_count_fixed():
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2, ulysses_anything=True), cp_plan={})
    try:
        parallelize(model)
    except ProcessorOrderError as e:
        errors["enable_first"] = str(e)
    model = _parallel(sc.model13())
    model.transformer_blocks[0].attn.set_processor(HunyuanVideoAttnProcessor2_0())
    from hunyuan_video_suite.pipelines.speed.attention import MaskFreeAttention

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

    ranks = init_ranks()
    results, failures = {}, {}
    for name in names:
        build, run = sc.SCENARIOS[name]
        try:
            results[name] = run(_parallel(build()))
        except Exception:  # reported to the test, which fails with it
            failures[name] = traceback.format_exc()
    try:
        results["order_errors"] = _order_errors()
    except Exception:
        failures["order_errors"] = traceback.format_exc()
    torch.save({"results": results, "failures": failures}, f"{out}.rank{ranks.rank}")
    close_ranks()


if __name__ == "__main__":
    sc.register_pack()
    main(sys.argv[1], sys.argv[2:])
