"""HunyuanVideo Suite: ComfyUI nodes for the HunyuanVideo family, local and through paid APIs."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./nodes/web"  # the frontend extension that shows the API nodes' price before queueing

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
