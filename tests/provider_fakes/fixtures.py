"""pytest fixtures shared by the provider tests (import with `from provider_fakes.fixtures import *`)."""

from __future__ import annotations

import logging
import time

import pytest
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import runner
from hunyuan_video_suite.pipelines.providers.http import RetryPolicy
from hunyuan_video_suite.pipelines.providers.runner import Callbacks, RunnerConfig
from hunyuan_video_suite.pipelines.providers.service import JOURNAL_FILE, run_job

from .fal import FalFake
from .segmind import SegmindFake
from .server import MediaServer, make_mp4
from .wavespeed import WaveSpeedFake

KEYS = {"fal": "fal-key-id:fal-SECRET-0123456789", "wavespeed": "ws-SECRET-abcdef0123456789",
        "segmind": "SG_SECRET0123456789"}
FAKES = {"fal": FalFake, "wavespeed": WaveSpeedFake, "segmind": SegmindFake}
ENV = {"fal": ("FAL_KEY", "FAL_QUEUE_BASE_URL"), "wavespeed": ("WAVESPEED_API_KEY", "WAVESPEED_BASE_URL"),
       "segmind": ("SEGMIND_API_KEY", "SEGMIND_BASE_URL")}
__all__ = ["KEYS", "FAKES", "Recorder", "data_dir", "fast", "media", "provider_env", "run", "video_bytes",
           "journal_row", "all_log_text", "clock", "wait_until"]


@pytest.fixture(scope="session")
def video_bytes() -> bytes:
    return make_mp4()


@pytest.fixture
def media(video_bytes):
    server = MediaServer(video_bytes).start()
    yield server
    server.stop()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "user" / "hunyuan_video_suite"


@pytest.fixture
def fast() -> RunnerConfig:
    return RunnerConfig(poll_interval_s=0.01, max_poll_interval_s=0.02, timeout_s=10.0, request_timeout_s=5.0,
                        policy=RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=0.02, max_rate_wait_s=0.5))


@pytest.fixture
def provider_env(monkeypatch, media, caplog):
    """Starts the fake for a provider, points the environment at it, and stops it afterwards."""
    started = []
    caplog.set_level(logging.DEBUG)

    def start(provider: str, **options):
        fake = FAKES[provider](media, KEYS[provider], **options).start()
        started.append(fake)
        key_var, base_var = ENV[provider]
        monkeypatch.setenv(key_var, KEYS[provider])
        monkeypatch.setenv(base_var, fake.url)
        return fake

    yield start
    for fake in started:
        fake.stop()


class Clock:
    """The runner's monotonic clock, moved on by a test at the state it chooses: a job deadline then passes
    exactly there, on a busy machine as on an idle one. Everything else is the real `time` module."""

    def __init__(self):
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(runner, "time", fake)
    return fake


class Recorder:
    """Callbacks that record what the runner reports; `stop_when` turns on the interrupt flag."""

    def __init__(self, stop_when=None):
        self.texts: list[str] = []
        self.fractions: list[float] = []
        self.stop_when = stop_when
        self.stop = False

    def callbacks(self) -> Callbacks:
        return Callbacks(text=self._text, fraction=self.fractions.append, interrupted=lambda: self.stop)

    def _text(self, text: str) -> None:
        self.texts.append(text)
        if self.stop_when and self.stop_when(text):
            self.stop = True


def run(job, data_dir, config, recorder: Recorder | None = None):
    return run_job(job, data_dir, config=config, callbacks=(recorder or Recorder()).callbacks())


def journal_row(data_dir, job):
    return J.Journal(data_dir / JOURNAL_FILE).get(job.fingerprint)


def wait_until(ready, timeout_s: float = 120.0) -> bool:
    """Poll `ready()` until it is true (True) or `timeout_s` has passed (False): a bound for a slow machine,
    never a guess at how long anything takes."""
    end = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def all_log_text(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
