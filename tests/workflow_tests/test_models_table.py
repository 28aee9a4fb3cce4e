"""Model manifests: each local workflow names every model file it loads, and the README table matches them."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from comfy_check import models_table
from comfy_check.frontend_server import MODEL_FOLDERS
from comfy_check.object_info import core_object_info, full_object_info, manifest_files, model_folders, model_inputs
from comfy_check.validator import widget_values_by_name
from conftest import PACK_ROOT

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
# Hosts the frontend offers a one-click download from (its missing-models dialog), and the file kinds.
DOWNLOAD_HOSTS = ("https://huggingface.co/", "https://civitai.com/")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
# Core loaders a workflow may use, and the model folder each of their inputs lists.
CORE_MODEL_INPUTS = {
    "UNETLoader": {"unet_name": [("", "diffusion_models")]},
    "VAELoader": {"vae_name": [("", "vae")]},
    "CLIPLoader": {"clip_name": [("", "text_encoders")]},
    "DualCLIPLoader": {"clip_name1": [("", "text_encoders")], "clip_name2": [("", "text_encoders")]},
    "CLIPVisionLoader": {"clip_name": [("", "clip_vision")]},
    "CheckpointLoaderSimple": {"ckpt_name": [("", "checkpoints")]},
    "LoraLoaderModelOnly": {"lora_name": [("", "loras")]},
    "LoraLoader": {"lora_name": [("", "loras")]},
}


def model_needs(workflow: dict, info: dict, inputs: dict) -> list[tuple[dict, str, str, str]]:
    """(node, input, folder, name) for every model file or folder the workflow's nodes load."""
    needs = []
    for node in workflow.get("nodes", []):
        sources = inputs.get(node["type"])
        if not sources or node["type"] not in info:
            continue
        values = widget_values_by_name(info[node["type"]], node.get("widgets_values") or [])
        for name, candidates in sources.items():
            value = values.get(name)
            if not isinstance(value, str) or not value:
                continue
            prefix, folder = next((c for c in candidates if value.startswith(c[0])), candidates[-1])
            needs.append((node, name, folder, value[len(prefix):]))
    return needs


@pytest.fixture(scope="module")
def model_input_map():
    found = dict(CORE_MODEL_INPUTS)
    found.update(model_inputs())
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_loaded_model_is_in_the_manifest(path, model_input_map):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    with model_folders(manifest_files([workflow])):
        info = full_object_info()
    for node, name, folder, file_name in model_needs(workflow, info, model_input_map):
        listed = (node.get("properties") or {}).get("models") or []
        entry = next((m for m in listed if m.get("name") == file_name and m.get("directory") == folder), None)
        assert entry is not None, (
            f"{path.name}: node {node['id']} ({node['type']}) loads '{file_name}' from models/{folder} via input '{name}', "
            f"but its properties.models does not list {{name: '{file_name}', directory: '{folder}', url}} (it lists {listed})"
        )
        url = entry.get("url", "")
        assert url.startswith(DOWNLOAD_HOSTS), f"{path.name}: {file_name}: url {url!r} is not on a host ComfyUI downloads from"
        if file_name.endswith(DOWNLOAD_SUFFIXES):
            assert urlsplit(url).path.rsplit("/", 1)[-1] == file_name, (
                f"{path.name}: {file_name}: the url {url!r} names another file; ComfyUI saves the download under the url's name"
            )


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_manifest_entries_are_complete(path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    for entry in models_table.manifest_entries(workflow):
        missing = [key for key in ("name", "url", "directory") if not entry.get(key)]
        assert not missing, f"{path.name}: a properties.models entry lacks {missing}: {entry}"
        assert entry["directory"] in MODEL_FOLDERS, (
            f"{path.name}: {entry['name']}: directory {entry['directory']!r} is not a ComfyUI model folder ({', '.join(MODEL_FOLDERS)})"
        )


def test_model_inputs_are_found_for_core_and_fake_loaders():
    class FakeLoader:
        @classmethod
        def INPUT_TYPES(cls):
            from hunyuan_video_suite.nodes import host

            return {"required": {"weights": (host.model_files("vae"), {}), "other": (["a", "b"], {})}}

        RETURN_TYPES = ("VAE",)

    assert model_inputs({"HYVS_Fake": FakeLoader}) == {"HYVS_Fake": {"weights": [("", "vae")]}}
    core = core_object_info()
    for node_type, names in CORE_MODEL_INPUTS.items():
        assert set(names) <= set(core[node_type]["input"]["required"]), node_type


def test_readme_table_matches_the_workflows():
    readme = PACK_ROOT / "README.md"
    assert readme.exists(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    table = models_table.render(models_table.collect(PACK_ROOT / "workflows"))
    assert models_table.replace_between_markers(text, table) == text, (
        "the README's model table is out of date; run: python3 tests/comfy_check/models_table.py --write README.md"
    )


def test_table_rendering(tmp_path):
    workflow = {"nodes": [{"id": 1, "type": "X", "properties": {"models": [
        {"name": "b.safetensors", "url": "https://huggingface.co/o/r/resolve/main/b.safetensors", "directory": "vae"},
        {"name": "a.safetensors", "url": "https://huggingface.co/o/r/resolve/main/a.safetensors", "directory": "vae"},
    ]}}]}
    (tmp_path / "one.json").write_text(json.dumps(workflow), encoding="utf-8")
    (tmp_path / "two.json").write_text(json.dumps(workflow), encoding="utf-8")
    table = models_table.render(models_table.collect(tmp_path))
    assert table.splitlines()[2] == (
        "| `a.safetensors` | `ComfyUI/models/vae/` | [link](https://huggingface.co/o/r/resolve/main/a.safetensors) | `one.json`, `two.json` |"
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{models_table.BEGIN}\nold\n{models_table.END}\noutro\n", encoding="utf-8")
    assert models_table.main(["--workflows", str(tmp_path), "--check", str(readme)]) == 1
    assert models_table.main(["--workflows", str(tmp_path), "--write", str(readme)]) == 0
    assert models_table.main(["--workflows", str(tmp_path), "--check", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8").startswith(f"intro\n{models_table.BEGIN}\n| File |")

    workflow["nodes"][0]["properties"]["models"][0]["url"] = "https://huggingface.co/other/b.safetensors"
    (tmp_path / "two.json").write_text(json.dumps(workflow), encoding="utf-8")
    with pytest.raises(ValueError, match="another workflow says"):
        models_table.collect(tmp_path)
