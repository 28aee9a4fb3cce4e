"""Nodes every local family uses: memory and speed options, decoding."""
