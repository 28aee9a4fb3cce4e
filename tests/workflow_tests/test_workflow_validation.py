"""ComfyUI's prompt validation, offline: every shipped workflow passes, and broken ones fail with the right message.

The negative tests use small fake V1 node classes (defined here) next to the real core nodes,
so they do not depend on how our own nodes look today.
"""

from __future__ import annotations

import copy
import json

import pytest
from comfy_check import samples
from comfy_check.object_info import (
    core_object_info,
    full_object_info,
    manifest_files,
    model_folders,
    node_info,
    pack_object_info,
    validated_inputs,
)
from comfy_check.validator import WorkflowInvalid, check_workflow, validate_workflow, widget_layout
from conftest import PACK_ROOT

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))


# ----------------------------------------------------------------------------- fake nodes

class FakeLoader:
    MODEL_FILES = ["good_model.safetensors"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (cls.MODEL_FILES, {"tooltip": "A file in models/diffusion_models."}),
            "dtype": (["bf16", "fp16"], {"default": "bf16", "tooltip": "Weights dtype."}),
        }}

    RETURN_TYPES = ("FAKE_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model.",)
    FUNCTION = "load"
    CATEGORY = "HunyuanVideo Suite/test"
    DESCRIPTION = "Loads a fake model."


class FakeSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("FAKE_MODEL", {"tooltip": "The model."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 100, "tooltip": "Steps."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "tooltip": "Seed."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "Prompt."}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "Start image."})},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sample"
    CATEGORY = "HunyuanVideo Suite/test"


class FakeChecked(FakeSampler):
    """Checks `steps` itself, so ComfyUI skips its own range check for it."""

    @classmethod
    def VALIDATE_INPUTS(cls, steps):
        return True


FAKES = {"HYVS_FakeLoader": FakeLoader, "HYVS_FakeSampler": FakeSampler, "HYVS_FakeChecked": FakeChecked}
FAKE_NAMES = {"HYVS_FakeLoader": "HYVS Fake Loader", "HYVS_FakeSampler": "HYVS Fake Sampler"}


@pytest.fixture(scope="module")
def info():
    merged = core_object_info()
    merged.update(pack_object_info(FAKES, FAKE_NAMES))
    return merged


def fake_workflow() -> dict:
    """FakeLoader -> FakeSampler -> CreateVideo -> SaveVideo, in UI format 0.4."""
    node = samples._node
    nodes = [
        node(1, "HYVS_FakeLoader", ["good_model.safetensors", "bf16"],
             outputs=[samples._out("model", "FAKE_MODEL", [1])],
             properties={"models": [{"name": "good_model.safetensors", "url": "https://example.org/good_model.safetensors", "directory": "diffusion_models"}]}),
        node(2, "HYVS_FakeSampler", [30, 42, "randomize", "a cat"],
             inputs=[samples._in("model", "FAKE_MODEL", 1), samples._in("image", "IMAGE", None)],
             outputs=[samples._out("IMAGE", "IMAGE", [2])]),
        node(3, "CreateVideo", [24], inputs=[samples._in("images", "IMAGE", 2)], outputs=[samples._out("VIDEO", "VIDEO", [3])]),
        node(4, "SaveVideo", ["video/test", "auto", "auto"], inputs=[samples._in("video", "VIDEO", 3)]),
    ]
    links = [[1, 1, 0, 2, 0, "FAKE_MODEL"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "VIDEO"]]
    return {"last_node_id": 4, "last_link_id": 3, "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def problems_of(workflow, info, **kwargs) -> list[str]:
    return [str(p) for p in check_workflow(workflow, info, **kwargs)[1]]


# ----------------------------------------------------------------------------- shipped workflows

@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_shipped_workflow_passes_comfyui_validation(path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    with model_folders(manifest_files([workflow])):
        info = full_object_info()
        checks = validated_inputs()
    validate_workflow(workflow, info, name=path.name, validated_inputs=checks)


def test_shipped_workflows_only_use_registered_pack_nodes():
    ours = set(pack_object_info())
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text(encoding="utf-8"))
        for node in workflow.get("nodes", []):
            if node["type"].startswith("HYVS_"):
                assert node["type"] in ours, f"{path.name}: node {node['id']} uses unknown type {node['type']}"


# ----------------------------------------------------------------------------- object_info export

def test_node_info_rebuilds_a_core_entry_exactly():
    """A V1 class with KSampler's attributes gives exactly the entry a real ComfyUI served for KSampler."""
    core = core_object_info()["KSampler"]

    class KSampler:
        @classmethod
        def INPUT_TYPES(cls):
            return copy.deepcopy(core["input"])

        RETURN_TYPES = tuple(core["output"])
        OUTPUT_TOOLTIPS = tuple(core["output_tooltips"])
        DESCRIPTION = core["description"]
        CATEGORY = core["category"]
        RELATIVE_PYTHON_MODULE = "nodes"

    built = node_info("KSampler", KSampler, {"KSampler": "KSampler"})
    assert built == core
    assert list(built) == list(core)


def test_node_info_of_a_pack_style_class():
    built = node_info("HYVS_FakeLoader", FakeLoader, FAKE_NAMES)
    assert built == {
        "input": {"required": {
            "model_name": [["good_model.safetensors"], {"tooltip": "A file in models/diffusion_models."}],
            "dtype": [["bf16", "fp16"], {"default": "bf16", "tooltip": "Weights dtype."}],
        }},
        "input_order": {"required": ["model_name", "dtype"]},
        "output": ["FAKE_MODEL"],
        "output_is_list": [False],
        "output_name": ["model"],
        "name": "HYVS_FakeLoader",
        "display_name": "HYVS Fake Loader",
        "description": "Loads a fake model.",
        "python_module": "custom_nodes.hunyuan_video_suite",
        "category": "HunyuanVideo Suite/test",
        "output_node": False,
        "output_tooltips": ["The loaded model."],
    }
    assert validated_inputs(FAKES) == {"HYVS_FakeChecked": {"steps"}}


def test_pack_object_info_covers_every_node():
    info = pack_object_info()
    assert info, "the pack registers no nodes"
    for node_id, entry in info.items():
        assert node_id.startswith("HYVS_"), node_id
        assert entry["display_name"].startswith(("HunyuanVideo Suite", "HYVS")), entry["display_name"]
        assert entry["category"].startswith("HunyuanVideo Suite"), entry["category"]


def test_seed_widgets_get_a_control_value(info):
    names = [w.name for w in widget_layout(info["HYVS_FakeSampler"])]
    assert names == ["steps", "seed", "control_after_generate", "prompt"]
    assert [w.name for w in widget_layout(info["KSampler"])][:3] == ["seed", "control_after_generate", "steps"]
    assert [w.name for w in widget_layout(info["LoadImage"])] == ["image", "upload"]


# ----------------------------------------------------------------------------- the checks can fail

def test_the_fake_workflow_passes(info):
    prompt = validate_workflow(fake_workflow(), info)
    assert prompt["2"]["inputs"] == {"steps": 30, "seed": 42, "prompt": "a cat", "model": ["1", 0]}


def test_unknown_node_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["type"] = "HYVS_GoneSampler"
    assert problems_of(workflow, info) == [
        "node 2 (HYVS_GoneSampler): unknown node type 'HYVS_GoneSampler' (not in object_info: missing pack or renamed node)"
    ]


def test_wrong_link_type_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][2]["inputs"][0]["type"] = "FAKE_MODEL"
    workflow["links"][1] = [2, 1, 0, 3, 0, "FAKE_MODEL"]  # loader's model into CreateVideo.images
    workflow["nodes"][0]["outputs"][0]["links"] = [1, 2]
    found = problems_of(workflow, info)
    assert "node 3 (CreateVideo), input 'images': Return type mismatch between linked nodes: received_type(FAKE_MODEL) mismatch input_type(IMAGE)" in found


def test_out_of_range_value_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["widgets_values"][0] = 500
    assert problems_of(workflow, info) == ["node 2 (HYVS_FakeSampler), input 'steps': Value 500 bigger than max of 100"]
    workflow["nodes"][1]["widgets_values"][0] = 0
    assert problems_of(workflow, info) == ["node 2 (HYVS_FakeSampler), input 'steps': Value 0 smaller than min of 1"]


def test_validate_inputs_exempts_its_own_inputs(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["type"] = "HYVS_FakeChecked"
    workflow["nodes"][1]["widgets_values"][0] = 500
    assert problems_of(workflow, info, validated_inputs=validated_inputs(FAKES)) == []


def test_model_not_in_the_folder_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][0]["widgets_values"][0] = "other_model.safetensors"
    assert problems_of(workflow, info) == [
        "node 1 (HYVS_FakeLoader), input 'model_name': Value not in list: 'other_model.safetensors' not in ['good_model.safetensors']"
    ]


def test_missing_model_widget_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][0]["widgets_values"] = ["bf16"]
    assert problems_of(workflow, info) == [
        "node 1 (HYVS_FakeLoader): has 1 widget values but the node has 2 widgets (model_name, dtype): stale or hand-edited widgets_values",
        "node 1 (HYVS_FakeLoader), input 'model_name': Value not in list: 'bf16' not in ['good_model.safetensors']",
    ]


def test_missing_seed_control_value_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["widgets_values"] = [30, 42, "a cat"]
    assert problems_of(workflow, info) == [
        "node 2 (HYVS_FakeSampler): has 3 widget values but the node has 4 widgets (steps, seed, control_after_generate, prompt): stale or hand-edited widgets_values",
        "node 2 (HYVS_FakeSampler), input 'control_after_generate': 'a cat' is not a control mode "
        "(decrement, fixed, increment, increment-wrap, randomize): widget values are shifted",
    ]


def test_shifted_widget_values_are_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["widgets_values"] = [30, 42, "a cat", "randomize"]
    assert problems_of(workflow, info) == [
        "node 2 (HYVS_FakeSampler), input 'control_after_generate': 'a cat' is not a control mode "
        "(decrement, fixed, increment, increment-wrap, randomize): widget values are shifted"
    ]


def test_missing_required_link_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["inputs"][0]["link"] = None
    workflow["links"].pop(0)
    assert problems_of(workflow, info) == ["node 2 (HYVS_FakeSampler), input 'model': Required input is missing"]


def test_muted_source_drops_the_link(info):
    workflow = fake_workflow()
    workflow["nodes"][0]["mode"] = 2
    assert problems_of(workflow, info) == ["node 2 (HYVS_FakeSampler), input 'model': Required input is missing"]


def test_no_output_node_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][3]["mode"] = 2
    assert "node - (-): Prompt has no outputs" in problems_of(workflow, info)


def test_bad_combo_in_a_core_node_is_rejected(info):
    workflow = fake_workflow()
    workflow["nodes"][3]["widgets_values"][1] = "gif"
    assert problems_of(workflow, info) == ["node 4 (SaveVideo), input 'format': Value not in list: 'gif' not in ['auto', 'mp4']"]


def test_error_lists_every_problem(info):
    workflow = fake_workflow()
    workflow["nodes"][1]["widgets_values"][0] = 500
    workflow["nodes"][0]["widgets_values"][1] = "fp64"
    with pytest.raises(WorkflowInvalid) as caught:
        validate_workflow(workflow, info, name="broken.json")
    text = str(caught.value)
    assert text.startswith("broken.json fails ComfyUI's checks:")
    assert "node 1 (HYVS_FakeLoader), input 'dtype'" in text and "node 2 (HYVS_FakeSampler), input 'steps'" in text


# ----------------------------------------------------------------------------- other formats

def test_schema_version_1_is_read_like_0_4(info):
    workflow = fake_workflow()
    assert validate_workflow(samples.to_schema_v1(workflow), info) == validate_workflow(workflow, info)
    broken = samples.to_schema_v1(workflow)
    broken["nodes"][1]["widgets_values"][0] = 500
    assert problems_of(broken, info) == ["node 2 (HYVS_FakeSampler), input 'steps': Value 500 bigger than max of 100"]


def test_api_format_is_validated(info):
    prompt = validate_workflow(fake_workflow(), info)
    assert problems_of(prompt, info) == []
    prompt["2"]["inputs"]["steps"] = "many"
    prompt["3"]["inputs"]["images"] = ["1", 0]
    prompt["5"] = {"class_type": "HYVS_Missing", "inputs": {}}
    assert problems_of(prompt, info) == ["node 5 (HYVS_Missing): Cannot execute because node HYVS_Missing does not exist."]
    del prompt["5"]
    assert problems_of(prompt, info) == [
        "node 2 (HYVS_FakeSampler), input 'steps': Failed to convert an input value to a INT value: 'many', "
        "invalid literal for int() with base 10: 'many'",
        "node 3 (CreateVideo), input 'images': Return type mismatch between linked nodes: "
        "received_type(FAKE_MODEL) mismatch input_type(IMAGE)",
    ]


def test_ui_only_features_convert_like_the_frontend():
    """Reroute, PrimitiveNode, bypass, mute and Note (the browser test proves the frontend agrees)."""
    prompt, problems = check_workflow(samples.ui_graph_features(), core_object_info())
    assert problems == []
    assert samples.strip_meta(prompt) == samples.EXPECTED_FEATURES_PROMPT


def test_types_compatible_rules():
    from comfy_check.validator import types_compatible

    assert types_compatible("IMAGE", "IMAGE")
    assert types_compatible("IMAGE", "*") and types_compatible("*", "LATENT")
    assert types_compatible("INT", "INT,FLOAT") and types_compatible("STRING,INT", "FLOAT, INT")
    assert not types_compatible("IMAGE", "LATENT") and not types_compatible("IMAGE", ["a", "b"])


def test_inputs_saved_by_new_frontends_are_understood(info):
    """Frontends >= 1.16 save every widget as an input slot too, LoadImage's upload button included."""
    workflow = samples.ui_graph_features()
    workflow["nodes"][0]["inputs"] = [
        {"name": "image", "type": "COMBO", "widget": {"name": "image"}, "link": None},
        {"name": "upload", "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None},
    ]
    assert problems_of(workflow, info) == []
    workflow["nodes"][0]["inputs"].append({"name": "strength", "type": "FLOAT", "widget": {"name": "strength"}, "link": None})
    assert problems_of(workflow, info) == ["node 1 (LoadImage), input 'strength': the node has no input 'strength' (allowed: image)"]


def test_widget_input_fed_by_a_node_becomes_a_link(info):
    """A widget turned into an input and linked to a real node is queued as a link, type-checked like any other."""
    workflow = samples.ui_graph_features()
    create_video = workflow["nodes"][3]
    create_video["inputs"][1]["link"] = 7
    workflow["nodes"].append(samples._node(10, "PrimitiveFloat", [12.0], outputs=[samples._out("FLOAT", "FLOAT", [7])]))
    workflow["links"] = [l for l in workflow["links"] if l[0] != 4] + [[7, 10, 0, 4, 1, "FLOAT"]]
    prompt, problems = check_workflow(workflow, info)
    assert problems == []
    assert prompt["4"]["inputs"]["fps"] == ["10", 0]
    workflow["nodes"][-1]["type"] = "PrimitiveInt"
    workflow["nodes"][-1]["widgets_values"] = [12, "fixed"]
    assert problems_of(workflow, info) == [
        "node 4 (CreateVideo), input 'fps': Return type mismatch between linked nodes: received_type(INT) mismatch input_type(FLOAT)",
    ]
