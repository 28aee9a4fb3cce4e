"""Entry point for callers (the ComfyUI nodes, scripts): run one provider job end to end.

Files live in `<data_dir>` (the nodes pass `<ComfyUI user directory>/hunyuan_video_suite`):
`api_keys.json` (optional keys/base URLs), `api_jobs.sqlite3` (the journal), `api_cache/` (videos).
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Job, Protocol
from .errors import Redactor
from .fal import FalQueue
from .http import RetryPolicy
from .journal import Journal
from .keys import REDACT, api_key, base_url
from .runner import Callbacks, JobRunner, Outcome, RunnerConfig, run_blocking
from .segmind import Segmind
from .wavespeed import WaveSpeed

PROTOCOLS: dict[str, type[Protocol]] = {"wavespeed": WaveSpeed, "fal": FalQueue, "segmind": Segmind}
JOURNAL_FILE = "api_jobs.sqlite3"
CACHE_DIR = "api_cache"


def config_from_env(timeout_s: float | None = None) -> RunnerConfig:
    """Defaults, overridable with HYVS_API_POLL_INTERVAL / HYVS_API_BACKOFF (seconds; tests use small ones)."""
    config = RunnerConfig()
    if os.environ.get("HYVS_API_POLL_INTERVAL"):
        config.poll_interval_s = float(os.environ["HYVS_API_POLL_INTERVAL"])
        config.max_poll_interval_s = max(config.poll_interval_s, min(config.max_poll_interval_s, config.poll_interval_s * 4))
    if os.environ.get("HYVS_API_BACKOFF"):
        config.policy = RetryPolicy(backoff_s=float(os.environ["HYVS_API_BACKOFF"]))
    if timeout_s is not None:
        config.timeout_s = float(timeout_s)
    return config


def make_runner(job: Job, data_dir: Path, *, config: RunnerConfig | None = None,
                callbacks: Callbacks | None = None, redact: Redactor = REDACT) -> JobRunner:
    data_dir = Path(data_dir)
    config = config or config_from_env()
    protocol = PROTOCOLS[job.provider](base_url(job.provider, data_dir), api_key(job.provider, data_dir),
                                       policy=config.policy, pause=None, redact=redact)
    return JobRunner(protocol, Journal(data_dir / JOURNAL_FILE), data_dir / CACHE_DIR, config, callbacks)


def run_job(job: Job, data_dir: Path, *, config: RunnerConfig | None = None,
            callbacks: Callbacks | None = None) -> Outcome:
    """Validate-free entry (the job was validated when built): journal, submit once, wait, download, cache."""
    runner = make_runner(job, data_dir, config=config, callbacks=callbacks)
    return run_blocking(lambda: runner.run(job))
