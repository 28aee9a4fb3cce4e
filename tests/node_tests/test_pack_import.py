"""The pack imports the way ComfyUI imports it and exposes every node."""

import importlib.util
import json
import subprocess
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


# Inside ComfyUI torch is already loaded; everything heavier is imported on first use (nodes/__init__.py).
_IMPORT_IN_FRESH_PYTHON = """
import importlib.util, json, sys, time
import torch
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("ComfyUI-HunyuanVideo-Suite", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
print(json.dumps({"seconds": time.perf_counter() - started, "nodes": len(pack.NODE_CLASS_MAPPINGS),
                  "loaded": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_importing_the_pack_leaves_transformers_and_diffusers_unloaded():
    result = subprocess.run([sys.executable, "-c", _IMPORT_IN_FRESH_PYTHON, str(PACK_ROOT)],
                            capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nodes"] > 0
    heavy = {"transformers", "diffusers"} & set(report["loaded"])
    assert not heavy, f"importing the pack imported {sorted(heavy)}: import them inside the function that uses them"
    # Generous: about 0.3 s on a 2-core CPU today; transformers + diffusers alone take several seconds.
    assert report["seconds"] < 2.0, f"importing the pack took {report['seconds']:.2f} s"
