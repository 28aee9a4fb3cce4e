"""Test support: ComfyUI's view of our nodes (object_info), its prompt validation, and its real frontend.

None of this ships to users; it lets the tests check workflows the way a ComfyUI server would,
without a ComfyUI server (which cannot be installed on the CI machines).
"""
