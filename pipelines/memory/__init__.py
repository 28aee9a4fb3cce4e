"""GPU memory: block offload, pinned host copies, token chunking, the VRAM planner and tensor-byte counting. Imports no family."""
