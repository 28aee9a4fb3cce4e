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


def test_every_local_node_is_registered_with_prefixed_ids():
    pack = _import_under("hunyuan_video_suite_again")
    local = {"HYVS_TransformerLoader", "HYVS_VAELoader", "HYVS_TextEncoderLoader", "HYVS_DiffusersLoader",
             "HYVS_TextEncode", "HYVS_T2VSampler", "HYVS_SpeedOptions", "HYVS_Decode"}
    assert local <= set(pack.NODE_CLASS_MAPPINGS)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("HYVS_"), node_id
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("HunyuanVideo Suite")
        for type_name in cls.RETURN_TYPES:
            assert type_name.startswith("HYVS_") or type_name in {"LATENT", "IMAGE", "VIDEO", "STRING", "INT", "FLOAT"}
