"""Workflows laid out like core's templates, measured in the real frontend.

What the frontend draws (comfy_check/browser.py `RENDERED_LAYOUT`: every node's box with its title bar,
grown to the widgets and text boxes it draws, the widgets' boxes, the groups, the links) must show:
- no two nodes overlapping, and no Note over another node's widget;
- every node inside exactly one labelled group (its whole box below the group's title bar), groups not
  overlapping one another;
- links read left to right: a node's inputs come from nodes wholly to its left.
`layout_problems(rendered)` lists what breaks these (empty: laid out); tests/workflow_tests/
test_layout_rendered.py runs it on every shipped workflow in each supported frontend.

The tool lays a workflow out that way. Each node's stage follows from its type (Models, Prompt and
image, Sampling or the API job, Output; Notes in a "Read me" group); its column from the links (a
node one column right of its rightmost input; a node without inputs as far right as its first consumer
allows, but in the first two columns); stages are groups spanning their columns, placed top-down where
they overlap in columns. Node sizes are the rendered minimum in every frontend or the file's own size,
whichever is bigger (widths aligned per column, narrowed to the minimum when the graph is too wide to
open framed); then extra.ds is set as `framing.py --write` does. Ids, links and widget values are kept.

    python3 tests/comfy_check/layout.py                        # report every workflow in every frontend
    python3 tests/comfy_check/layout.py --write [files]        # lay the workflows out (and frame them)
    python3 tests/comfy_check/layout.py --screenshots workflows/screenshots     # workflow_*.png in the newest frontend

The report and --write need the test tools (`bash .ci/setup test`: Playwright, Chromium, the frontends).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: tests/ on the path, the pack registered as in pytest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import conftest  # noqa: F401

from comfy_check import framing

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTE_TYPES = ("Note", "MarkdownNote")
TOLERANCE = 0.5  # graph units: rounding of the frontend's float sizes

# Stages, left to right; a workflow's groups carry these titles (the prompt group says "Prompt" when
# it holds no image, the API job names its provider).
MODELS, IMAGE, PROMPT, SAMPLING, OUTPUT, README = "Models", "Image", "Prompt and image", "Sampling", "Output", "Read me"
STAGE_ORDER = (MODELS, IMAGE, PROMPT, SAMPLING, OUTPUT, README)
GROUP_COLORS = {MODELS: "#3f789e", IMAGE: "#8A8", PROMPT: "#8A8", SAMPLING: "#b06634", OUTPUT: "#a1309b", README: "#444"}
PROVIDERS = {"Fal": "fal.ai", "WaveSpeed": "WaveSpeedAI", "Segmind": "Segmind"}

GAP = 20           # between nodes stacked in a column
COLUMN_GAP = 32    # between columns (TIGHT_COLUMN_GAP in a tight layout)
TIGHT_COLUMN_GAP = 24
GROUP_PAD = 10     # a group's margin around its nodes
GROUP_TITLE = 36   # a group's title bar (1.28 draws 33.6, 1.58 30)
GROUP_GAP = 16     # between groups stacked in a column
SQUEEZE = (1.0, 0.85, 0.7)  # what a picture's, a video's or a text box's height may shrink to, to open framed
NODE_TITLE = framing.TITLE_HEIGHT
FIRST_SOURCE_COLUMNS = 2  # nodes without inputs (loaders, images) stay in the first columns
# Nodes that show more than their widgets (a picture, a video, text): they keep the file's height;
# the others (and any node with no text box) are drawn at their minimum height.
CONTENT_TYPES = ("LoadImage", "LoadImageMask", "SaveVideo", "SaveImage", "PreviewImage") + NOTE_TYPES


# ---------------------------------------------------------------------------------------------- checks

def _overlap(a, b) -> bool:
    return a[0] < b[2] - TOLERANCE and b[0] < a[2] - TOLERANCE and a[1] < b[3] - TOLERANCE and b[1] < a[3] - TOLERANCE


def _inside(box, area) -> bool:
    return (area[0] - TOLERANCE <= box[0] and area[1] - TOLERANCE <= box[1]
            and box[2] <= area[2] + TOLERANCE and box[3] <= area[3] + TOLERANCE)


def _name(node) -> str:
    return f"node {node['id']} ({node['type']})"


def _fmt(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


def overlapping_nodes(rendered: dict) -> list[str]:
    nodes = rendered["nodes"]
    return [f"{_name(a)} {_fmt(a['box'])} overlaps {_name(b)} {_fmt(b['box'])}"
            for i, a in enumerate(nodes) for b in nodes[i + 1:] if _overlap(a["box"], b["box"])]


def notes_over_widgets(rendered: dict) -> list[str]:
    found = []
    for note in (n for n in rendered["nodes"] if n["type"] in NOTE_TYPES):
        for node in rendered["nodes"]:
            if node is note:
                continue
            for widget in node["widgets"]:
                if _overlap(note["box"], widget["box"]):
                    found.append(f"{_name(note)} covers widget {widget['name']!r} of {_name(node)}")
    return found


def group_problems(rendered: dict) -> list[str]:
    problems = []
    groups = rendered["groups"]
    for group in groups:
        if not group["title"].strip():
            problems.append(f"a group at {_fmt(group['box'])} has no title")
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if _overlap(a["box"], b["box"]):
                problems.append(f"group {a['title']!r} overlaps group {b['title']!r}")
    for node in rendered["nodes"]:
        holders = [g["title"] for g in groups
                   if _inside(node["box"], [g["box"][0], g["box"][1] + g["title_height"], g["box"][2], g["box"][3]])]
        if len(holders) != 1:
            problems.append(f"{_name(node)} {_fmt(node['box'])} is inside {len(holders)} groups {holders}, not one")
    for group in groups:
        area = [group["box"][0], group["box"][1] + group["title_height"], group["box"][2], group["box"][3]]
        if not any(_inside(n["box"], area) for n in rendered["nodes"]):
            problems.append(f"group {group['title']!r} holds no node")
    return problems


def backward_links(rendered: dict) -> list[str]:
    boxes = {n["id"]: n for n in rendered["nodes"]}
    found = []
    for origin, target in rendered["links"]:
        a, b = boxes.get(origin), boxes.get(target)
        if a and b and a["box"][2] > b["box"][0] + TOLERANCE:
            found.append(f"{_name(b)} takes an input from {_name(a)}, which is not wholly to its left "
                         f"(its right edge {a['box'][2]:.0f} > {b['box'][0]:.0f})")
    return sorted(set(found))


def layout_problems(rendered: dict) -> dict[str, list[str]]:
    """{check: problems} for a graph as the frontend laid it out (browser.Frontend.rendered_layout())."""
    return {
        "overlapping nodes": overlapping_nodes(rendered),
        "notes over widgets": notes_over_widgets(rendered),
        "groups": group_problems(rendered),
        "links right to left": backward_links(rendered),
    }


# ---------------------------------------------------------------------------------------------- layout

def stage_of(node_type: str) -> str:
    if node_type in NOTE_TYPES:
        return README
    if "Loader" in node_type or node_type == "HYVS_LoadLlavaVision":
        return MODELS
    if node_type in ("LoadImage", "LoadImageMask") or "TextEncode" in node_type or "Conditioning" in node_type:
        return PROMPT
    if "Decode" in node_type or node_type.startswith(("Save", "Preview", "VHS_")):
        return OUTPUT
    return SAMPLING  # samplers, super-resolution, the API nodes


def group_title(stage: str, types: list[str]) -> str:
    if stage == PROMPT and not any(t in ("LoadImage", "LoadImageMask") for t in types):
        return "Prompt"
    if stage == SAMPLING:
        for key, provider in PROVIDERS.items():
            if any(t.startswith(f"HYVS_{key}") for t in types):
                return f"Generate on {provider}"
        if any("SuperResolution" in t for t in types):
            return "Sampling and super-resolution"
    return stage


def columns(workflow: dict, source_columns: int = FIRST_SOURCE_COLUMNS, tight: bool = False,
            stack_output: bool = False) -> dict[int, int]:
    """Node id -> column, from the links (see the module docstring)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    inputs = {i: set() for i in nodes}
    outputs = {i: set() for i in nodes}
    for link in workflow["links"]:
        origin, target = link[1], link[3]
        inputs[target].add(origin)
        outputs[origin].add(target)
    col: dict[int, int] = {}

    def asap(i, trail=()):
        if i not in col:
            assert i not in trail, f"a cycle through node {i}"
            col[i] = 1 + max((asap(j, trail + (i,)) for j in inputs[i]), default=-1)
        return col[i]

    for i in nodes:
        asap(i)
    for i in sorted(nodes, key=lambda i: -col[i]):  # sources move right, next to their consumers
        if not inputs[i] and outputs[i]:
            cap = source_columns - 1
            if tight and all("SuperResolution" in nodes[t]["type"] for t in outputs[i]):
                cap = col[i] + len(nodes)  # a super-resolution model's loaders: next to it
            col[i] = max(col[i], min(min(col[t] for t in outputs[i]) - 1, cap))
    if stack_output:  # the last resort for a graph too wide to open framed: Save under Decode (one link reads back)
        for i in sorted(nodes, key=lambda i: col[i]):
            if inputs[i] and stage_of(nodes[i]["type"]) == OUTPUT and all(stage_of(nodes[j]["type"]) == OUTPUT for j in inputs[i]):
                col[i] = max(col[j] for j in inputs[i])
    return col


NOTE_WIDTHS = range(200, 1001, 20)  # widths at which a Note's text height is measured
NOTE_SLACK = 40  # the text box's margins in the Note, and a line to spare


def _note_height(node: dict, width: float, text_heights: dict | None) -> float:
    """The height at which a Note at `width` shows all its text (measured), at most the file's height scaled to it."""
    w, h = node["size"]
    scaled = math.ceil(h * max(1.0, w / width) / 10) * 10 if width < w else h
    if text_heights:  # no taller than the file's Note scaled to this width (long notes scroll, as they did)
        at = max((w for w in text_heights if w <= width), default=min(text_heights))
        return min(scaled, math.ceil((text_heights[at] + NOTE_SLACK) / 10) * 10)
    return scaled


# A Note's text height at each of NOTE_WIDTHS: its text box narrowed to that width and shrunk, then
# its scrollHeight read (and the box put back as it was).
NOTE_TEXT_HEIGHTS = """
(widths) => {
  const out = {};
  for (const n of window.app.graph.nodes) {
    const el = n.widgets && n.widgets[0] && n.widgets[0].element;
    if (!['Note', 'MarkdownNote'].includes(n.type) || !el) continue;
    const [w, h] = [el.style.width, el.style.height];
    out[String(n.id)] = widths.map((width) => { el.style.width = (width - 20) + 'px'; el.style.height = '1px'; return [width, el.scrollHeight]; });
    [el.style.width, el.style.height] = [w, h];
  }
  return out;
}
"""


def compose(workflow: dict, min_sizes: dict[int, tuple], narrow: bool = False,
            readme_column: int | None = None, squeeze: float = 1.0, source_columns: int = FIRST_SOURCE_COLUMNS,
            tight: bool = False, stack_output: bool = False) -> dict:
    """... and `tight`: columns closer, a super-resolution model's loaders next to it, and the input images
    in a group of their own under the models (where nothing else makes a wide graph open framed)."""
    """The workflow laid out (a copy): node pos/size and the groups; `readme_column` is where the Notes go."""
    workflow = json.loads(json.dumps(workflow))
    nodes = [n for n in workflow["nodes"]]
    col = columns(workflow, source_columns, tight, stack_output)
    stage = {n["id"]: stage_of(n["type"]) for n in nodes}
    gap = TIGHT_COLUMN_GAP if tight else COLUMN_GAP
    if tight:
        has_inputs = {link[3] for link in workflow["links"]}
        stage.update({i: IMAGE for i, s in stage.items() if s == PROMPT and i not in has_inputs})
        by_id = {n["id"]: n for n in nodes}
        for link in workflow["links"]:  # a super-resolution model's loaders: in its group
            if "SuperResolution" in by_id[link[3]]["type"] and stage[link[1]] == MODELS and all(
                    "SuperResolution" in by_id[other[3]]["type"] for other in workflow["links"] if other[1] == link[1]):
                stage[link[1]] = SAMPLING
    notes = [n for n in nodes if stage[n["id"]] == README]
    ncols = max(col[n["id"]] for n in nodes if stage[n["id"]] != README) + 1
    if readme_column is None:
        readme_column = 0
    readme_span = 1
    if readme_column >= ncols:  # past the last column: the Notes span two columns from readme_column - ncols
        readme_column, readme_span = min(readme_column - ncols, ncols - 2), 2
    for n in notes:
        col[n["id"]] = readme_column

    def min_of(n):
        return min_sizes.get(n["id"], (0, 0, True))[:2]

    def grows(n):
        return min_sizes.get(n["id"], (0, 0, True))[2]

    text_heights = min_sizes.get("note_text", {})

    # widths: per column, the widest node's (its own width, or just its minimum when narrow)
    width = [0.0] * ncols
    for n in nodes:
        if stage[n["id"]] == README:
            continue
        own = min_of(n)[0] if narrow else max(n["size"][0], min_of(n)[0])
        width[col[n["id"]]] = max(width[col[n["id"]]], math.ceil(max(own, min_of(n)[0])))
    for c in range(ncols):
        width[c] = max(width[c], 200)
    x = [0.0] * ncols
    for c in range(1, ncols):
        x[c] = x[c - 1] + width[c - 1] + gap
    for n in nodes:
        w = width[col[n["id"]]]
        if stage[n["id"]] == README and readme_span == 2:
            w = width[col[n["id"]]] + gap + width[col[n["id"]] + 1]
        h = _note_height(n, w, text_heights.get(n["id"])) if stage[n["id"]] == README else n["size"][1] * squeeze if grows(n) else 0
        n["size"] = [w, max(math.ceil(h), math.ceil(min_of(n)[1]))]

    # groups, top-down in stage order, each below whatever earlier group shares a column with it
    skyline = [0.0] * ncols  # the bottom of what is placed in each column
    groups = []
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    for s in sorted({stage[n["id"]] for n in nodes}, key=order.get):
        members = sorted((n for n in nodes if stage[n["id"]] == s), key=lambda n: (n["pos"][1], n["pos"][0]))
        span = range(min(col[n["id"]] for n in members), max(col[n["id"]] for n in members) + 1)
        if s == README:
            span = range(span[0], span[0] + readme_span)
        top = max(skyline[c] for c in span)
        top = top + GROUP_GAP if top else 0.0
        inner_top = top + GROUP_TITLE + GROUP_PAD
        bottom = inner_top
        for c in span:
            y = inner_top
            for n in (m for m in members if col[m["id"]] == c):
                n["pos"] = [x[c], y + NODE_TITLE]
                y += NODE_TITLE + n["size"][1] + GAP
            bottom = max(bottom, y - GAP)
        bottom += GROUP_PAD
        left = x[span[0]] - GROUP_PAD
        right = max(x[span[-1]] + width[span[-1]], max(n["pos"][0] + n["size"][0] for n in members)) + GROUP_PAD
        for c in span:
            skyline[c] = bottom
        groups.append({"title": group_title(s, [m["type"] for m in members]), "bounding": [left, top, right - left, bottom - top],
                       "color": GROUP_COLORS[s], "font_size": 24, "flags": {}})
    workflow["groups"] = groups
    for n in nodes:
        n["pos"] = [round(v, 1) for v in n["pos"]]
        n["size"] = [round(v, 1) for v in n["size"]]
    return framing.frame(workflow)


def lay_out(workflow: dict, min_sizes: dict[int, tuple]) -> dict:
    """The best of compose()'s candidates (the Notes in each column; wide or narrow columns; pictures and
    text boxes at their own height or squeezed): the one that opens framed at the largest scale, then
    the least squeezed, the widest columns, the shortest."""
    ncols = max(columns(workflow).values()) + 1
    best = None
    for stack, tight, squeeze, narrow, readme, sources in itertools.product(
            (False, True), (False, True), SQUEEZE, (False, True), range(2 * ncols - 1), (2, 1)):
        laid = compose(workflow, min_sizes, narrow, readme, squeeze, sources, tight, stack)
        problems = framing.workflow_problems(laid)
        height = max(g["bounding"][1] + g["bounding"][3] for g in laid["groups"])
        key = ((True, not stack, not tight, laid["extra"]["ds"]["scale"], squeeze, not narrow, sources, -height) if not problems
               else (False, -len(problems), -height))
        if best is None or key > best[0]:
            best = (key, laid)
    return best[1]


# ---------------------------------------------------------------------------------------------- browser

def _server_inputs(workflows: list[dict]):
    from comfy_check.object_info import full_object_info, manifest_files, model_folders

    models = manifest_files(workflows)
    with model_folders(models):
        info = full_object_info()
    images = {"example.png"} | {n["widgets_values"][0] for w in workflows for n in w["nodes"]
                                if n["type"] in ("LoadImage", "LoadImageMask") and n.get("widgets_values")}
    for loader in ("LoadImage", "LoadImageMask"):
        info[loader]["input"]["required"]["image"][0] = sorted(images)
    return info, models


class Frontends:
    """The installed frontends, each opened in turn (Playwright's sync API runs one browser at a time):
    `each()` yields (version, browser), one browser session per frontend for everything done in it."""

    def __init__(self, workflows: list[dict], only_newest: bool = False):
        from comfy_check.frontend_server import frontends

        found = frontends()
        versions = sorted(found, key=lambda v: [int(p) if p.isdigit() else 0 for p in v.split(".")])
        self.versions = versions[-1:] if only_newest else versions
        self.roots = found
        self.info, self.models = _server_inputs(workflows)

    def each(self):
        from comfy_check.browser import Frontend
        from comfy_check.frontend_server import FrontendServer

        for version in self.versions:
            with FrontendServer(self.info, self.models, static_root=self.roots[version]) as server:
                browser = Frontend(server.url, window=framing.WINDOW)
                try:
                    yield version, browser
                finally:
                    browser.close()


def measured_min_sizes(frontends: Frontends, workflows: dict) -> dict:
    """{key: {node id: the smallest size any frontend draws it at}} (LGraphNode.computeSize after loading)."""
    sizes: dict = {key: {} for key in workflows}
    for _, browser in frontends.each():
        for key, workflow in workflows.items():
            browser.load(workflow)
            for node in browser.rendered_layout()["nodes"]:
                w, h = node["min_size"] or (0, 0)
                old = sizes[key].get(int(node["id"]), (0, 0, False))
                grows = old[2] or any(widget["dom"] for widget in node["widgets"]) or node["type"] in CONTENT_TYPES
                sizes[key][int(node["id"])] = (max(old[0], w), max(old[1], h), grows)
            notes = sizes[key].setdefault("note_text", {})
            for node_id, table in browser.page.evaluate(NOTE_TEXT_HEIGHTS, list(NOTE_WIDTHS)).items():
                mine = notes.setdefault(int(node_id), {})
                for width, height in table:
                    mine[width] = max(mine.get(width, 0), height)
    return sizes


SCREENSHOTS = {  # one workflow per family, for the README
    "workflow_13b_t2v.png": "hunyuan_t2v_local.json",
    "workflow_15_i2v.png": "hunyuan15_720p_i2v_local.json",
    "workflow_api_i2v.png": "api_wavespeed_i2v.json",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="workflow files (default: workflows/*.json)")
    parser.add_argument("--write", action="store_true", help="lay each workflow out and frame it")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save the README's screenshots into DIR")
    args = parser.parse_args(argv)
    paths = args.files or sorted((REPO_ROOT / "workflows").glob("*.json"))
    workflows = {p: json.loads(p.read_text(encoding="utf-8")) for p in paths}
    failed = 0
    frontends = Frontends(list(workflows.values()), only_newest=bool(args.screenshots))
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        for png, name in SCREENSHOTS.items():
            for version, browser in frontends.each():  # a fresh page each: one workflow tab in the picture
                browser.load(json.loads((REPO_ROOT / "workflows" / name).read_text(encoding="utf-8")))
                browser.rendered_layout()  # waits until the frontend has drawn the view
                browser.screenshot(str(args.screenshots / png))
                print(f"{args.screenshots / png}: {name} in comfyui-frontend-package {version}")
        return 0
    if args.write:
        sizes = measured_min_sizes(frontends, workflows)
        for path in workflows:
            workflows[path] = lay_out(workflows[path], sizes[path])
            path.write_text(json.dumps(workflows[path], indent=2) + "\n", encoding="utf-8")
    for version, browser in frontends.each():
        for path, workflow in workflows.items():
            browser.load(workflow)
            problems = [f"{k}: {p}" for k, ps in layout_problems(browser.rendered_layout()).items() for p in ps]
            failed += bool(problems)
            print(f"{path.name} in {version}: " + ("laid out" if not problems else f"{len(problems)} problems\n  "
                                                     + "\n  ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
