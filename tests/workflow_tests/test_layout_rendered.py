"""Every shipped workflow laid out like core's templates, as the real frontend draws it (issue 21, item 3).

Each workflow is opened in each supported frontend (the newest comfyui-frontend-package and the floor
in pyproject.toml, as in test_frontend.py), in one browser session per frontend, and the graph the
frontend laid out is measured (comfy_check/browser.py `RENDERED_LAYOUT`: node boxes with the title bar,
grown to what the node draws; widget boxes; groups; links). Then (comfy_check/layout.py):
- no two nodes overlap, and no Note covers another node's widget;
- every node is inside exactly one group, each group has a stage's title, groups do not overlap;
- links read left to right: a node's inputs come from nodes wholly to its left.

To lay a workflow out again (after a node gains widgets, say): `python3 tests/comfy_check/layout.py --write`.
Skips (loudly) only when no Chromium is installed at /usr/bin/chromium; `bash .ci/setup test` installs it.
"""

from __future__ import annotations

import json

import pytest
from comfy_check.browser import CHROMIUM
from comfy_check.framing import WINDOW
from comfy_check.frontend_server import frontends
from comfy_check.layout import (
    backward_links,
    group_problems,
    layout_problems,
    notes_over_widgets,
    overlapping_nodes,
)
from comfy_check.validator import is_api_format
from conftest import PACK_ROOT

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
UI_WORKFLOWS = [p for p in WORKFLOWS if not is_api_format(json.loads(p.read_text(encoding="utf-8")))]
FRONTENDS = frontends()
STAGE_TITLES = ("Models", "Image", "Prompt", "Prompt and image", "Sampling", "Sampling and super-resolution",
                "Output", "Read me")

# Too wide for the 1280x720 window at a legible scale with all six stages side by side (the HV1.5
# loaders and image conditioning are drawn 300-360 units wide): Save Video sits under the decoder.
KNOWN_BACKWARD = {"hunyuan15_720p_to_1080p_i2v_sr_local.json": "node 12 (SaveVideo) takes an input from node 14"}


@pytest.fixture(scope="module", params=sorted(FRONTENDS) or ["none installed"])
def rendered(request):
    """{workflow file name: the frontend's layout of it}, for one frontend, measured in one browser session."""
    if request.param not in FRONTENDS:
        pytest.fail("no comfyui-frontend-package installed: run `bash .ci/setup test`")
    if not CHROMIUM.exists():
        pytest.skip("!!! LAYOUT CHECK SKIPPED: no Chromium at /usr/bin/chromium (`bash .ci/setup test` installs it). "
                    "Shipped workflows were NOT measured in the real frontend. !!!")
    from comfy_check.browser import Frontend
    from comfy_check.frontend_server import FrontendServer
    from comfy_check.layout import _server_inputs

    workflows = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in UI_WORKFLOWS}
    info, models = _server_inputs(list(workflows.values()))
    layouts = {}
    with FrontendServer(info, models, static_root=FRONTENDS[request.param]) as server:
        browser = Frontend(server.url, window=WINDOW)
        try:
            for name, workflow in workflows.items():
                browser.load(workflow)
                layouts[name] = browser.rendered_layout()
        finally:
            browser.close()
    return layouts


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_no_node_overlaps_another_and_no_note_covers_a_widget(rendered, path):
    layout = rendered[path.name]
    assert len(layout["nodes"]) == len(json.loads(path.read_text(encoding="utf-8"))["nodes"])
    problems = overlapping_nodes(layout) + notes_over_widgets(layout)
    assert not problems, f"{path.name}: " + "; ".join(problems) + " (fix: python3 tests/comfy_check/layout.py --write)"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_every_node_is_in_one_labelled_stage_group(rendered, path):
    layout = rendered[path.name]
    problems = group_problems(layout)
    titles = [g["title"] for g in layout["groups"]]
    problems += [f"group {t!r} is not a stage" for t in titles if t not in STAGE_TITLES and not t.startswith("Generate on ")]
    assert len(titles) >= 2 or len(layout["nodes"]) <= 1, f"{path.name}: the stages are not grouped ({titles})"
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_links_read_left_to_right(rendered, path):
    problems = backward_links(rendered[path.name])
    known = KNOWN_BACKWARD.get(path.name)
    if known:
        assert len(problems) == 1 and problems[0].startswith(known), f"{path.name}: {problems}"
        pytest.xfail(f"{path.name}: {known} (Save Video under the decoder: the graph is too wide to open framed otherwise)")
    assert not problems, f"{path.name}: " + "; ".join(problems)


# ------------------------------------------------------------------ the checks themselves, no browser

def _node(node_id, box, kind="X", widgets=()):
    return {"id": str(node_id), "type": kind, "box": list(box), "widgets": [{"name": n, "box": list(b)} for n, b in widgets]}


def _group(title, box, title_height=34):
    return {"title": title, "box": list(box), "title_height": title_height}


def test_the_checks_find_overlaps_notes_groups_and_backward_links():
    sampler = _node(1, (100, 0, 400, 300), "Sampler", widgets=[("steps", (100, 250, 400, 274))])
    note = _node(2, (150, 260, 450, 500), "Note")
    loader = _node(3, (350, 0, 600, 100), "Loader")
    layout = {"nodes": [sampler, note, loader], "links": [["3", "1"]],
              "groups": [_group("Models", (90, -50, 620, 520)), _group("", (0, 600, 100, 700))]}
    problems = layout_problems(layout)
    assert len(problems["overlapping nodes"]) == 2  # sampler-note, sampler-loader
    assert problems["notes over widgets"] == ["node 2 (Note) covers widget 'steps' of node 1 (Sampler)"]
    assert any("no title" in p for p in problems["groups"]) and any("holds no node" in p for p in problems["groups"])
    assert problems["links right to left"][0].startswith("node 1 (Sampler) takes an input from node 3 (Loader)")
    # a node reaching into the group's title bar is not inside it; one inside two groups is reported too
    node = _node(1, (0, 10, 100, 100))
    assert any("inside 0 groups" in p for p in group_problems({"nodes": [node], "groups": [_group("A", (-10, 0, 110, 110))]}))
    two = {"nodes": [node], "groups": [_group("A", (-10, -30, 110, 110)), _group("B", (-20, -100, 120, 120))]}
    assert any("inside 2 groups ['A', 'B']" in p for p in group_problems(two))


def test_a_clean_layout_passes():
    layout = {"nodes": [_node(1, (0, 40, 200, 200), "Loader"), _node(2, (240, 40, 500, 300), "Sampler"),
                        _node(3, (0, 220, 200, 400), "Note")],
              "links": [["1", "2"]],
              "groups": [_group("Models", (-10, 0, 210, 410)), _group("Sampling", (230, 0, 510, 310))]}
    assert layout_problems(layout) == {"overlapping nodes": [], "notes over widgets": [], "groups": [],
                                       "links right to left": []}
