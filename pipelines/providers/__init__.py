"""Clients for the HunyuanVideo API providers (WaveSpeedAI, fal.ai, Segmind).

Build a validated `Job` with a provider module's `*_job(...)` function, then `run_job(job, data_dir)`.
Nothing here imports ComfyUI: progress and interrupts go through `Callbacks`.
"""

from . import errors, fal, segmind, wavespeed
from .base import Job
from .runner import Callbacks, Outcome, RunnerConfig
from .service import config_from_env, make_runner, run_job

__all__ = ["Callbacks", "Job", "Outcome", "RunnerConfig", "config_from_env", "errors", "fal", "make_runner",
           "run_job", "segmind", "wavespeed"]
