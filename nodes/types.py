"""Custom ComfyUI socket types of the pack, prefixed so they meet no other pack's types."""

TRANSFORMER = "HYVS_TRANSFORMER"
VAE = "HYVS_VAE"
TEXT_ENCODERS = "HYVS_TEXT_ENCODERS"
TEXT_EMBEDS = "HYVS_TEXT_EMBEDS"
I2V_CONDITIONING = "HYVS_I2V_CONDITIONING"
