"""The price under each API node before it is queued.

The pack's frontend extension (`web/hyvs_price.js`) posts a node's widget values to `/hyvs/price` whenever one
changes; the answer is the price of the job those widgets would build, by the same code and table the node uses
when it runs (`pricing.price_of` of `build_job`), or what is wrong with a widget. A linked picture is stood in for
by a blank one: no price depends on the image's pixels. Nothing is sent to a provider and no key is read.
"""

from __future__ import annotations

import torch

from ..pipelines.providers import pricing
from . import host
from .api import NODE_CLASS_MAPPINGS as API_NODES

ROUTE = "/hyvs/price"


def _blank_image() -> torch.Tensor:
    return torch.zeros(1, 8, 8, 3)


def quote(body: dict) -> dict:
    """{"text": the price line} for {"node": an API node's id, "widgets": {name: value}}; {"error": ...} for a
    request that names no API node."""
    node = API_NODES.get(body.get("node")) if isinstance(body, dict) else None
    if node is None:
        return {"error": f"not an API node of this pack (allowed: {', '.join(sorted(API_NODES))})"}
    widgets = body.get("widgets") if isinstance(body.get("widgets"), dict) else {}
    params = {}
    for name, spec in node.inputs().items():
        if spec[0] == "IMAGE":
            params[name] = _blank_image()
        elif name in widgets:
            params[name] = widgets[name]
    try:
        job = node.build_job(**params)
    except (ValueError, TypeError) as e:  # the widgets as they are would be refused at queue time: say why
        return {"text": f"no price yet: {e}"}
    price = pricing.price_of(job)
    return {"text": f"price: {price.text}", "usd": price.usd, "read": pricing.READ}


def register() -> bool:
    """Serve `quote` on ComfyUI's server (nothing outside ComfyUI)."""
    return host.add_json_route(ROUTE, quote)
