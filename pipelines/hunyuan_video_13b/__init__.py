"""The HunyuanVideo 13B family (T2V, I2V v1/v2, HunyuanCustom): key layouts, loaders, prompts, conditioning, samplers. Imports only the engine."""
