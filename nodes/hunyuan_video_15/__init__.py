"""The HunyuanVideo 1.5 family's nodes: loaders, text and image encoding, samplers, decode."""
