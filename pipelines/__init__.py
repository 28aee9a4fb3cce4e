"""The engine: weight files, memory, speed, the denoise loop, video, one folder per model family, the CLI,
the tiny demo models and the provider clients. Never imports ComfyUI.

Imports run from a family to the engine folders (weights, memory, speed, denoise, video,
prompt_cache), never back and never between families; cli/ and demo/ may use a family; providers/
stands alone. The README's code map says what lives where."""
