"""ComfyUI nodes: a thin skin over `pipelines/`. Each module registers its own node classes.

Import rule (ComfyUI prints every pack's import time at startup; tests/test_pack_import.py guards it):
importing the pack may load torch and light libraries, never transformers or diffusers. Node modules
import `pipelines` modules at the top; `pipelines` modules import transformers/diffusers inside the
function that uses them (type hints under `if TYPE_CHECKING:`). Only the test/demo model builders
(pipelines/tiny*.py), which no node imports, import them at the top.
"""

from . import api, custom, decode, i2v, loaders, memory, sampling, speed

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loaders, memory, sampling, i2v, custom, speed, decode, api):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
