"""Multi-GPU node: several local GPUs sample one video, through a pool of worker processes that keep the model.

The node sets `parallel` (a ParallelChoice) on the transformer, as Preview Options sets `preview`. Every local
sampler samples through `sample`: without the node, or with one GPU, the run stays in ComfyUI's process as it
always did; with more it goes to the worker pool (pipelines/parallel/pool.py): one process per GPU, each loading
the transformer from the same file with the same options, sampling with the same function and inputs; rank 0
drives this node's progress bar, previews and text. Cancel stops every GPU at the next step end; a worker that
dies gives an error naming its GPU, and the next run starts the pool afresh.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import ExitStack

import torch

from ...pipelines.parallel.choice import MAX_GPUS, MODES, ParallelChoice
from .. import host
from ..types import TRANSFORMER
from .transformer_option import TransformerOption

CATEGORY = "HunyuanVideo Suite/sampling"


class HYVSMultiGPU(TransformerOption):
    DESCRIPTION = (
        "Samples one video on several GPUs of this machine (sequence parallel): each GPU gets a worker process that "
        "loads the transformer once and keeps it between queue items; the sampler's steps then split the video's "
        "tokens over the GPUs. Put it between the transformer loader and a HunyuanVideo Suite sampler; each GPU "
        "holds the whole model, and gpus 1 samples in ComfyUI's own process, as without the node."
    )
    CATEGORY = CATEGORY
    OUTPUT_TOOLTIPS = ("The same transformer, sampled on these GPUs.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (TRANSFORMER, {"tooltip": "From the transformer loader (or an options or LoRA node)."}),
                "gpus": ("INT", {"default": 2, "min": 1, "max": MAX_GPUS, "tooltip": "GPUs sampling the video: GPU 0 "
                         "to gpus - 1 of this machine (CUDA_VISIBLE_DEVICES picks them). Checked against the GPUs "
                         "ComfyUI sees when the sampler runs. 1: one GPU, in ComfyUI's process."}),
                "parallel": (list(MODES), {"default": MODES[0], "tooltip": "How attention is split: ulysses "
                             "(attention heads over the GPUs; any kernel; the fastest), ring (keys and values passed "
                             "round) or unified (both). ring and unified need attention flash or sage in Speed "
                             "Options."}),
                "cfg_parallel": ("BOOLEAN", {"default": False, "tooltip": "With CFG above 1: the two guidance "
                                 "branches on two halves of the GPUs (needs an even gpus; the Custom and HV1.5 "
                                 "samplers need cfg_batching auto or batched, 13B T2V and I2V batch them here)."}),
            }
        }

    def apply(self, transformer, gpus, parallel, cfg_parallel):
        choice = ParallelChoice(int(gpus), parallel, bool(cfg_parallel))
        choice.validate()
        return (dataclasses.replace(transformer, parallel=choice),)


def local_gpus() -> tuple[str, int]:
    """The device type the workers run on and how many of them this ComfyUI sees (0 without CUDA GPUs)."""
    device = host.torch_device()
    return ("cuda", torch.cuda.device_count()) if device.type == "cuda" else (device.type, 0)


def cfg_parallel_on(transformer) -> bool:
    """Whether the run goes to the workers with the two guidance branches on two halves of the GPUs."""
    choice = getattr(transformer, "parallel", None)
    return choice is not None and choice.active and choice.cfg_parallel


def cfg_batching(transformer, asked: str) -> str:
    """'batched' where CFG parallel is on and the user left cfg_batching on auto (each half of the GPUs runs one
    branch of a batched call); `asked` otherwise."""
    return "batched" if asked == "auto" and cfg_parallel_on(transformer) else asked


def own_cfg_batching(transformer) -> str:
    """cfg_batching for the samplers without that input (13B T2V and I2V): their branches one call at a time, as
    always, but batched where CFG parallel splits them (each half of the GPUs then runs one branch)."""
    return "batched" if cfg_parallel_on(transformer) else "sequential"


def sample(transformer, progress, size, run, *args, node_id=None, modules=(), batched_cfg=False, **kwargs):
    """`run(transformer, *args, device=, on_step=, on_preview=, on_info=, **kwargs)`, a pipeline's sampling function
    (generate_t2v, ...), with `progress` (a SamplingProgress) driven by it. `size` (width, height, frames, batch) is
    what the memory plan is made for, `modules` other models the run needs on the GPU (the SR upsampler);
    `batched_cfg`: the run batches its guidance branches in one call, which cfg_parallel splits."""
    choice = getattr(transformer, "parallel", None)
    if choice is not None and choice.active:
        return _on_gpus(choice, transformer, progress, size, run, args, kwargs, node_id, modules, batched_cfg)
    with ExitStack() as stack:
        if modules:
            stack.enter_context(host.on_compute_device(*modules))
        device = stack.enter_context(host.transformer_on_compute_device(transformer, *size, node_id=node_id))
        return run(transformer, *args, device=device, on_step=progress.on_step, on_preview=progress.on_preview,
                   on_info=lambda text: host.send_progress_text(text, node_id), **kwargs)


def _on_gpus(choice, transformer, progress, size, run, args, kwargs, node_id, modules, batched_cfg):
    from ...pipelines.parallel.choice import check_run
    from ...pipelines.parallel.pool import RunHooks, pool_for
    from ...pipelines.parallel.worker import Job, ModelSpec

    device_type, available = local_gpus()
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device(device_type)
    check_run(choice, transformer, available, device, batched_cfg)
    variant = getattr(transformer.variant, "name", transformer.variant)  # 1.5's Variant, or the 13B's name
    spec = ModelSpec(sys.modules[type(transformer).__module__].load_transformer, transformer.source, variant,
                     transformer.weight_dtype)
    host.send_progress_text(f"multi-GPU: {choice.describe()}", node_id)
    host.free_memory_for_sampling()  # GPU 0 is rank 0's too
    pool = pool_for(choice.gpus, device_type, choice.parallelize_options())
    if pool.spec != spec:
        host.send_progress_text(f"multi-GPU: loading the transformer on {choice.gpus} GPUs", node_id)
    fields = {"speed": transformer.speed, "memory": transformer.memory, "loras": transformer.loras}
    job = Job(spec, run, args, kwargs, fields, tuple(size), transformer.speed.attention,
              previews=progress.on_preview is not None)
    preview = progress.on_preview
    hooks = RunHooks(on_step=progress.on_step, on_info=lambda text: host.send_progress_text(text, node_id),
                     on_preview=(lambda done, total, x0: preview(done, total, x0.to(host.torch_device())))
                     if preview is not None else None, check_interrupt=host.check_interrupt)
    return pool.run(job, hooks, keep=[*(lora.lora for lora in transformer.loras), *modules])


NODE_CLASS_MAPPINGS = {"HYVS_MultiGPU": HYVSMultiGPU}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_MultiGPU": "HunyuanVideo Suite: Multi-GPU"}
