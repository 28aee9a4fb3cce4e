"""Drive ComfyUI's real frontend in Debian's Chromium through Playwright.

Only the system browser at /usr/bin/chromium is used; Playwright is never allowed to fetch one.
Every request that does not go to our local server is aborted, so the page never reaches out
(the frontend would otherwise ask model hosts for file sizes).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Loads a workflow and reports what the frontend made of it, all in one round trip.
LOAD_AND_CONVERT = """
async (workflow) => {
  const closeDialogs = () => document
    .querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach((b) => b.click());
  closeDialogs();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const errors = [];
  const onError = (event) => errors.push(String(event.reason || event.message || event));
  window.addEventListener('error', onError);
  window.addEventListener('unhandledrejection', onError);
  try {
    await window.app.loadGraphData(structuredClone(workflow));
  } catch (e) {
    errors.push('loadGraphData: ' + e);
  }
  // Missing-model checks finish asynchronously after the graph is in place.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const registered = window.LiteGraph.registered_node_types;
  const nodes = window.app.graph.nodes.map((n) => ({
    id: String(n.id),
    type: n.type,
    registered: n.type in registered,
    has_errors: !!n.has_errors,
    mode: n.mode,
    widgets: (n.widgets || []).map((w) => ({ name: w.name, value: w.value ?? null })),
  }));
  let prompt = null;
  let saved = null;
  try {
    const converted = await window.app.graphToPrompt();
    prompt = converted.output;
    saved = converted.workflow;
  } catch (e) {
    errors.push('graphToPrompt: ' + e);
  }
  window.removeEventListener('error', onError);
  window.removeEventListener('unhandledrejection', onError);
  const toasts = Array.from(document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn'))
    .map((t) => t.innerText.trim()).filter((t) => t);
  const dialogs = Array.from(document.querySelectorAll('.p-dialog'))
    .filter((d) => d.offsetParent !== null).map((d) => d.innerText.trim().slice(0, 300));
  closeDialogs();
  return { nodes, prompt, saved, errors, toasts, dialogs };
}
"""


# Where each node is on screen once the frontend has drawn the loaded view, and which of its corners
# (and its centre) cannot be seen: off the window, or under a panel of the frontend's own (anything
# hit-testable above the canvas that is not one of the nodes' own DOM widgets, such as a text box).
NODES_ON_SCREEN = """
async () => {
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const canvas = window.app.canvas;
  const element = canvas.canvas;
  const rect = element.getBoundingClientRect();
  const { scale, offset } = canvas.ds;
  const title = window.LiteGraph.NODE_TITLE_HEIGHT;
  const seen = (x, y) => {
    if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) return 'outside the window';
    const hit = document.elementFromPoint(x, y);
    if (hit === element || (hit && hit.closest('.dom-widget'))) return null;
    return hit ? `under ${hit.tagName.toLowerCase()}.${String(hit.className).split(' ')[0]}` : 'nothing there';
  };
  const nodes = window.app.graph.nodes.map((n) => {
    const left = rect.left + (n.pos[0] + offset[0]) * scale;
    const top = rect.top + (n.pos[1] - title + offset[1]) * scale;
    const right = rect.left + (n.pos[0] + n.size[0] + offset[0]) * scale;
    const bottom = rect.top + (n.pos[1] + n.size[1] + offset[1]) * scale;
    const probes = { 'top left': [left + 3, top + 3], 'top right': [right - 3, top + 3], 'bottom left': [left + 3, bottom - 3],
                     'bottom right': [right - 3, bottom - 3], centre: [(left + right) / 2, (top + bottom) / 2] };
    const hidden = Object.entries(probes).map(([name, [x, y]]) => [name, seen(x, y)]).filter(([, why]) => why)
      .map(([name, why]) => `${name} ${why}`);
    return { id: String(n.id), type: n.type, box: [left, top, right, bottom].map(Math.round), hidden };
  });
  return { scale, offset: Array.from(offset), window: [window.innerWidth, window.innerHeight], nodes };
}
"""


# The graph as the frontend laid it out, in graph units, once it has drawn the loaded view: every node's
# rendered box (title bar included: LiteGraph puts the title above `pos`; grown to hold its widgets and
# the DOM elements of its text boxes, so a node drawn bigger than its saved size is measured as drawn),
# the boxes of its widgets (canvas widgets span the node's width; DOM widgets their element's rectangle),
# the groups with their title bars, and the links as (origin node, target node).
RENDERED_LAYOUT = """
async () => {
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const LG = window.LiteGraph;
  const canvas = window.app.canvas;
  const graph = window.app.graph;
  const rect = canvas.canvas.getBoundingClientRect();
  const { scale, offset } = canvas.ds;
  const toGraph = (r) => [(r.left - rect.left) / scale - offset[0], (r.top - rect.top) / scale - offset[1],
                          (r.right - rect.left) / scale - offset[0], (r.bottom - rect.top) / scale - offset[1]];
  const title = LG.NODE_TITLE_HEIGHT;
  const nodes = graph.nodes.map((n) => {
    const [x, y] = n.pos;
    let box = [x, y - title, x + n.size[0], y + n.size[1]];
    if (typeof n.getBounding === 'function') {
      const b = n.getBounding(new Float32Array(4));
      box = [Math.min(box[0], b[0]), Math.min(box[1], b[1]), Math.max(box[2], b[0] + b[2]), Math.max(box[3], b[1] + b[3])];
    }
    const widgets = [];
    for (const w of n.widgets || []) {
      if (w.hidden || w.type === 'hidden') continue;
      const element = w.element && w.element.isConnected && w.element.offsetParent !== null ? w.element : null;
      let wbox = null;
      if (element) wbox = toGraph(element.getBoundingClientRect());
      else if (typeof (w.y ?? w.last_y) === 'number') {
        const top = y + (w.y ?? w.last_y);
        const height = w.computedHeight ?? (w.computeSize ? w.computeSize(n.size[0])[1] : LG.NODE_WIDGET_HEIGHT);
        wbox = [x, top, x + n.size[0], top + height];
      }
      if (!wbox) continue;
      widgets.push({ name: w.name, box: wbox, dom: !!element });
      box = [Math.min(box[0], wbox[0]), Math.min(box[1], wbox[1]), Math.max(box[2], wbox[2]), Math.max(box[3], wbox[3])];
    }
    let min = null;
    try { min = Array.from(n.computeSize()); } catch (e) { min = null; }
    return { id: String(n.id), type: n.type, box, min_size: min, collapsed: !!(n.flags && n.flags.collapsed), widgets };
  });
  const groups = (graph._groups || graph.groups || []).map((g) => {
    const [gx, gy, gw, gh] = Array.from(g._bounding || g.bounding);
    return { title: g.title || '', box: [gx, gy, gx + gw, gy + gh], title_height: g.titleHeight ?? LG.NODE_TITLE_HEIGHT };
  });
  const links = [];
  const all = graph.links instanceof Map ? Array.from(graph.links.values()) : Object.values(graph.links || {});
  for (const l of all) if (l) links.push([String(l.origin_id), String(l.target_id)]);
  return { nodes, groups, links };
}
"""


class Frontend:
    """One browser and one page with the frontend loaded; `load(workflow)` may be called many times."""

    def __init__(self, server_url: str, timeout_s: float = 90, window: tuple[int, int] = (1280, 720)):
        from playwright.sync_api import sync_playwright

        self.url = server_url
        self._profile = tempfile.mkdtemp(prefix="hyvs_chromium_")
        self._pw = sync_playwright().start()
        try:
            # A persistent context on a fresh folder is Playwright's way to pass --user-data-dir.
            self._browser = self._pw.chromium.launch_persistent_context(
                self._profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": window[0], "height": window[1]},
            )
            self.page = self._browser.new_page()
            self.page.route("**/*", self._only_local)
            self.page_errors: list[str] = []
            self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
            self.page.goto(server_url)
            self.page.wait_for_function(
                "() => window.app && window.app.graph && window.LiteGraph && window.app.vueAppReady !== false",
                timeout=timeout_s * 1000,
            )
            # Errors thrown while the app itself starts (some releases have such bugs) are not
            # about any workflow; kept for a look, not counted against the workflows.
            self.startup_errors, self.page_errors = self.page_errors, []
        except BaseException:
            self.close()
            raise

    def _only_local(self, route):
        url = route.request.url
        if url.startswith(self.url) or url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            route.abort()

    def load(self, workflow: dict) -> dict:
        """{nodes, prompt, saved, errors, toasts, dialogs} after loading `workflow` and calling graphToPrompt."""
        result = self.page.evaluate(LOAD_AND_CONVERT, workflow)
        result["errors"] += self.page_errors
        self.page_errors = []
        return result

    def nodes_on_screen(self) -> dict:
        """{scale, offset, window, nodes: [{id, type, box, hidden}]} for the graph loaded last."""
        return self.page.evaluate(NODES_ON_SCREEN)

    def rendered_layout(self) -> dict:
        """{nodes: [{id, type, box, min_size, widgets: [{name, box}]}], groups: [{title, box, title_height}],
        links: [[origin id, target id]]} for the graph loaded last, in graph units (see RENDERED_LAYOUT)."""
        return self.page.evaluate(RENDERED_LAYOUT)

    def screenshot(self, path: str) -> None:
        self.page.screenshot(path=path)

    def close(self) -> None:
        browser = getattr(self, "_browser", None)
        try:
            if browser is not None:
                browser.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
