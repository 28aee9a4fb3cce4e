"""Nodes every local family uses: memory, speed and preview options, decoding."""
