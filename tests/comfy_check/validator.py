"""Check a workflow the way ComfyUI does before it queues it, without a ComfyUI server.

Two stages, as in ComfyUI:

1. The browser turns a UI workflow (format 0.4 or schema version 1) into an API prompt
   (`app.graphToPrompt()`): widget values land on inputs in widget order, links are followed
   through Reroute nodes and bypassed nodes, muted nodes and UI-only nodes (Note, PrimitiveNode,
   Reroute) disappear. `ui_to_api` does the same and also reports what the browser would
   silently get wrong: unknown node types, link types that do not fit, and `widgets_values`
   lists whose length does not match the node's widgets (stale or hand-edited files).
2. The server checks the prompt (`execution.validate_prompt` / `validate_inputs`): node types
   exist, there is an output node, required inputs are present, linked types are compatible,
   numbers lie within min/max and combo values are in their lists. `validate_api` does that.

Every problem names the node id, its type and the input, like ComfyUI's own `node_errors`.
ComfyUI only checks the nodes that feed an output; we check every node, since a node that feeds
nothing has no place in a shipped workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Seed-like INT inputs get a "control after generate" widget unless the spec says otherwise
# (the frontend's int widget: `control_after_generate ?? ["seed", "noise_seed"].includes(name)`).
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASSED = 2, 4
CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}  # what ComfyUI casts values with


@dataclass(frozen=True)
class Problem:
    node_id: str
    class_type: str
    input_name: str | None
    message: str

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name is not None:
            where += f", input '{self.input_name}'"
        return f"{where}: {self.message}"


class WorkflowInvalid(ValueError):
    def __init__(self, problems: list[Problem], name: str = "workflow"):
        self.problems = problems
        super().__init__(f"{name} fails ComfyUI's checks:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Widget:
    """One widget of a node as the frontend builds it; `input_name` is None for helper widgets."""

    name: str
    input_name: str | None
    spec: tuple | None = None


# ----------------------------------------------------------------------------- input specs

def input_specs(node_def: dict) -> list[tuple[str, str, tuple]]:
    """(name, "required"|"optional", (type, options)) in the order the frontend and server use."""
    out = []
    for category in ("required", "optional"):
        specs = node_def.get("input", {}).get(category) or {}
        order = node_def.get("input_order", {}).get(category) or list(specs)
        for name in order:
            raw = specs[name]
            raw = raw if isinstance(raw, list) else [raw]
            options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            out.append((name, category, (raw[0], options)))
    return out


def is_widget_input(spec: tuple) -> bool:
    kind, options = spec
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def combo_options(spec: tuple) -> list | None:
    kind, options = spec
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options", []))
    return None


def widget_layout(node_def: dict) -> list[Widget]:
    """The node's widgets in order, including the frontend's helper widgets that are saved too."""
    widgets = []
    for name, _, spec in input_specs(node_def):
        if not is_widget_input(spec):
            continue
        kind, options = spec
        widgets.append(Widget(name, name, spec))
        is_combo = combo_options(spec) is not None
        if kind == "INT":
            control = options.get("control_after_generate")
            if control is None:
                control = name in SEED_NAMES
        else:
            control = bool(options.get("control_after_generate")) and (kind == "FLOAT" or is_combo)
        if control:
            widgets.append(Widget("control_after_generate", None))
            if is_combo:
                widgets.append(Widget("control_filter_list", None))
        if is_combo and any(options.get(flag) for flag in UPLOAD_FLAGS):
            widgets.append(Widget("upload", None))
    return widgets


def widget_values_by_name(node_def: dict, values: list) -> dict:
    """{widget name: value} for a node's `widgets_values`, assuming the count matches."""
    return {w.name if w.input_name is None else w.input_name: v for w, v in zip(widget_layout(node_def), values)}


def types_compatible(received, expected) -> bool:
    """ComfyUI's `validate_node_input` (non-strict): equal, "*" on either side, or comma lists that overlap."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*":
        return True
    received_set = {t.strip() for t in received.split(",")}
    expected_set = {t.strip() for t in expected.split(",")}
    return bool(received_set & expected_set)


def input_type_name(spec: tuple) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


# ----------------------------------------------------------------------------- UI -> API

class _Graph:
    def __init__(self, workflow: dict):
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowInvalid([Problem("-", "-", None, "subgraphs are not supported by this checker")])
        self.nodes = {str(n["id"]): n for n in workflow.get("nodes", [])}
        self.links = {}
        for link in workflow.get("links", []) or []:
            if isinstance(link, dict):  # schema version 1
                entry = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link.get("type"))
                self.links[link["id"]] = entry
            else:  # 0.4: [id, origin_id, origin_slot, target_id, target_slot, type]
                self.links[link[0]] = tuple(link[1:6])

    def input_link(self, node: dict, slot_index: int):
        inputs = node.get("inputs") or []
        if slot_index >= len(inputs):
            return None
        link_id = inputs[slot_index].get("link")
        return None if link_id is None else self.links.get(link_id)


def _output_type(node: dict, slot: int, object_info: dict):
    node_def = object_info.get(node.get("type"))
    if node_def is not None:
        outputs = node_def.get("output", [])
        return outputs[slot] if slot < len(outputs) else None
    outputs = node.get("outputs") or []
    return outputs[slot].get("type") if slot < len(outputs) else None


def _resolve(graph: _Graph, link, object_info: dict, seen=None):
    """Follow a link back to the node that really produces the value, as graphToPrompt does.

    Returns ("link", origin_id, slot), ("value", v) for a PrimitiveNode, or None when the input is
    dropped (its source is muted, or a bypassed node has no input of the matching type).
    """
    seen = seen or set()
    origin_id, origin_slot = str(link[0]), int(link[1])
    if origin_id in seen or origin_id not in graph.nodes:
        return None
    seen.add(origin_id)
    origin = graph.nodes[origin_id]
    kind = origin.get("type")
    if kind == "PrimitiveNode":
        values = origin.get("widgets_values") or []
        return ("value", values[0]) if values else None
    if kind == "Reroute":
        upstream = graph.input_link(origin, 0)
        return None if upstream is None else _resolve(graph, upstream, object_info, seen)
    mode = origin.get("mode", 0)
    if mode == MODE_MUTED:
        return None
    if mode == MODE_BYPASSED:
        wanted = _output_type(origin, origin_slot, object_info)
        inputs = origin.get("inputs") or []
        order = ([origin_slot] if origin_slot < len(inputs) else []) + list(range(len(inputs)))
        for index in order:
            if inputs[index].get("link") is not None and types_compatible(inputs[index].get("type"), wanted):
                return _resolve(graph, graph.input_link(origin, index), object_info, seen)
        return None
    return ("link", origin_id, origin_slot)


def ui_to_api(workflow: dict, object_info: dict) -> tuple[dict, list[Problem]]:
    """The API prompt the frontend would queue for a UI workflow, and what is wrong on the way."""
    graph = _Graph(workflow)
    prompt, problems = {}, []
    for node_id, node in graph.nodes.items():
        kind = node.get("type")
        if kind in UI_ONLY_NODES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        node_def = object_info.get(kind)
        if node_def is None:
            problems.append(Problem(node_id, kind, None, f"unknown node type '{kind}' (not in object_info: missing pack or renamed node)"))
            continue
        specs = {name: spec for name, _, spec in input_specs(node_def)}
        inputs = _widget_inputs(node_id, node, node_def, problems)
        helpers = {w.name for w in widget_layout(node_def) if w.input_name is None}  # e.g. LoadImage's "upload"
        for index, slot in enumerate(node.get("inputs") or []):
            name = slot.get("name")
            if name in helpers and slot.get("link") is None:
                continue
            if name not in specs:
                problems.append(Problem(node_id, kind, name, f"the node has no input '{name}' (allowed: {', '.join(specs)})"))
                continue
            link = graph.input_link(node, index)
            if link is None:
                if slot.get("link") is not None:
                    problems.append(Problem(node_id, kind, name, f"link {slot['link']} is not in the workflow's links"))
                continue
            if str(link[2]) != node_id or int(link[3]) != index:
                problems.append(Problem(node_id, kind, name, f"link {slot['link']} points at node {link[2]} slot {link[3]}, not here"))
            _check_link_type(graph, node_id, kind, name, specs[name], link, object_info, problems)
            resolved = _resolve(graph, link, object_info)
            if resolved is None:
                continue  # the source is muted or bypassed without a matching input: the link is dropped
            if resolved[0] == "value":
                inputs[name] = resolved[1]
            else:
                inputs[name] = [resolved[1], resolved[2]]
        prompt[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": node.get("title") or node_def.get("display_name", kind)}}
    return prompt, problems


def shown_widget_values(workflow: dict, object_info: dict) -> dict[str, list]:
    """{node id: widget values} as the frontend shows them after `graphToPrompt` (PrimitiveNodes applied)."""
    graph = _Graph(workflow)
    shown = {}
    for node_id, node in graph.nodes.items():
        node_def = object_info.get(node.get("type"))
        if node_def is None:
            continue
        values = list(node.get("widgets_values") or [])
        layout = widget_layout(node_def)
        for index, slot in enumerate(node.get("inputs") or []):
            link = graph.input_link(node, index)
            if link is None or slot.get("name") is None:
                continue
            resolved = _resolve(graph, link, object_info)
            position = next((i for i, w in enumerate(layout) if w.input_name == slot["name"]), None)
            if resolved is not None and resolved[0] == "value" and position is not None and position < len(values):
                values[position] = resolved[1]
        shown[node_id] = values
    return shown


def _widget_inputs(node_id: str, node: dict, node_def: dict, problems: list[Problem]) -> dict:
    kind = node.get("type")
    layout = widget_layout(node_def)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):
        problems.append(Problem(node_id, kind, None, "widgets_values is an object; the frontend expects a list in widget order"))
        return {}
    if len(values) != len(layout):
        names = ", ".join(w.name for w in layout) or "none"
        problems.append(Problem(node_id, kind, None, f"has {len(values)} widget values but the node has {len(layout)} widgets ({names}): stale or hand-edited widgets_values"))
        # The frontend fills widgets from the front and leaves the rest at their defaults; do the same
        # so the checks below show where the values ended up.
        values = list(values[: len(layout)]) + [_default(w.spec) for w in layout[len(values):]]
    inputs = {}
    for widget, value in zip(layout, values):
        if widget.input_name is not None:
            inputs[widget.input_name] = value
        elif widget.name == "control_after_generate" and value not in CONTROL_VALUES:
            problems.append(Problem(node_id, kind, widget.name, f"'{value}' is not a control mode ({', '.join(sorted(CONTROL_VALUES))}): widget values are shifted"))
    return inputs


def _default(spec: tuple | None):
    if spec is None:
        return "fixed"
    kind, options = spec
    if "default" in options:
        return options["default"]
    choices = combo_options(spec)
    if choices is not None:
        return choices[0] if choices else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _check_link_type(graph, node_id, kind, name, spec, link, object_info, problems):
    """The link's type must fit the input (what the frontend refuses to connect, or silently drops)."""
    origin = graph.nodes.get(str(link[0]))
    if origin is None:
        problems.append(Problem(node_id, kind, name, f"linked from node {link[0]}, which is not in the workflow"))
        return
    if origin.get("type") == "PrimitiveNode":
        if not is_widget_input(spec):
            problems.append(Problem(node_id, kind, name, "a PrimitiveNode can only feed a widget input"))
        return
    if origin.get("type") == "Reroute":
        resolved = _resolve(graph, link, object_info)
        if resolved is None or resolved[0] != "link":
            return
        origin, slot = graph.nodes[resolved[1]], resolved[2]
    else:
        slot = int(link[1])
    produced = _output_type(origin, slot, object_info)
    if produced is None:
        problems.append(Problem(node_id, kind, name, f"linked from output {slot} of node {origin['id']} ({origin.get('type')}), which does not exist"))
        return
    expected = input_type_name(spec)
    if not types_compatible(produced, expected):
        problems.append(Problem(node_id, kind, name, f"Return type mismatch between linked nodes: received_type({produced}) mismatch input_type({expected})"))


# ----------------------------------------------------------------------------- server-side checks

def validate_api(prompt: dict, object_info: dict, validated_inputs: dict | None = None,
                 input_files: set[str] | None = None) -> list[Problem]:
    """ComfyUI's `validate_prompt` over an API prompt; returns every problem found.

    `validated_inputs` ({node id: input names}) are inputs the node's own VALIDATE_INPUTS checks,
    which ComfyUI exempts from its range and list checks. Upload combos (LoadImage and friends)
    are the same in core; their file names are checked only against `input_files` when given.
    """
    validated_inputs = validated_inputs or {}
    problems = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            problems.append(Problem(node_id, "?", None, "Cannot execute because a node is missing the class_type property."))
        elif node["class_type"] not in object_info:
            problems.append(Problem(node_id, node["class_type"], None, f"Cannot execute because node {node['class_type']} does not exist."))
    if problems:
        return problems
    if not any(object_info[n["class_type"]].get("output_node") for n in prompt.values()):
        problems.append(Problem("-", "-", None, "Prompt has no outputs"))
    for node_id, node in prompt.items():
        problems += _validate_node(node_id, node, prompt, object_info, validated_inputs.get(node["class_type"], set()), input_files)
    return problems


def _validate_node(node_id, node, prompt, object_info, own_checks, input_files) -> list[Problem]:
    kind = node["class_type"]
    inputs = node.get("inputs", {})
    problems = []

    def fail(name, message):
        problems.append(Problem(node_id, kind, name, message))

    for name, category, spec in input_specs(object_info[kind]):
        input_type, options = spec
        if name not in inputs:
            if category == "required":
                fail(name, "Required input is missing")
            continue
        value = inputs[name]
        if isinstance(value, list):
            if len(value) != 2:
                fail(name, "Bad linked input, must be a length-2 list of [node_id, slot_index]")
                continue
            origin_id, slot = str(value[0]), value[1]
            if origin_id not in prompt:
                fail(name, f"linked to node {origin_id}, which is not in the prompt (muted, bypassed without a matching input, or deleted)")
                continue
            outputs = object_info[prompt[origin_id]["class_type"]]["output"]
            if not isinstance(slot, int) or not 0 <= slot < len(outputs):
                fail(name, f"linked to output {slot} of node {origin_id}, which has {len(outputs)} outputs")
                continue
            expected = input_type_name(spec)
            if not types_compatible(outputs[slot], expected):
                fail(name, f"Return type mismatch between linked nodes: received_type({outputs[slot]}) mismatch input_type({expected})")
            continue
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        convert = CONVERTERS.get(input_type) if isinstance(input_type, str) else None
        try:
            value = convert(value) if convert is not None else value
        except (TypeError, ValueError) as exc:
            fail(name, f"Failed to convert an input value to a {input_type} value: {value!r}, {exc}")
            continue
        if name in own_checks or "*" in own_checks:
            continue
        if "min" in options and value < options["min"]:
            fail(name, f"Value {value} smaller than min of {options['min']}")
            continue
        if "max" in options and value > options["max"]:
            fail(name, f"Value {value} bigger than max of {options['max']}")
            continue
        choices = combo_options(spec)
        if choices is None:
            continue
        if options.get("multiselect") and isinstance(value, list):
            missing = [v for v in value if v not in choices]
            if missing:
                fail(name, f"Value not in list: {missing} not in {_list_info(choices)}")
            continue
        if any(options.get(flag) for flag in UPLOAD_FLAGS):
            if input_files is not None and value not in input_files:
                fail(name, f"Invalid file: '{value}' is not in ComfyUI's input folder")
            continue
        if value not in choices:
            fail(name, f"Value not in list: '{value}' not in {_list_info(choices)}")
    return problems


def _list_info(choices: list) -> str:
    return f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)


# ----------------------------------------------------------------------------- one entry point

def is_api_format(workflow: dict) -> bool:
    return "nodes" not in workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())


def check_workflow(workflow: dict, object_info: dict, validated_inputs: dict | None = None,
                   input_files: set[str] | None = None) -> tuple[dict, list[Problem]]:
    """(API prompt, problems) for a workflow in UI or API format."""
    if is_api_format(workflow):
        return workflow, validate_api(workflow, object_info, validated_inputs, input_files)
    version = workflow.get("version")
    if version not in (0.4, 1):
        return {}, [Problem("-", "-", None, f"unknown workflow version {version!r} (expected 0.4 or 1)")]
    prompt, problems = ui_to_api(workflow, object_info)
    if any("unknown node type" in p.message for p in problems):
        return prompt, problems
    # A link of the wrong type is seen by both stages; report it once.
    return prompt, list(dict.fromkeys(problems + validate_api(prompt, object_info, validated_inputs, input_files)))


def validate_workflow(workflow: dict, object_info: dict, name: str = "workflow", **kwargs) -> dict:
    """The API prompt, or WorkflowInvalid listing every problem."""
    prompt, problems = check_workflow(workflow, object_info, **kwargs)
    if problems:
        raise WorkflowInvalid(problems, name)
    return prompt
