"""ComfyUI nodes: a thin skin over `pipelines/`, laid out as it is (one folder per model family, `shared/` for
the option and decode nodes, `api` for the provider nodes). Each module registers its own node classes;
ComfyUI's services are reached only through `host`.

Import rule (ComfyUI prints every pack's import time at startup; tests/node_tests/test_pack_import.py guards it):
importing the pack may load torch and light libraries, never transformers or diffusers. Node modules
import `pipelines` modules at the top; `pipelines` modules import transformers/diffusers inside the
function that uses them (type hints under `if TYPE_CHECKING:`). Only the test/demo model builders
(pipelines/demo/), which no node imports, import them at the top.
"""

from . import api, api_price
from .hunyuan_video_13b import custom, i2v, loaders, lora, t2v
from .hunyuan_video_15 import i2v as hv15_i2v
from .hunyuan_video_15 import loaders as hv15_loaders
from .hunyuan_video_15 import lora as hv15_lora
from .hunyuan_video_15 import options as hv15_options
from .hunyuan_video_15 import sampler as hv15_sampler
from .hunyuan_video_15 import super_resolution as hv15_super_resolution
from .hunyuan_video_15 import text as hv15_text
from .hunyuan_video_15 import vae as hv15_vae
from .hunyuan_video_15 import vision as hv15_vision
from .shared import decode, memory, multigpu, preview, speed

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
_HV15 = (hv15_loaders, hv15_lora, hv15_options, hv15_text, hv15_vision, hv15_vae, hv15_i2v, hv15_sampler,
         hv15_super_resolution)
for _module in (loaders, lora, memory, t2v, i2v, custom, speed, preview, multigpu, decode, *_HV15, api):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
api_price.register()  # the price route of the API nodes' frontend extension (inside ComfyUI only)
