"""Test set-up: the pack is imported the way ComfyUI imports it, under a name of our choosing."""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "hunyuan_video_suite"
SHARED = PACK_ROOT.parent / "shared"


def _register_pack():
    """Make `hunyuan_video_suite.<sub>` importable without running the root `__init__`.

    Tests of `pipelines/` then import no node code; `test_pack_import.py` runs the root
    `__init__` itself, as ComfyUI does.
    """
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    return module


_register_pack()


def node_function(name: str):
    """The FUNCTION of the node registered as `name`, bound to a fresh instance, as ComfyUI calls it."""
    from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)
