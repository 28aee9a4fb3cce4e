"""The API nodes' price before queueing: the route prices the job a node's widgets would build, by the same code
and table the node uses when it runs; the pack's frontend extension shows that line under every API node in the
real frontend (oldest and newest supported) and follows a widget change.

The browser half skips (loudly) without Chromium, as the other frontend checks."""

from __future__ import annotations

import json

import pytest
import torch
from comfy_check.browser import CHROMIUM
from comfy_check.framing import WINDOW
from comfy_check.frontend_server import frontends
from comfy_check.object_info import full_object_info
from conftest import PACK_ROOT
from hunyuan_video_suite.nodes import api, api_price
from hunyuan_video_suite.pipelines.providers import pricing

FRONTENDS = frontends()


def _defaults(node) -> dict:
    values = {}
    for name, spec in node.inputs().items():
        if spec[0] == "IMAGE":
            continue
        options = spec[1] if len(spec) > 1 else {}
        values[name] = options.get("default", spec[0][0] if isinstance(spec[0], list) else None)
    return values


def _with_prompt(node, widgets: dict) -> dict:
    return {**widgets, **{k: "a cat walks" for k in ("prompt",) if k in widgets}}


@pytest.mark.parametrize("node_id", sorted(api.NODE_CLASS_MAPPINGS))
def test_quote_is_the_price_the_run_shows(node_id):
    node = api.NODE_CLASS_MAPPINGS[node_id]
    widgets = _with_prompt(node, _defaults(node))
    picture = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    images = {name: picture for name, spec in node.inputs().items() if spec[0] == "IMAGE"}
    job = node.build_job(**widgets, **images)
    answer = api_price.quote({"node": node_id, "widgets": widgets})
    assert answer["text"] == f"price: {pricing.price_of(job).text}"
    assert answer["read"] == pricing.READ
    assert pricing.before_line(job).endswith(pricing.price_of(job).text)


def test_quote_follows_the_settings_and_names_what_is_wrong():
    node = api.NODE_CLASS_MAPPINGS["HYVS_WaveSpeedHV15T2V"]
    widgets = _with_prompt(node, _defaults(node))
    prices = {duration: api_price.quote({"node": "HYVS_WaveSpeedHV15T2V", "widgets": {**widgets, "duration": duration}})
              for duration in (5, 8)}
    assert prices[8]["usd"] == pytest.approx(prices[5]["usd"] * 8 / 5)
    fal = api.NODE_CLASS_MAPPINGS["HYVS_FalT2V"]
    plain = api_price.quote({"node": "HYVS_FalT2V", "widgets": {**_with_prompt(fal, _defaults(fal)), "pro_mode": False}})
    pro = api_price.quote({"node": "HYVS_FalT2V", "widgets": {**_with_prompt(fal, _defaults(fal)), "pro_mode": True}})
    assert pro["usd"] == pytest.approx(2 * plain["usd"])
    custom = api.NODE_CLASS_MAPPINGS["HYVS_WaveSpeedCustomRef2V"]
    empty = api_price.quote({"node": "HYVS_WaveSpeedCustomRef2V", "widgets": {**_defaults(custom), "prompt": ""}})
    assert empty["text"].startswith("no price yet:") and "prompt" in empty["text"]
    assert "not an API node" in api_price.quote({"node": "HYVS_T2VSampler", "widgets": {}})["error"]
    assert "not an API node" in api_price.quote(["not", "a", "dict"])["error"]


def test_the_route_is_served_only_inside_comfyui():
    assert api_price.register() is False  # no PromptServer here: nothing to register with


@pytest.fixture(scope="module", params=sorted(FRONTENDS) or ["none installed"])
def frontend(request):
    if request.param not in FRONTENDS:
        pytest.fail("no comfyui-frontend-package installed: run `bash .ci/setup test`")
    if not CHROMIUM.exists():
        pytest.skip("!!! PRICE LINE CHECK SKIPPED: no Chromium at /usr/bin/chromium (`bash .ci/setup test`). !!!")
    from comfy_check.browser import Frontend
    from comfy_check.frontend_server import FrontendServer

    server = FrontendServer(full_object_info(), static_root=FRONTENDS[request.param],
                            web_directories={"hunyuan-video-suite": PACK_ROOT / "nodes" / "web"},
                            json_routes={api_price.ROUTE: api_price.quote})
    with server:
        browser = Frontend(server.url, window=WINDOW)
        try:
            yield browser
        finally:
            browser.close()


PRICES_SHOWN = """
() => Object.fromEntries(window.app.graph.nodes.filter((n) => n.type.startsWith('HYVS_'))
  .map((n) => [String(n.id), n.hyvsPrice ?? null]))
"""
ALL_PRICED = "() => window.app.graph.nodes.filter((n) => n.type.startsWith('HYVS_')).every((n) => n.hyvsPrice)"


def _expected(workflow: dict) -> dict:
    expected = {}
    for node in workflow["nodes"]:
        if node["type"] in api.NODE_CLASS_MAPPINGS:
            names = [name for name, spec in api.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"].items()
                     if spec[0] != "IMAGE"]
            widgets = dict(zip(names, _widget_values(node)))
            expected[str(node["id"])] = api_price.quote({"node": node["type"], "widgets": widgets})["text"]
    return expected


def _widget_values(node: dict) -> list:
    """The node's widget values without the seed's 'control after generate' entry (the frontend's own widget)."""
    values = list(node["widgets_values"])
    return [v for i, v in enumerate(values) if not (i > 0 and v in ("fixed", "randomize", "increment", "decrement"))]


# (workflow, a widget whose change changes the price: None where the endpoint charges one price per video)
PRICED_WORKFLOWS = [("api_wavespeed_hv15_t2v.json", "duration"), ("api_fal_t2v.json", "pro_mode"),
                    ("api_wavespeed_i2v.json", None)]
CHANGE_WIDGET = """([id, name]) => {
  const widget = window.app.graph.getNodeById(Number(id)).widgets.find((w) => w.name === name);
  widget.value = typeof widget.value === 'boolean' ? !widget.value : widget.options.max;
  window.app.graph.setDirtyCanvas(true, true);
}"""
PRICE_CHANGED = """([id, before]) => {
  const node = window.app.graph.getNodeById(Number(id));
  return node.hyvsPrice && node.hyvsPrice !== before;
}"""


@pytest.mark.parametrize("name,widget", PRICED_WORKFLOWS)
def test_every_api_node_shows_its_price_and_follows_a_change(frontend, name, widget):
    workflow = json.loads((PACK_ROOT / "workflows" / name).read_text(encoding="utf-8"))
    result = frontend.load(workflow)
    assert not result["errors"], result["errors"]
    frontend.page.wait_for_function(ALL_PRICED, timeout=30_000)
    shown = frontend.page.evaluate(PRICES_SHOWN)
    assert shown and shown == _expected(workflow)
    assert all(text.startswith("price: $") for text in shown.values()), shown
    if widget is None:
        return
    node_id, before = next(iter(shown.items()))
    frontend.page.evaluate(CHANGE_WIDGET, [node_id, widget])
    frontend.page.wait_for_function(PRICE_CHANGED, arg=[node_id, before], timeout=30_000)
    after = frontend.page.evaluate(PRICES_SHOWN)[node_id]
    assert after.startswith("price: $"), after
