"""Entry point for callers (the ComfyUI nodes, scripts): run one provider job end to end.

Files live in `<data_dir>` (the nodes pass `<ComfyUI user directory>/hunyuan_video_suite`):
`api_keys.json` (optional keys/base URLs), `api_jobs.sqlite3` (the journal), `api_cache/` (videos).
"""

from __future__ import annotations

import math
from pathlib import Path

from .base import Job, Protocol
from .errors import ProviderError, Redactor
from .fal import FalQueue
from .http import RetryPolicy
from .journal import Journal
from .keys import REDACT, api_key, base_url, setting
from .runner import Callbacks, JobRunner, Outcome, RunnerConfig, run_blocking
from .segmind import Segmind
from .wavespeed import WaveSpeed

PROTOCOLS: dict[str, type[Protocol]] = {"wavespeed": WaveSpeed, "fal": FalQueue, "segmind": Segmind}
JOURNAL_FILE = "api_jobs.sqlite3"
CACHE_DIR = "api_cache"


def config_from_env(timeout_s: float | None = None, config_dir: Path | None = None) -> RunnerConfig:
    """Defaults, overridable from the environment or the config file (`api_keys.json` in `config_dir`):
    HYVS_API_POLL_INTERVAL / HYVS_API_BACKOFF (seconds; tests use small ones), HYVS_API_MAX_DOWNLOAD_MB
    (the download size cap) and HYVS_API_RESUBMIT (1: pay again for a job that may have been billed
    without a result). The file is read on every run, so changing it needs no restart."""
    config = RunnerConfig()
    poll = _number_setting("HYVS_API_POLL_INTERVAL", config_dir)
    if poll is not None:
        config.poll_interval_s = poll
        config.max_poll_interval_s = max(poll, min(config.max_poll_interval_s, poll * 4))
    backoff = _number_setting("HYVS_API_BACKOFF", config_dir)
    if backoff is not None:
        config.policy = RetryPolicy(backoff_s=backoff)
    cap_mb = _number_setting("HYVS_API_MAX_DOWNLOAD_MB", config_dir)
    if cap_mb is not None:
        config.max_download_bytes = int(cap_mb * 2**20)
    config.resubmit = (setting("HYVS_API_RESUBMIT", config_dir) or "").lower() in ("1", "true", "yes", "on")
    if timeout_s is not None:
        config.timeout_s = float(timeout_s)
    return config


def _number_setting(name: str, config_dir: Path | None) -> float | None:
    value = setting(name, config_dir)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise ProviderError(f"{name} must be a number above 0, got {value!r}")
    return number


def make_runner(job: Job, data_dir: Path, *, config: RunnerConfig | None = None,
                callbacks: Callbacks | None = None, redact: Redactor = REDACT) -> JobRunner:
    data_dir = Path(data_dir)
    config = config or config_from_env(config_dir=data_dir)
    protocol = PROTOCOLS[job.provider](base_url(job.provider, data_dir), api_key(job.provider, data_dir),
                                       policy=config.policy, pause=None, redact=redact)
    return JobRunner(protocol, Journal(data_dir / JOURNAL_FILE), data_dir / CACHE_DIR, config, callbacks)


def run_job(job: Job, data_dir: Path, *, config: RunnerConfig | None = None,
            callbacks: Callbacks | None = None) -> Outcome:
    """Validate-free entry (the job was validated when built): journal, submit once, wait, download, cache."""
    runner = make_runner(job, data_dir, config=config, callbacks=callbacks)
    return run_blocking(lambda: runner.run(job))
