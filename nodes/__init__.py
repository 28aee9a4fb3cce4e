"""ComfyUI nodes: a thin skin over `pipelines/`. Each module registers its own node classes."""

from . import api, decode, loaders, memory, sampling

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loaders, memory, sampling, decode, api):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
