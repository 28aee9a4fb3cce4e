"""ComfyUI nodes: a thin skin over `pipelines/`, laid out as it is (one folder per model family, `shared/` for
the option and decode nodes, `api` for the provider nodes). Each module registers its own node classes;
ComfyUI's services are reached only through `host`.

Import rule (ComfyUI prints every pack's import time at startup; tests/node_tests/test_pack_import.py guards it):
importing the pack may load torch and light libraries, never transformers or diffusers. Node modules
import `pipelines` modules at the top; `pipelines` modules import transformers/diffusers inside the
function that uses them (type hints under `if TYPE_CHECKING:`). Only the test/demo model builders
(pipelines/demo/), which no node imports, import them at the top.
"""

from . import api
from .hunyuan_video_13b import custom, i2v, loaders, t2v
from .shared import decode, memory, speed

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loaders, memory, t2v, i2v, custom, speed, decode, api):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
