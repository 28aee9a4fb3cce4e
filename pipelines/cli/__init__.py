"""The render command and its option parser; uses a family, the engine and demo/."""
