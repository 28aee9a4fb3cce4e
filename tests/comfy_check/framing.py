"""Does a workflow open framed: every node on screen, clear of the frontend's own panels, and legible?

When ComfyUI's frontend loads a workflow it restores the view saved in `extra.ds` (`scale`, and
`offset` in graph units: a graph point p lands at `(p + offset) * scale` canvas pixels). A graph laid
out for a big monitor, or saved with the view scrolled, opens partly off-screen on a laptop.

The check assumes the frontend in a 1280x720 browser window, the smallest common desktop size (a
bigger window only shows more), and keeps clear of the panels of both the oldest supported and the
newest frontend (tests/workflow_tests/test_frontend.py checks the same in each of them). Measured in canvas pixels:
- comfyui-frontend-package 1.58: the canvas fills the window; the icon bar covers the left 56 px,
  the tab bar, breadcrumb and floating Run toolbar the top 90 px, the minimap and zoom controls
  the corner right of x=1019 and below y=458.
- 1.28: the canvas starts below the menu bar and right of the icon bar (1240x680); the workflow
  tabs cover its top 38 px, the minimap and zoom controls the corner right of x=917, below y=415.
Below a scale of 0.6 the frontend draws nodes without their text (its low-quality zoom threshold).

    python3 tests/comfy_check/framing.py                      # report every workflow in workflows/
    python3 tests/comfy_check/framing.py --write workflows/x.json   # set extra.ds to frame it

Standard library only, no imports from the pack: it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WINDOW = (1280, 720)
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its `pos`
MIN_SCALE = 0.6


@dataclass(frozen=True)
class Rect:
    left: float
    top: float
    right: float
    bottom: float

    def inside(self, other: "Rect") -> bool:
        return other.left <= self.left and other.top <= self.top and self.right <= other.right and self.bottom <= other.bottom

    def overlaps(self, other: "Rect") -> bool:
        return self.left < other.right and other.left < self.right and self.top < other.bottom and other.top < self.bottom

    def __str__(self) -> str:
        return f"({self.left:.0f}, {self.top:.0f})-({self.right:.0f}, {self.bottom:.0f})"


# Canvas pixels of the 1280x720 window where the graph is under no panel of either frontend.
CANVAS_AREA = Rect(64, 90, 1232, 672)
COVERED = (Rect(917, 415, 1280, 720),)  # minimap and zoom controls
MARGIN = 12


def node_boxes(workflow: dict) -> dict[str, Rect]:
    """Graph-space rectangles of every node (title bar included) and group, by a printable name."""
    boxes = {}
    for node in workflow.get("nodes", []):
        (x, y), (w, h) = node["pos"][:2], node["size"][:2]
        boxes[f"node {node['id']} ({node.get('type')})"] = Rect(x, y - TITLE_HEIGHT, x + w, y + h)
    for group in workflow.get("groups", []):
        x, y, w, h = group["bounding"]
        boxes[f"group {group.get('title', '')!r}"] = Rect(x, y, x + w, y + h)
    return boxes


def view(workflow: dict) -> tuple[float, tuple[float, float]]:
    ds = (workflow.get("extra") or {}).get("ds") or {}
    return float(ds.get("scale", 1.0)), tuple(ds.get("offset", (0.0, 0.0)))


def to_screen(box: Rect, scale: float, offset) -> Rect:
    ox, oy = offset
    return Rect((box.left + ox) * scale, (box.top + oy) * scale, (box.right + ox) * scale, (box.bottom + oy) * scale)


def framing_problems(boxes: dict[str, Rect], scale: float, offset, area: Rect = CANVAS_AREA,
                     covered: tuple[Rect, ...] = COVERED) -> list[str]:
    """What keeps these graph rectangles, seen at `scale`/`offset`, from opening framed (empty: framed)."""
    problems = []
    if scale < MIN_SCALE:
        problems.append(f"scale {scale:g} is below {MIN_SCALE}, where the frontend drops the nodes' text")
    for name, box in boxes.items():
        screen = to_screen(box, scale, offset)
        if not screen.inside(area):
            problems.append(f"{name} at {screen} is not inside the visible canvas {area}")
        for panel in covered:
            if screen.overlaps(panel):
                problems.append(f"{name} at {screen} is under the frontend's panel at {panel}")
    return problems


def workflow_problems(workflow: dict) -> list[str]:
    """framing_problems for a workflow file as saved (UI format; API-format files have no layout)."""
    if not workflow.get("nodes"):
        return ["no nodes with a layout (an API-format prompt?)"]
    return framing_problems(node_boxes(workflow), *view(workflow))


def best_view(boxes: dict[str, Rect]) -> tuple[float, tuple[float, float]]:
    """The largest scale (at most 1, in steps of 0.05) at which the graph, placed at the top left of the
    visible canvas, is framed; the smallest legible scale when none is (the layout is then too big)."""
    left = min(b.left for b in boxes.values())
    top = min(b.top for b in boxes.values())
    scale = 1.0
    while True:
        offset = (round((CANVAS_AREA.left + MARGIN) / scale - left, 1), round((CANVAS_AREA.top + MARGIN) / scale - top, 1))
        if scale <= MIN_SCALE or not framing_problems(boxes, scale, offset):
            return scale, offset
        scale = round(scale - 0.05, 2)


def frame(workflow: dict) -> dict:
    """The workflow with `extra.ds` set by best_view."""
    scale, offset = best_view(node_boxes(workflow))
    workflow.setdefault("extra", {})["ds"] = {"scale": scale, "offset": list(offset)}
    return workflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="workflow files (default: workflows/*.json)")
    parser.add_argument("--write", action="store_true", help="set extra.ds in each file to frame it")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files or sorted((REPO_ROOT / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text(encoding="utf-8"))
        if args.write and workflow.get("nodes"):
            frame(workflow)
            path.write_text(json.dumps(workflow, indent=2) + "\n", encoding="utf-8")
        problems = workflow_problems(workflow)
        failed += bool(problems)
        print(f"{path.name}: " + ("framed at scale " + str(view(workflow)[0]) if not problems else "; ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
