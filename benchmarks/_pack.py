"""Import the pack's `pipelines` from a checkout whatever its folder is called (ComfyUI folder names may
hold dashes), without running the root `__init__` (no ComfyUI nodes needed here)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "hunyuan_video_suite"


def pipelines(name: str):
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
        )
        sys.modules[PACK_NAME] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{PACK_NAME}.pipelines.{name}")
