"""Small workflows built from core nodes only, for tests of the checker itself.

`ui_graph_features()` uses every UI-only feature the converter must get right: a Reroute, a
PrimitiveNode driving a widget input, a bypassed node, a muted node, a Note, a seed widget with
its control value, and LoadImage's upload widget.
"""

from __future__ import annotations

import copy


def _node(node_id, kind, widgets=None, inputs=None, outputs=None, mode=0, **extra):
    node = {
        "id": node_id, "type": kind, "pos": [node_id * 320 % 1600, node_id * 180 % 900], "size": [300, 120],
        "flags": {}, "order": node_id, "mode": mode, "properties": extra.pop("properties", {}),
        "inputs": inputs or [], "outputs": outputs or [],
    }
    if widgets is not None:
        node["widgets_values"] = widgets
    node.update(extra)
    return node


def _out(name, kind, links):
    return {"name": name, "type": kind, "links": links}


def _in(name, kind, link, widget=False):
    slot = {"name": name, "type": kind, "link": link}
    if widget:
        slot["widget"] = {"name": name}
    return slot


def ui_graph_features() -> dict:
    """LoadImage -> Reroute -> ImageScale (bypassed) -> CreateVideo <- PrimitiveNode(fps) -> SaveVideo."""
    nodes = [
        _node(1, "LoadImage", ["example.png", "image"],
              outputs=[_out("IMAGE", "IMAGE", [1]), _out("MASK", "MASK", None)]),
        _node(2, "Reroute", inputs=[_in("", "*", 1)], outputs=[_out("", "IMAGE", [2])]),
        _node(3, "ImageScale", ["bilinear", 512, 512, "disabled"], mode=4,
              inputs=[_in("image", "IMAGE", 2)], outputs=[_out("IMAGE", "IMAGE", [3, 6])]),
        _node(4, "CreateVideo", [24],
              inputs=[_in("images", "IMAGE", 3), _in("fps", "FLOAT", 4, widget=True)],
              outputs=[_out("VIDEO", "VIDEO", [5])]),
        _node(5, "PrimitiveNode", [16, "fixed"],
              outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [4], "widget": {"name": "fps"}}],
              properties={"Run widget replace on values": False}),
        _node(6, "SaveVideo", ["video/hyvs_check", "auto", "auto"], inputs=[_in("video", "VIDEO", 5)]),
        _node(7, "PreviewImage", [], mode=2, inputs=[_in("images", "IMAGE", 6)]),
        _node(8, "Note", ["A note: never part of the prompt."]),
        _node(9, "RandomNoise", [1234, "fixed"], outputs=[_out("NOISE", "NOISE", None)]),
    ]
    links = [
        [1, 1, 0, 2, 0, "IMAGE"],
        [2, 2, 0, 3, 0, "IMAGE"],
        [3, 3, 0, 4, 0, "IMAGE"],
        [4, 5, 0, 4, 1, "FLOAT"],
        [5, 4, 0, 6, 0, "VIDEO"],
        [6, 3, 0, 7, 0, "IMAGE"],
    ]
    return {"last_node_id": 9, "last_link_id": 6, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


EXPECTED_FEATURES_PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "4": {"class_type": "CreateVideo", "inputs": {"fps": 16, "images": ["1", 0]}},
    "6": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/hyvs_check", "format": "auto", "codec": "auto", "video": ["4", 0]}},
    "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1234}},
}


def to_schema_v1(workflow: dict) -> dict:
    """The same graph in the frontend's schema version 1 (links as objects, ids in `state`)."""
    out = copy.deepcopy(workflow)
    out["version"] = 1
    out["state"] = {"lastGroupId": 0, "lastNodeId": workflow["last_node_id"], "lastLinkId": workflow["last_link_id"], "lastRerouteId": 0}
    out.pop("last_node_id", None)
    out.pop("last_link_id", None)
    out["links"] = [
        {"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4], "type": l[5]}
        for l in workflow["links"]
    ]
    return out


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}
