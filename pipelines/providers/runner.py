"""The one flow every provider job goes through:

fingerprint -> journal -> submit once -> poll -> download -> cache.

A re-run of the same job (same fingerprint) never submits again while the journal says the
remote job exists: a finished one is served from the cache, a pending one is resumed, one
whose submit had an unknown outcome is refused with an explanation. Only a job the provider
refused, failed, cancelled or lost (expired) is submitted anew when the user queues it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from . import errors as E
from . import journal as J
from .base import Job, Protocol, Result, Status
from .http import RetryPolicy
from .media import download, file_sha256, store_bytes

log = logging.getLogger("hunyuan_video_suite.providers")


@dataclass
class RunnerConfig:
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 10.0
    timeout_s: float = 1800.0
    request_timeout_s: float = 60.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class Callbacks:
    """How the runner reports; any callback may raise to stop it (ComfyUI's progress bar does on Cancel)."""

    text: Callable[[str], None] = lambda text: None
    fraction: Callable[[float], None] = lambda value: None
    interrupted: Callable[[], bool] = lambda: False


@dataclass
class Outcome:
    video_path: Path
    provider: str
    model: str
    request_id: str
    seed: int | None
    fingerprint: str
    from_cache: bool
    resumed: bool
    timings: dict


class _Stop(Exception):
    """Internal: the user interrupted while the runner was waiting."""


class JobRunner:
    def __init__(self, protocol: Protocol, journal: J.Journal, cache_dir: Path, config: RunnerConfig | None = None,
                 callbacks: Callbacks | None = None):
        self.protocol = protocol
        self.journal = journal
        self.cache_dir = Path(cache_dir)
        self.config = config or RunnerConfig()
        self.callbacks = callbacks or Callbacks()
        self._raised: BaseException | None = None
        self._started = time.monotonic()
        protocol.pause = self._pause
        protocol.policy = self.config.policy

    # ------------------------------------------------------------------ feedback and interrupts

    def _notify(self, callback: Callable, *args) -> None:
        try:
            callback(*args)
        except BaseException as exc:  # noqa: BLE001 - ComfyUI signals Cancel by raising from progress updates
            self._raised = self._raised or exc

    def _say(self, text: str) -> None:
        log.info("%s", text)
        self._notify(self.callbacks.text, text)

    def _stop_requested(self) -> bool:
        if self._raised is not None:
            return True
        try:
            return bool(self.callbacks.interrupted())
        except BaseException as exc:  # noqa: BLE001
            self._raised = exc
            return True

    async def _pause(self, seconds: float) -> None:
        """Sleep in short slices so an interrupt is seen within about 0.1 s."""
        end = time.monotonic() + max(seconds, 0.0)
        while True:
            if self._stop_requested():
                raise _Stop()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    # ------------------------------------------------------------------ the flow

    async def run(self, job: Job) -> Outcome:
        fp = job.fingerprint
        row = self.journal.get(fp)
        name = self.protocol.name
        if row is not None and row.phase == J.DONE:
            if row.video_path and Path(row.video_path).is_file() and file_sha256(row.video_path) == row.video_sha256:
                self._say(f"{name}: served from the local cache (request id {row.request_id}); nothing was billed")
                self._notify(self.callbacks.fraction, 1.0)
                return self._outcome(row, from_cache=True, resumed=True)
            phase = J.RESULT if row.state.get("video_url") else J.PENDING
            row = self.journal.update(row, "cached video missing or changed; fetching the result again", phase=phase)
        if row is not None and row.phase in (J.SUBMITTING, J.UNCERTAIN):
            if row.phase == J.SUBMITTING:
                row = self.journal.update(row, "found unfinished submit", phase=J.UNCERTAIN)
            raise E.SubmitUncertain(
                f"{name}: an earlier submit of this exact job ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row.created_at))}) "
                "may have reached the provider, but no request id was recorded, so it is not submitted again "
                "(that could bill twice). Check your dashboard at the provider; to submit anyway, change an input "
                "(e.g. the seed) and queue again.", provider=name)
        if row is not None and row.phase == J.FLAGGED:
            raise E.ContentFlagged(f"{row.error} (recorded earlier; not submitted again: change the prompt or the seed)",
                                   provider=name, request_id=row.request_id)
        resumed = row is not None and row.phase in (J.PENDING, J.RESULT)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.request_timeout_s, connect=10.0)) as client:
            if not resumed:
                row = await self._submit(client, job)
            else:
                self._say(f"{name}: resuming request id {row.request_id} ({row.remote_status or row.phase}); "
                          "not submitting again")
            if row.phase == J.PENDING:
                row = await self._wait(client, row)
            if row.phase == J.RESULT:
                row = await self._fetch(client, row)
        self._notify(self.callbacks.fraction, 1.0)
        self._say(f"{name}: done in {self._elapsed():.0f} s (request id {row.request_id})")
        return self._outcome(row, from_cache=False, resumed=resumed)

    async def _submit(self, client: httpx.AsyncClient, job: Job) -> J.JobRow:
        name = self.protocol.name
        if self._stop_requested():
            raise self._interruption(f"{name}: interrupted before the submit; nothing was sent")
        row = self.journal.start(job.fingerprint, job.provider, job.model, self.protocol.base_url, job.seed)
        self._say(f"{name}: submitting {job.model}")
        try:
            submitted = await self.protocol.submit(client, job)
        except E.SubmitUncertain as exc:
            self.journal.update(row, str(exc), phase=J.UNCERTAIN, error=str(exc))
            raise
        except _Stop:
            self.journal.update(row, "interrupted while waiting to submit", phase=J.REJECTED)
            raise self._interruption(f"{name}: interrupted before the submit went out; nothing was sent") from None
        except E.ProviderError as exc:
            self.journal.update(row, str(exc), phase=J.REJECTED, error=str(exc))
            raise
        except BaseException as exc:
            # Anything else (a bug, a cancelled thread) after the POST may have gone out: keep it uncertain.
            self.journal.update(row, f"submit aborted: {type(exc).__name__}", phase=J.UNCERTAIN)
            raise
        state = {**submitted.state, "submitted_at": time.time()}
        row = self.journal.update(row, "submitted", phase=J.PENDING, request_id=submitted.request_id, state=state)
        self._say(f"{name}: submitted, request id {submitted.request_id}")
        if submitted.video_bytes is not None:
            row = self._store_inline(row, submitted.video_bytes)
        return row

    async def _wait(self, client: httpx.AsyncClient, row: J.JobRow) -> J.JobRow:
        name, rid = self.protocol.name, row.request_id
        interval = self.config.poll_interval_s
        deadline = time.monotonic() + self.config.timeout_s
        running_since: float | None = None
        last: Status | None = None
        try:
            while True:
                if self._stop_requested():
                    raise _Stop()
                try:
                    status = await self.protocol.status(client, row)
                except E.ResultExpired as exc:
                    self.journal.update(row, str(exc), phase=J.EXPIRED, error=str(exc))
                    raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                          request_id=rid) from None
                if last is None or status.remote_status != last.remote_status:
                    row = self.journal.update(row, status.error, remote_status=status.remote_status)
                last = status
                if status.phase == "running" and running_since is None:
                    running_since = time.monotonic()
                self._report(status, running_since)
                if status.phase == "done":
                    return await self._take_result(client, row, status)
                if status.phase in ("failed", "cancelled"):
                    message = f"{name}: the job {status.remote_status.lower()} [request id {rid}]" + (
                        f": {status.error}" if status.error else "")
                    self.journal.update(row, message, phase=J.FAILED if status.phase == "failed" else J.CANCELLED,
                                        error=message)
                    raise E.JobFailed(message + ". Queue again to submit a new job.", provider=name, request_id=rid)
                if time.monotonic() >= deadline:
                    self.journal.update(row, "local wait limit reached; job left running")
                    raise E.WaitTimeout(
                        f"{name}: gave up waiting after {self.config.timeout_s:.0f} s; request id {rid} is still "
                        f"{status.remote_status} at the provider. Queue the same job again to resume it "
                        "(it will not be submitted or billed again).", provider=name, request_id=rid)
                await self._pause(min(interval, max(deadline - time.monotonic(), 0.0)))
                interval = min(interval * 1.5, self.config.max_poll_interval_s)
        except _Stop:
            raise await self._interrupt(client, row, last) from None

    def _report(self, status: Status, running_since: float | None) -> None:
        name = self.protocol.name
        elapsed = self._elapsed()
        if status.phase == "queued":
            where = f", position {status.position}" if status.position is not None else ""
            self._say(f"{name}: in queue{where} · {elapsed:.0f} s")
            self._notify(self.callbacks.fraction, 0.02)
        elif status.phase == "running":
            spent = time.monotonic() - (running_since or time.monotonic())
            log_line = f" · {status.logs[-1][:120]}" if status.logs else ""
            self._say(f"{name}: processing · {elapsed:.0f} s{log_line}")
            self._notify(self.callbacks.fraction, 0.05 + 0.8 * min(spent / self.protocol.expected_run_s, 0.95))

    async def _take_result(self, client: httpx.AsyncClient, row: J.JobRow, status: Status) -> J.JobRow:
        name, rid = self.protocol.name, row.request_id
        try:
            result: Result = await self.protocol.result(client, row, status)
        except E.ResultExpired as exc:
            self.journal.update(row, str(exc), phase=J.EXPIRED, error=str(exc))
            raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                  request_id=rid) from None
        except E.JobFailed as exc:
            self.journal.update(row, str(exc), phase=J.FAILED, error=str(exc))
            raise
        if result.flagged:
            message = f"{name}: the provider's safety checker flagged the output as NSFW [request id {rid}]"
            self.journal.update(row, message, phase=J.FLAGGED, error=message)
            raise E.ContentFlagged(message, provider=name, request_id=rid)
        if result.seed is not None:
            row.state["seed"] = result.seed
        if result.video_bytes is not None:
            return self._store_inline(row, result.video_bytes)
        state = {**row.state, "video_url": result.video_url, "video_size": result.video_size}
        return self.journal.update(row, "result ready", phase=J.RESULT, state=state)

    def _cache_path(self, row: J.JobRow) -> Path:
        return self.cache_dir / f"{row.provider}-{row.fingerprint[:40]}.mp4"

    def _store_inline(self, row: J.JobRow, data: bytes) -> J.JobRow:
        path = self._cache_path(row)
        sha = store_bytes(data, path, provider=self.protocol.name, request_id=row.request_id)
        return self.journal.update(row, "video cached", phase=J.DONE, video_path=str(path), video_sha256=sha)

    async def _fetch(self, client: httpx.AsyncClient, row: J.JobRow) -> J.JobRow:
        name, rid = self.protocol.name, row.request_id
        self._say(f"{name}: downloading the video")
        path = self._cache_path(row)
        started = time.monotonic()
        try:
            # A separate client without any auth: media URLs are often on another host.
            async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.request_timeout_s, connect=10.0)) as media:
                sha = await download(media, row.state["video_url"], path, policy=self.config.policy, pause=self._pause,
                                     provider=name, request_id=rid, expected_size=row.state.get("video_size"),
                                     on_progress=lambda f: self._notify(self.callbacks.fraction, 0.9 + 0.1 * f))
        except E.ResultExpired as exc:
            self.journal.update(row, str(exc), phase=J.EXPIRED, error=str(exc))
            raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                  request_id=rid) from None
        except _Stop:
            raise self._interruption(f"{name}: interrupted during the download of request id {rid}; queue the same job "
                                     "again to fetch it (not billed again)") from None
        state = {**row.state, "download_s": round(time.monotonic() - started, 3)}
        return self.journal.update(row, "video cached", phase=J.DONE, video_path=str(path), video_sha256=sha, state=state)

    async def _interrupt(self, client: httpx.AsyncClient, row: J.JobRow, last: Status | None) -> BaseException:
        """Cancel a queued job where the provider can; otherwise detach and leave the row resumable."""
        name, rid = self.protocol.name, row.request_id
        queued = last is None or last.phase == "queued"
        if self.protocol.can_cancel and queued and await self.protocol.cancel(client, row):
            message = f"{name}: interrupted; the queued request {rid} was cancelled (not billed)"
            self.journal.update(row, message, phase=J.CANCELLED)
        else:
            message = (f"{name}: interrupted; request id {rid} keeps running at the provider. Queue the same job "
                       "again to pick up its result without paying twice")
            self.journal.update(row, "detached on interrupt")
        return self._interruption(message)

    def _interruption(self, message: str) -> BaseException:
        """The exception to stop with: the host's own (e.g. ComfyUI's) when a callback raised one."""
        self._notify(self.callbacks.text, message)
        log.info("%s", message)
        if self._raised is not None:
            return self._raised
        return E.Interrupted(message, provider=self.protocol.name)

    def _outcome(self, row: J.JobRow, *, from_cache: bool, resumed: bool) -> Outcome:
        timings = {"total_s": round(self._elapsed(), 3)}
        if "download_s" in row.state:
            timings["download_s"] = row.state["download_s"]
        if row.state.get("submitted_at"):
            timings["submitted_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.state["submitted_at"]))
        return Outcome(Path(row.video_path), row.provider, row.model, row.request_id or "",
                       row.state.get("seed", row.seed), row.fingerprint, from_cache, resumed, timings)


def run_blocking(coroutine_factory: Callable[[], object]):
    """Run a coroutine to completion from synchronous code.

    ComfyUI runs nodes in a worker thread without an event loop, where `asyncio.run` works; when a
    loop is already running in this thread, the coroutine runs on a fresh loop in a new thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine_factory())
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine_factory())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="hyvs-provider", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
