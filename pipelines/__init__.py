"""The engine: loading, encoding, sampling, decoding and provider clients. Never imports ComfyUI."""
