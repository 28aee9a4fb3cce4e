"""Weight files: safe safetensors/pickle reading, what a file holds, streamed loading, fp8 storage and matmul. Imports no family."""
