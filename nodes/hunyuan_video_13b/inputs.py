"""Widget definitions that several nodes share."""

from __future__ import annotations

from ...pipelines.hunyuan_video_13b.rope import RIFLEX_CHOICES, RIFLEX_TITLES


def riflex_input() -> tuple:
    """The samplers' RIFLEx switch (optional, so workflows saved before it load unchanged)."""
    return (
        list(RIFLEX_CHOICES),
        {"default": "auto", "tooltip": " ".join(f"{name}: {title}." for name, title in RIFLEX_TITLES.items())},
    )
