"""The Memory, Speed, Preview Options and Multi-GPU nodes for a HunyuanVideo 1.5 transformer: the shared nodes on the
1.5 type."""

from __future__ import annotations

from ..shared.memory import HYVSMemoryOptions
from ..shared.multigpu import HYVSMultiGPU
from ..shared.preview import HYVSPreviewOptions
from ..shared.speed import HYVSSpeedOptions
from ..types import HV15_TRANSFORMER


def _on_hv15(base, description: str, tooltips: dict[str, str] | None = None):
    """`base` with the 1.5 transformer type in and out (its own socket type keeps it out of the 13B samplers)."""

    class Node(base):
        DESCRIPTION = description
        CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"
        RETURN_TYPES = (HV15_TRANSFORMER,)

        @classmethod
        def INPUT_TYPES(cls):
            spec = base.INPUT_TYPES()
            spec["required"]["transformer"] = (HV15_TRANSFORMER, {"tooltip": "From the HV1.5 transformer loader."})
            for name, tooltip in (tooltips or {}).items():
                kind, options = spec["required"][name]
                spec["required"][name] = (kind, {**options, "tooltip": tooltip})
            return spec

    Node.__name__ = Node.__qualname__ = base.__name__.replace("HYVS", "HYVSHV15")
    return Node


HYVSHV15MemoryOptions = _on_hv15(HYVSMemoryOptions, (
    "How the HunyuanVideo 1.5 transformer uses GPU memory: by default the planner keeps as many of its 54 blocks on "
    "the GPU as the request leaves room for and streams the rest; here you can switch that off or fix the count."),
    {"offload": "auto: the planner keeps as many of the 54 blocks on the GPU as fit and streams the others ahead of "
                "use (720p x 121 frames plans under 12 GB this way). off: everything on the GPU (fastest, ~17 GB in "
                "bf16 + activations). resident blocks: keep exactly that many."})
HYVSHV15SpeedOptions = _on_hv15(HYVSSpeedOptions, (
    "Makes HunyuanVideo 1.5 sampling faster: mask-free attention with the fastest installed kernel (the default), "
    "an optional step cache and torch.compile. Put it between the HV1.5 loader and the HV1.5 sampler."))

HYVSHV15PreviewOptions = _on_hv15(HYVSPreviewOptions, (
    "Chooses what the HV1.5 sampler's and super-resolution's live previews show: the first frame, as core's "
    "samplers, or the first, middle and last frames side by side. Put it between the HV1.5 loader and the sampler."))

HYVSHV15MultiGPU = _on_hv15(HYVSMultiGPU, (
    "Samples one HunyuanVideo 1.5 video on several GPUs of this machine (sequence parallel; 16 heads, so up to 8 "
    "GPUs with ulysses): a worker process per GPU keeps the transformer loaded between queue items. Put it between "
    "the HV1.5 loader and the HV1.5 sampler or super-resolution; gpus 1 samples in ComfyUI's process."))

NODE_CLASS_MAPPINGS = {"HYVS_HV15MemoryOptions": HYVSHV15MemoryOptions, "HYVS_HV15SpeedOptions": HYVSHV15SpeedOptions,
                       "HYVS_HV15PreviewOptions": HYVSHV15PreviewOptions, "HYVS_HV15MultiGPU": HYVSHV15MultiGPU}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HYVS_HV15PreviewOptions": "HunyuanVideo Suite: HV1.5 Preview Options",
    "HYVS_HV15MemoryOptions": "HunyuanVideo Suite: HV1.5 Memory Options",
    "HYVS_HV15SpeedOptions": "HunyuanVideo Suite: HV1.5 Speed Options",
    "HYVS_HV15MultiGPU": "HunyuanVideo Suite: HV1.5 Multi-GPU",
}
