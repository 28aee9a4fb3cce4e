"""Input checks that run when ComfyUI validates a prompt, before any node of it executes.

ComfyUI skips its own min/max checks for the inputs a node's VALIDATE_INPUTS names, so these
re-check the declared ranges before the pipeline's own rules (multiples of 16, 4k+1 frames, ...).
"""

from __future__ import annotations

from typing import Callable


def declared_range_error(node_class, values: dict) -> str | None:
    spec = node_class.INPUT_TYPES()
    inputs = {**spec.get("required", {}), **spec.get("optional", {})}
    for name, value in values.items():
        options = inputs[name][1]
        if "min" in options and value < options["min"]:
            return f"{name} must be at least {options['min']}, got {value}"
        if "max" in options and value > options["max"]:
            return f"{name} must be at most {options['max']}, got {value}"
    return None


def validate(node_class, values: dict, rules: Callable[[], None]) -> bool | str:
    """True, or the message ComfyUI shows under the node. Linked inputs (None here) are checked when the node runs."""
    if any(value is None for value in values.values()):
        return True
    error = declared_range_error(node_class, values)
    if error:
        return error
    try:
        rules()
    except ValueError as e:
        return str(e)
    return True
