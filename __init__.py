"""HunyuanVideo Suite: ComfyUI nodes for the HunyuanVideo family, local and through paid APIs."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
