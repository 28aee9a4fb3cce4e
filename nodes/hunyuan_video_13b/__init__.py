"""Nodes of the HunyuanVideo 13B family: loaders, text encoding, the T2V, I2V and Custom samplers."""
