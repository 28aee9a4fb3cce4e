"""The pack imports the way ComfyUI imports it and exposes every node."""

import importlib.util
import sys

from conftest import PACK_ROOT


def _import_under(name):
    spec = importlib.util.spec_from_file_location(name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_imports_under_a_path_derived_name():
    pack = _import_under("ComfyUI-HunyuanVideo-Suite-main")
    assert pack.NODE_CLASS_MAPPINGS
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
