"""Every shipped workflow in ComfyUI's real frontend (comfyui-frontend-package) in Debian's Chromium.

One browser serves all workflows. For each one: every node type is known (no red "missing
node" placeholders) and no node is flagged, nothing throws, each widget shows the value the
file meant for it, `app.graphToPrompt()` equals our own UI->API conversion, and ComfyUI's
validation rules accept that prompt. The object_info served is our nodes plus the core file,
with model folders holding exactly the files the workflows' `properties.models` list.

It also opens framed: at the 1280x720 window the framing check assumes (comfy_check/framing.py),
every node's corners and centre are on screen and under no panel of the frontend's own.

All of it runs against each frontend `comfy_check.frontend_server.frontends()` finds: the newest
comfyui-frontend-package (in the environment) and the oldest the pack supports (the floor in
pyproject.toml, which `bash .ci/setup test` installs into .frontends/).

Skips (loudly) only when no Chromium is installed at /usr/bin/chromium; `bash .ci/setup test`
installs it.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from comfy_check import samples
from comfy_check.browser import CHROMIUM
from comfy_check.framing import WINDOW
from comfy_check.frontend_server import frontends
from comfy_check.object_info import core_object_info, full_object_info, manifest_files, model_folders, validated_inputs
from comfy_check.validator import check_workflow, is_api_format, shown_widget_values, validate_api, widget_layout
from conftest import PACK_ROOT

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
UI_WORKFLOWS = [p for p in WORKFLOWS if not is_api_format(json.loads(p.read_text(encoding="utf-8")))]
FRONTENDS = frontends()


def _input_images(workflows) -> list[str]:
    """Files that LoadImage-like nodes name: the user's own pictures, present in ComfyUI's input folder."""
    names = {"example.png"}
    for workflow in workflows:
        for node in workflow.get("nodes", []):
            if node.get("type") in ("LoadImage", "LoadImageMask", "LoadVideo") and node.get("widgets_values"):
                names.add(node["widgets_values"][0])
    return sorted(names)


@pytest.fixture(scope="module", params=sorted(FRONTENDS) or ["none installed"])
def frontend(request):
    if request.param not in FRONTENDS:
        pytest.fail("no comfyui-frontend-package installed: run `bash .ci/setup test`")
    if not CHROMIUM.exists():
        pytest.skip(
            "!!! FRONTEND CHECK SKIPPED: no Chromium at /usr/bin/chromium and it could not be installed "
            "(`bash .ci/setup test` runs apt-get install chromium). Shipped workflows were NOT loaded in the real frontend. !!!"
        )
    from comfy_check.browser import Frontend
    from comfy_check.frontend_server import FrontendServer

    workflows = [json.loads(p.read_text(encoding="utf-8")) for p in UI_WORKFLOWS]
    models = manifest_files(workflows)
    pack_error = None
    try:
        with model_folders(models):
            info = full_object_info()
            checks = validated_inputs()
    except Exception as exc:  # noqa: BLE001 - reported by every shipped-workflow test below
        pack_error = f"the pack's nodes could not be read: {type(exc).__name__}: {exc}"
        info, checks = core_object_info(), {}
    images = _input_images(workflows + [samples.ui_graph_features()])
    for loader in ("LoadImage", "LoadImageMask"):
        info[loader]["input"]["required"]["image"][0] = images
    with FrontendServer(info, models, static_root=FRONTENDS[request.param]) as server:
        browser = Frontend(server.url, window=WINDOW)
        try:
            yield browser, info, checks, pack_error
        finally:
            browser.close()


def _assert_loads_cleanly(result: dict, workflow: dict, info: dict, checks: dict, name: str):
    missing = [f"node {n['id']} ({n['type']})" for n in result["nodes"] if not n["registered"]]
    assert not missing, f"{name}: the frontend does not know these node types: {missing}"
    flagged = [f"node {n['id']} ({n['type']})" for n in result["nodes"] if n["has_errors"]]
    assert not flagged, f"{name}: the frontend flags these nodes (missing model/file or bad value): {flagged}"
    assert not result["errors"], f"{name}: errors while loading: {result['errors']}"
    assert not result["toasts"], f"{name}: error messages shown: {result['toasts']}"
    assert not result["dialogs"], f"{name}: dialogs opened: {result['dialogs']}"

    meant = shown_widget_values(workflow, info)
    for node in result["nodes"]:
        if node["type"] not in info:
            continue  # UI-only nodes (Note, Reroute, PrimitiveNode) have no definition to compare with
        expected = [w.name for w in widget_layout(info[node["type"]])]
        shown = [w["name"] for w in node["widgets"]]
        assert shown == expected, f"{name}: node {node['id']} ({node['type']}) has widgets {shown}, our checker expects {expected}"
        values = meant[node["id"]]
        got = [w["value"] for w in node["widgets"]]
        assert got == values, (
            f"{name}: node {node['id']} ({node['type']}): the file's widgets_values {values} did not land as written; "
            f"the widgets show {dict(zip(shown, got))}"
        )

    ours, problems = check_workflow(workflow, info, checks)
    assert not problems, f"{name}: " + "; ".join(map(str, problems))
    browser_prompt = samples.strip_meta(result["prompt"])
    assert browser_prompt == samples.strip_meta(ours), f"{name}: graphToPrompt differs from our conversion"
    problems = validate_api(result["prompt"], info, checks)
    assert not problems, f"{name}: ComfyUI would refuse the queued prompt: " + "; ".join(map(str, problems))
    # What the frontend would save again (newer layout: widget input slots, ids) reads the same.
    resaved, problems = check_workflow(result["saved"], info, checks)
    assert not problems, f"{name} as re-saved by the frontend: " + "; ".join(map(str, problems))
    assert samples.strip_meta(resaved) == browser_prompt, f"{name}: the re-saved workflow converts differently"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_shipped_workflow_loads_and_converts(frontend, path):
    browser, info, checks, pack_error = frontend
    assert pack_error is None, pack_error
    workflow = json.loads(path.read_text(encoding="utf-8"))
    _assert_loads_cleanly(browser.load(workflow), workflow, info, checks, path.name)


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_shipped_workflow_opens_framed(frontend, path):
    browser = frontend[0]
    workflow = json.loads(path.read_text(encoding="utf-8"))
    browser.load(workflow)
    screen = browser.nodes_on_screen()
    ds = workflow["extra"]["ds"]
    assert [screen["scale"], *screen["offset"]] == pytest.approx([ds["scale"], *ds["offset"]]), (
        f"{path.name}: the frontend did not open the saved view extra.ds {ds}"
    )
    hidden = [f"node {n['id']} ({n['type']}) at {n['box']}: {', '.join(n['hidden'])}" for n in screen["nodes"] if n["hidden"]]
    assert not hidden, f"{path.name} in a {screen['window']} window: " + "; ".join(hidden)
    assert len(screen["nodes"]) == len(workflow["nodes"])


def test_the_oldest_supported_frontend_is_checked():
    """The floor in pyproject.toml is one of the frontends these tests run against (and not the only one)."""
    if os.environ.get("COMFYUI_FRONTEND_ROOT"):
        pytest.skip("COMFYUI_FRONTEND_ROOT names the one frontend to check")
    floor = re.search(r'"comfyui-frontend-package>=([\d.]+)"', (PACK_ROOT / "pyproject.toml").read_text()).group(1)
    assert floor in FRONTENDS, f"comfyui-frontend-package {floor} is not installed in .frontends/: run `bash .ci/setup test`"
    assert len(FRONTENDS) >= 2, f"only {sorted(FRONTENDS)} installed: the newest release belongs in the environment"


@pytest.mark.parametrize("variant", ["0.4", "schema-1"])
def test_converter_matches_the_frontend(frontend, variant):
    """Reroute, PrimitiveNode, bypass, mute, Note and seed widgets: our conversion equals the browser's."""
    browser, info, checks, _ = frontend
    workflow = samples.ui_graph_features()
    if variant == "schema-1":
        workflow = samples.to_schema_v1(workflow)
    result = browser.load(workflow)
    _assert_loads_cleanly(result, workflow, info, checks, f"features ({variant})")
    assert samples.strip_meta(result["prompt"]) == samples.EXPECTED_FEATURES_PROMPT


def test_frontend_shows_a_missing_node_type(frontend):
    """The check is live: an unknown type shows up as unregistered, and our validator names it too."""
    browser, info, checks, _ = frontend
    workflow = samples.ui_graph_features()
    workflow["nodes"][5]["type"] = "HYVS_NoSuchNode"
    result = browser.load(workflow)
    assert [n["id"] for n in result["nodes"] if not n["registered"]] == ["6"]
    assert [n["id"] for n in result["nodes"] if n["has_errors"]] == ["6"]
    _, problems = check_workflow(workflow, info, checks)
    assert [(p.node_id, p.class_type) for p in problems] == [("6", "HYVS_NoSuchNode")]


def test_frontend_flags_a_shifted_widget_list(frontend):
    """A stale widgets_values (one value missing) lands on the wrong widgets; the validator says so first."""
    browser, info, checks, _ = frontend
    workflow = samples.ui_graph_features()
    workflow["nodes"][8]["widgets_values"] = [1234]
    _, problems = check_workflow(workflow, info, checks)
    assert any(p.node_id == "9" and "1 widget values but the node has 2 widgets" in p.message for p in problems)
    result = browser.load(workflow)
    node = next(n for n in result["nodes"] if n["id"] == "9")
    assert [w["value"] for w in node["widgets"]] != [1234]


def test_server_answers_the_startup_calls(tmp_path):
    """The stand-in server alone (no browser): the answers the frontend needs before it can load anything."""
    import urllib.error
    import urllib.request

    from comfy_check.frontend_server import FrontendServer

    (tmp_path / "index.html").write_text("<html>frontend</html>", encoding="utf-8")
    (tmp_path / "extensions" / "core").mkdir(parents=True)
    (tmp_path / "extensions" / "core" / "a.js").write_text("", encoding="utf-8")
    info = {"HYVS_X": {"name": "HYVS_X"}}
    with FrontendServer(info, static_root=tmp_path) as server:
        def get(path):
            with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=10) as answer:
                return answer.read()

        def post(path, body: bytes):
            request = urllib.request.Request(server.url + path.lstrip("/"), data=body, method="POST")
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status

        assert get("/") == b"<html>frontend</html>"
        assert json.loads(get("/api/object_info")) == info
        assert json.loads(get("/api/object_info/HYVS_X")) == {"HYVS_X": {"name": "HYVS_X"}}
        assert json.loads(get("/api/users")) == {"storage": "server", "migrated": True}
        assert json.loads(get("/api/extensions")) == ["/extensions/core/a.js"]
        assert json.loads(get("/api/settings"))["Comfy.TutorialCompleted"] is True
        assert post("/api/settings/Comfy.Locale", b'"en"') == 200
        assert json.loads(get("/api/settings/Comfy.Locale")) == "en"
        assert post("/api/userdata/workflows%2Fa.json", b'{"x": 1}') == 200
        assert json.loads(get("/api/userdata/workflows%2Fa.json")) == {"x": 1}
        assert json.loads(get("/api/userdata?dir=workflows")) == ["a.json"]
        for path in ("/api/system_stats", "/api/embeddings", "/api/i18n", "/api/features", "/api/queue",
                     "/api/history", "/api/jobs?limit=5", "/api/workflow_templates", "/api/prompt"):
            json.loads(get(path))
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("/api/no_such_route")
        assert missing.value.code == 404


def test_frontend_reports_a_model_file_the_user_lacks(frontend):
    """The check is live for models too: a loader naming a file that is not in its folder is reported."""
    browser, info, checks, _ = frontend
    workflow = samples.ui_graph_features()
    name = "hyvs_absent_vae.safetensors"
    workflow["nodes"].append(samples._node(
        10, "VAELoader", [name], outputs=[samples._out("VAE", "VAE", None)],
        properties={"models": [{"name": name, "url": f"https://huggingface.co/o/r/resolve/main/{name}", "directory": "vae"}]},
    ))
    result = browser.load(workflow)
    flagged = [n["id"] for n in result["nodes"] if n["has_errors"]]
    missing_dialog = [d for d in result["dialogs"] if name in d or "Missing Models" in d]
    assert flagged == ["10"] or missing_dialog, f"the frontend did not report the missing model: {result}"
    _, problems = check_workflow(workflow, info, checks)
    assert [str(p) for p in problems] == [f"node 10 (VAELoader), input 'vae_name': Value not in list: '{name}' not in {info['VAELoader']['input']['required']['vae_name'][0]}"]
