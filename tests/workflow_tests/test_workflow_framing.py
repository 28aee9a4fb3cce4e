"""Every workflow in workflows/ opens framed in a 1280x720 window and carries a Note saying what it needs.

Workflows added later are checked too: the lists are read from the folder. To frame one, run
`python3 tests/comfy_check/framing.py --write workflows/<file>.json` (see that script's docstring).
"""

from __future__ import annotations

import json

import pytest
from comfy_check.framing import CANVAS_AREA, MIN_SCALE, Rect, best_view, framing_problems, node_boxes, workflow_problems
from comfy_check.validator import is_api_format
from conftest import PACK_ROOT
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS
from hunyuan_video_suite.pipelines.providers.keys import KEY_VARIABLES

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
NOTE_TYPES = ("Note", "MarkdownNote")


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_opens_framed(path):
    workflow = _load(path)
    assert not is_api_format(workflow), f"{path.name}: ship workflows in UI format (they carry the layout)"
    problems = workflow_problems(workflow)
    assert not problems, f"{path.name}: " + "; ".join(problems) + f" (fix: python3 tests/comfy_check/framing.py --write workflows/{path.name})"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_note_names_what_it_needs(path):
    workflow = _load(path)
    notes = [n for n in workflow["nodes"] if n["type"] in NOTE_TYPES]
    assert notes, f"{path.name}: add a Note saying which model files it needs and where they go (or where the API key goes)"
    text = "\n".join(str(v) for n in notes for v in n.get("widgets_values") or [])
    for node in workflow["nodes"]:
        for model in node.get("properties", {}).get("models", []):
            assert f"{model['directory']}/{model['name']}" in text, f"{path.name}: the Note does not say where {model['name']} goes"
        provider = getattr(NODE_CLASS_MAPPINGS.get(node["type"]), "PROVIDER", None)
        if provider:
            assert KEY_VARIABLES[provider] in text, f"{path.name}: the Note does not name {KEY_VARIABLES[provider]}"
            assert "api_keys.json" in text, f"{path.name}: the Note does not name the key file"


def _workflow(*nodes, ds=None):
    return {"nodes": [{"id": i, "type": "X", "pos": pos, "size": size} for i, (pos, size) in enumerate(nodes, 1)],
            "extra": {"ds": ds} if ds else {}}


def test_a_node_under_the_side_bar_or_past_the_edge_is_reported():
    at_origin = _workflow(([40, 80], [300, 200]))  # what the old workflows did: under the left icon bar
    assert "node 1 (X)" in workflow_problems(at_origin)[0]
    wide = _workflow(([100, 130], [300, 200]), ([1300, 130], [300, 200]))
    assert [p.split(" at ")[0] for p in workflow_problems(wide)] == ["node 2 (X)"]


def test_the_minimap_corner_and_tiny_scales_are_reported():
    corner = _workflow(([1100, 600], [100, 60]))
    assert any("under the frontend's panel" in p for p in workflow_problems(corner))
    zoomed_out = _workflow(([0, 0], [300, 200]), ds={"scale": 0.3, "offset": [300, 400]})
    assert any(f"below {MIN_SCALE}" in p for p in workflow_problems(zoomed_out))


def test_best_view_frames_a_wide_graph_at_the_largest_legible_scale():
    boxes = node_boxes(_workflow(([-500, -300], [400, 300]), ([0, -300], [400, 300]), ([500, 100], [400, 200])))
    scale, offset = best_view(boxes)
    assert MIN_SCALE <= scale < 1
    assert not framing_problems(boxes, scale, offset)
    small = node_boxes(_workflow(([-500, -300], [400, 300])))
    assert best_view(small)[0] == 1.0 and not framing_problems(small, *best_view(small))
    assert Rect(0, 0, 10, 10).inside(Rect(0, 0, 10, 10)) and not Rect(0, 0, 11, 10).inside(CANVAS_AREA)
