"""The one flow every provider job goes through:

fingerprint -> claim in the journal -> submit once -> poll -> download -> cache.

A re-run of the same job (same fingerprint) never submits again while the journal says the
remote job exists: a finished one is served from the cache, a pending one is resumed, one
whose submit had an unknown outcome is refused with an explanation (unless the user turns on
resubmit). Only a job the provider refused, failed, cancelled or lost (expired) is submitted
anew when the user queues it again. The same job run twice at once (two processes, two queue
entries) is claimed by one run; the other waits for its result.

The job deadline (`RunnerConfig.timeout_s`, the nodes' `timeout_minutes`) bounds the whole run:
retries, rate-limit waits, polls and the download. Cancel is seen within about 0.1 s, also in the
middle of a request or a download.
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
from .http import RetryPolicy, answer_limit
from .media import REFETCH_ATTEMPTS, Sink, adopt, clean_stale_parts, download, file_sha256, spool, verify_video
from .netguard import is_loopback_url, media_client

log = logging.getLogger("hunyuan_video_suite.providers")

TICK_S = 0.1  # how often a wait or a request in flight looks at Cancel and the deadline
SYNC_LOST = ("a synchronous call may have been billed and its result is lost; queue with a new seed, or turn on "
             "resubmit (HYVS_API_RESUBMIT=1), to pay again")
RESUBMIT_HINT = "change an input (e.g. the seed) and queue again, or turn on resubmit (HYVS_API_RESUBMIT=1)"


@dataclass
class RunnerConfig:
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 10.0
    timeout_s: float = 1800.0           # the whole job: waits, retries, rate limits and the download
    request_timeout_s: float = 60.0
    max_download_bytes: int = 1 << 30   # 1 GiB; a HunyuanVideo result is tens of MB
    lease_s: float = 60.0               # a claim on a job lapses this long after its owner stopped renewing it
    resubmit: bool = False              # pay again for a job whose earlier submit may have been billed without a result
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
    notes: tuple[str, ...] = ()


class _Stop(Exception):
    """Internal: the user interrupted while the runner was waiting."""


class _Deadline(Exception):
    """Internal: the job deadline passed while the runner was waiting."""


class JobRunner:
    def __init__(self, protocol: Protocol, journal: J.Journal, cache_dir: Path, config: RunnerConfig | None = None,
                 callbacks: Callbacks | None = None):
        self.protocol = protocol
        self.journal = journal
        self.cache_dir = Path(cache_dir)
        self.config = config or RunnerConfig()
        self.callbacks = callbacks or Callbacks()
        self.owner = J.new_owner()
        self._raised: BaseException | None = None
        self._started = time.monotonic()
        self._deadline = self._started + self.config.timeout_s
        protocol.pause = self._pause
        protocol.policy = self.config.policy
        protocol.spool = lambda response, request_id: spool(response, self._sink(), "inline", provider=protocol.name,
                                                            request_id=request_id)

    # ------------------------------------------------------------------ feedback, interrupts, the deadline

    def _notify(self, callback: Callable, *args) -> None:
        try:
            callback(*args)
        except BaseException as exc:  # noqa: BLE001 - ComfyUI signals Cancel by raising from progress updates
            self._raised = self._raised or exc

    def _say(self, text: str) -> None:
        text = self.protocol.redact(text)
        log.info("%s", text)
        self._notify(self.callbacks.text, text)

    def _record(self, row: J.JobRow, detail: str | None = None, **changes) -> J.JobRow:
        """A journal update with every provider-supplied text redacted."""
        for name in ("error", "remote_status"):
            if isinstance(changes.get(name), str):
                changes[name] = self.protocol.redact(changes[name])
        return self.journal.update(row, self.protocol.redact(detail) if detail else detail, **changes)

    def _stop_requested(self) -> bool:
        if self._raised is not None:
            return True
        try:
            return bool(self.callbacks.interrupted())
        except BaseException as exc:  # noqa: BLE001
            self._raised = exc
            return True

    async def _pause(self, seconds: float) -> None:
        """Sleep in short slices so an interrupt is seen within about 0.1 s; _Deadline when the job deadline
        comes first. Any odd wait (negative, nan) is no wait."""
        end = time.monotonic() + (seconds if seconds > 0 else 0.0)
        while True:
            if self._stop_requested():
                raise _Stop()
            now = time.monotonic()
            if now >= end:
                return
            if now >= self._deadline:
                raise _Deadline()
            await asyncio.sleep(min(end - now, self._deadline - now, TICK_S))

    async def _guard(self, awaitable):
        """Await a request (or a whole download) while watching Cancel and the deadline: the request is
        abandoned within TICK_S of either (httpx's own timeouts bound single reads, not a dripping body)."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=TICK_S)
                if done:
                    return task.result()
                if self._stop_requested():
                    raise _Stop()
                if time.monotonic() >= self._deadline:
                    raise _Deadline()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _timed_out(self, row: J.JobRow, doing: str) -> E.WaitTimeout:
        name, rid = self.protocol.name, row.request_id
        self._record(row, f"job deadline passed while {doing}; job left as it is")
        return E.WaitTimeout(
            f"{name}: gave up after the job deadline of {self.config.timeout_s:.0f} s (timeout_minutes) while {doing}; "
            f"request id {rid} is {row.remote_status or row.phase} at the provider. Queue the same job again to resume "
            "it (it will not be submitted or billed again).", provider=name, request_id=rid)

    # ------------------------------------------------------------------ the flow

    async def run(self, job: Job) -> Outcome:
        job.check_sendable()  # before anything is recorded as sent
        self._started = time.monotonic()
        self._deadline = self._started + self.config.timeout_s
        clean_stale_parts(self.cache_dir)
        try:
            return await self._claimed(job)
        except E.ProviderError as exc:
            scrubbed = self.protocol.redact(str(exc))
            if scrubbed != str(exc):
                exc.args = (scrubbed,)
            raise

    async def _claimed(self, job: Job) -> Outcome:
        """Serve a finished job from the cache, else claim it (waiting while another run holds it) and run it."""
        fp, name = job.fingerprint, self.protocol.name
        waited = False
        while True:
            row = self.journal.get(fp)
            if row is not None and row.phase == J.DONE and self._cached(row):
                return self._from_cache(row, job)
            row, mine = self.journal.claim(fp, self.owner, self.config.lease_s, provider=job.provider, model=job.model,
                                           base_url=self.protocol.base_url, seed=job.seed)
            if mine:
                break
            if not waited:
                self._say(f"{name}: the same job is already running elsewhere (request id "
                          f"{row.request_id or 'not yet known'}, {row.remote_status or row.phase}); waiting for its "
                          "result instead of paying twice")
            waited = True
            try:
                await self._pause(self.config.poll_interval_s)
            except _Stop:
                raise self._interruption(f"{name}: interrupted while waiting for the same job running elsewhere; it "
                                         "keeps running there, and queuing again serves its result") from None
            except _Deadline:
                raise E.WaitTimeout(f"{name}: gave up after the job deadline of {self.config.timeout_s:.0f} s while "
                                    f"waiting for the same job running elsewhere (request id {row.request_id}); "
                                    "queue the same job again to pick up its result (not billed again)",
                                    provider=name, request_id=row.request_id) from None
        renewing = asyncio.ensure_future(self._keep_claim(row))
        try:
            return await self._owned(job, row, waited)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            self.journal.release(row)

    async def _keep_claim(self, row: J.JobRow) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            self.journal.renew(row, self.config.lease_s)

    async def _owned(self, job: Job, row: J.JobRow, waited: bool) -> Outcome:
        name = self.protocol.name
        if row.phase == J.DONE:
            if self._cached(row):  # the other run finished between our look and our claim
                return self._from_cache(row, job)
            phase = J.RESULT if row.state.get("video_url") else J.PENDING
            row = self._record(row, "cached video missing or changed; fetching the result again", phase=phase)
        if waited and row.phase in J.RESUBMITTABLE - {J.NEW}:
            raise E.ProviderError(f"{name}: the same job, run at the same time elsewhere, ended without a video "
                                  f"[request id {row.request_id}]: {row.error or row.phase}. Queue it again to submit "
                                  "it anew.", provider=name, request_id=row.request_id)
        if row.phase == J.SYNC and self._cache_path(row).is_file():
            row = self._adopt_left_file(row)
            if row.phase == J.DONE:
                return self._from_cache(row, job)
        if row.phase in J.MAYBE_BILLED:
            if not self.config.resubmit:
                raise self._maybe_billed(row)
            self._say(f"{name}: resubmit is on: submitting again although an earlier attempt may have been billed")
        if row.phase == J.FLAGGED:
            raise E.ContentFlagged(f"{row.error} (recorded earlier; not submitted again: change the prompt or the seed)",
                                   provider=name, request_id=row.request_id)
        resumed = row.phase in (J.PENDING, J.RESULT)
        limit = answer_limit(self.config.max_download_bytes)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.request_timeout_s, connect=10.0),
                                     event_hooks={"response": [limit]}) as client:
            if not resumed:
                row = await self._submit(client, job, row)
            else:
                self._say(f"{name}: resuming request id {row.request_id} ({row.remote_status or row.phase}); "
                          "not submitting again")
            if row.phase == J.PENDING:
                row = await self._wait(client, row)
            if row.phase == J.RESULT:
                row = await self._fetch(row)
        self._notify(self.callbacks.fraction, 1.0)
        self._say(f"{name}: done in {self._elapsed():.0f} s (request id {row.request_id})")
        return self._outcome(row, job, from_cache=False, resumed=resumed)

    def _cached(self, row: J.JobRow) -> bool:
        path = row.video_path
        return bool(path and Path(path).is_file() and file_sha256(path) == row.video_sha256)

    def _from_cache(self, row: J.JobRow, job: Job) -> Outcome:
        self._say(f"{self.protocol.name}: served from the local cache (request id {row.request_id}); "
                  "nothing was billed")
        self._notify(self.callbacks.fraction, 1.0)
        return self._outcome(row, job, from_cache=True, resumed=True)

    def _maybe_billed(self, row: J.JobRow) -> E.SubmitUncertain:
        name = self.protocol.name
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at))
        if row.phase == J.SYNC:
            rid = f" [request id {row.request_id}]" if row.request_id else ""
            return E.SubmitUncertain(f"{name}: {SYNC_LOST} (call of {when}){rid}", provider=name,
                                     request_id=row.request_id or None)
        if row.phase == J.SUBMITTING:
            row = self._record(row, "found unfinished submit", phase=J.UNCERTAIN)
        return E.SubmitUncertain(
            f"{name}: an earlier submit of this exact job ({when}) may have reached the provider, but no request id "
            "was recorded, so it is not submitted again (that could bill twice). Check your dashboard at the "
            f"provider; to submit anyway, {RESUBMIT_HINT}.", provider=name)

    async def _submit(self, client: httpx.AsyncClient, job: Job, row: J.JobRow) -> J.JobRow:
        name = self.protocol.name
        if self._stop_requested():
            raise self._interruption(f"{name}: interrupted before the submit; nothing was sent")
        row = self.journal.restart(row, job.seed)
        for note in job.notes:
            self._say(f"{name}: {note}")
        self._say(f"{name}: submitting {job.model}")
        try:
            submitted = await self.protocol.submit(client, job)
        except E.SubmitUncertain as exc:
            self._record(row, str(exc), phase=J.UNCERTAIN, error=str(exc))
            raise
        except _Stop:
            self._record(row, "interrupted while waiting to submit", phase=J.REJECTED)
            raise self._interruption(f"{name}: interrupted before the submit went out; nothing was sent") from None
        except _Deadline:
            message = (f"{name}: the job deadline of {self.config.timeout_s:.0f} s passed before the provider accepted "
                       "the job (rate limited or unreachable); nothing was billed. Queue it again to submit it.")
            self._record(row, message, phase=J.REJECTED, error=message)
            raise E.WaitTimeout(message, provider=name) from None
        except E.ProviderError as exc:
            self._record(row, str(exc), phase=J.REJECTED, error=str(exc))
            raise
        except BaseException as exc:
            # Anything else (a bug, a cancelled thread) after the POST may have gone out: keep it uncertain.
            self._record(row, f"submit aborted: {type(exc).__name__}", phase=J.UNCERTAIN)
            raise
        if submitted.sync:
            return await self._call_sync(client, job, row)
        state = {**submitted.state, "submitted_at": time.time()}
        row = self._record(row, "submitted", phase=J.PENDING, request_id=submitted.request_id, state=state)
        self._say(f"{name}: submitted, request id {submitted.request_id}")
        return row

    async def _call_sync(self, client: httpx.AsyncClient, job: Job, row: J.JobRow) -> J.JobRow:
        """The synchronous call: journaled first, so a crash during it is never mistaken for a resumable job."""
        name = self.protocol.name
        row = self._record(row, "synchronous call started (no request id to resume with)", phase=J.SYNC,
                           state={"api": "v1", "submitted_at": time.time()})
        self._say(f"{name}: no queue API on this host; making the synchronous call (its answer is the video)")
        try:
            submitted = await self._guard(self.protocol.call_sync(client, job))
            row.request_id = submitted.request_id or None
            return self._adopt(row, submitted.video_file, "synchronous answer cached")
        except E.ProviderError as exc:
            if exc.status is not None and not isinstance(exc, E.SubmitUncertain):
                self._record(row, str(exc), phase=J.REJECTED, error=str(exc))  # an error answer is not billed
                raise
            message = f"{exc}; {SYNC_LOST}"
            self._record(row, message, error=message)
            raise type(exc)(message, provider=name, request_id=exc.request_id) from None
        except _Stop:
            self._record(row, "interrupted during the synchronous call", error=SYNC_LOST)
            raise self._interruption(f"{name}: interrupted during the synchronous call; {SYNC_LOST}") from None
        except _Deadline:
            message = (f"{name}: the job deadline of {self.config.timeout_s:.0f} s passed during the synchronous call; "
                       f"{SYNC_LOST}")
            self._record(row, message, error=message)
            raise E.WaitTimeout(message, provider=name) from None

    def _adopt(self, row: J.JobRow, tmp: Path, detail: str) -> J.JobRow:
        """Verify a spooled video and cache it (DONE); InvalidVideo (file removed) when it is not whole."""
        path = self._cache_path(row)
        sha = adopt(tmp, path, provider=self.protocol.name, request_id=row.request_id)
        return self._record(row, detail, phase=J.DONE, request_id=row.request_id, video_path=str(path),
                            video_sha256=sha)

    def _adopt_left_file(self, row: J.JobRow) -> J.JobRow:
        """A synchronous answer already moved into the cache by a run that died before journaling it."""
        path = self._cache_path(row)
        try:
            verify_video(path, provider=self.protocol.name)
        except E.InvalidVideo:
            return row
        return self._record(row, "cached synchronous answer found", phase=J.DONE, video_path=str(path),
                            video_sha256=file_sha256(path))

    async def _wait(self, client: httpx.AsyncClient, row: J.JobRow) -> J.JobRow:
        name, rid = self.protocol.name, row.request_id
        interval = self.config.poll_interval_s
        running_since: float | None = None
        last: Status | None = None
        try:
            while True:
                if self._stop_requested():
                    raise _Stop()
                try:
                    status = await self._guard(self.protocol.status(client, row))
                except E.ResultExpired as exc:
                    self._record(row, str(exc), phase=J.EXPIRED, error=str(exc))
                    raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                          request_id=rid) from None
                if last is None or status.remote_status != last.remote_status:
                    row = self._record(row, status.error, remote_status=status.remote_status)
                last = status
                if status.phase == "running" and running_since is None:
                    running_since = time.monotonic()
                self._report(status, running_since)
                if status.phase == "done":
                    return await self._take_result(client, row, status)
                if status.phase in ("failed", "cancelled"):
                    message = f"{name}: the job {status.remote_status.lower()} [request id {rid}]" + (
                        f": {status.error}" if status.error else "")
                    self._record(row, message, phase=J.FAILED if status.phase == "failed" else J.CANCELLED,
                                 error=message)
                    raise E.JobFailed(message + ". Queue again to submit a new job.", provider=name, request_id=rid)
                if time.monotonic() >= self._deadline:
                    raise _Deadline()
                await self._pause(min(interval, max(self._deadline - time.monotonic(), 0.0)))
                interval = min(interval * 1.5, self.config.max_poll_interval_s)
        except _Stop:
            raise await self._interrupt(client, row, last) from None
        except _Deadline:
            raise self._timed_out(row, "waiting for the result") from None

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
        for attempt in range(1, REFETCH_ATTEMPTS + 1):
            try:
                result: Result = await self._guard(self.protocol.result(client, row, status))
            except E.ResultExpired as exc:
                self._record(row, str(exc), phase=J.EXPIRED, error=str(exc))
                raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                      request_id=rid) from None
            except E.JobFailed as exc:
                self._record(row, str(exc), phase=J.FAILED, error=str(exc))
                raise
            if result.flagged:
                message = f"{name}: the provider's safety checker flagged the output as NSFW [request id {rid}]"
                self._record(row, message, phase=J.FLAGGED, error=message)
                raise E.ContentFlagged(message, provider=name, request_id=rid)
            if result.seed is not None:
                row.state["seed"] = result.seed
            if result.video_file is None:
                state = {**row.state, "video_url": result.video_url, "video_size": result.video_size}
                return self._record(row, "result ready", phase=J.RESULT, state=state)
            try:
                return self._adopt(row, result.video_file, "video cached")
            except E.InvalidVideo as exc:
                if attempt == REFETCH_ATTEMPTS:
                    self._record(row, str(exc), error=str(exc))
                    raise
                self._say(f"{name}: {exc}; fetching it again")
        raise AssertionError("unreachable")

    def _cache_path(self, row: J.JobRow) -> Path:
        return self.cache_dir / f"{row.provider}-{row.fingerprint[:40]}.mp4"

    def _sink(self) -> Sink:
        """Where video bodies go (the cache folder), under the size cap, reporting progress."""
        name, shown = self.protocol.name, [-1]

        def progress(done: int, total: int | None) -> None:
            if total:
                self._notify(self.callbacks.fraction, 0.9 + 0.1 * min(done / total, 1.0))
            step = int(10 * done / total) if total else done >> 23  # every 10 %, or every 8 MB when size unknown
            if step != shown[0]:
                shown[0] = step
                of = f" of {_size(total)}" if total else ""
                self._say(f"{name}: downloading the video · {_size(done)}{of}")

        return Sink(self.cache_dir, self.config.max_download_bytes, progress)

    async def _fetch(self, row: J.JobRow) -> J.JobRow:
        name, rid = self.protocol.name, row.request_id
        self._say(f"{name}: downloading the video")
        path = self._cache_path(row)
        started = time.monotonic()
        timeout = httpx.Timeout(self.config.request_timeout_s, connect=10.0)
        try:
            # A separate client without any auth (media URLs are often on another host) that refuses private addresses.
            async with media_client(timeout=timeout, allow_loopback=is_loopback_url(self.protocol.base_url),
                                    provider=name, request_id=rid) as media:
                sha = await self._guard(download(media, row.state["video_url"], path, self._sink(),
                                                 policy=self.config.policy, pause=self._pause, provider=name,
                                                 request_id=rid, expected_size=row.state.get("video_size")))
        except E.ResultExpired as exc:
            self._record(row, str(exc), phase=J.EXPIRED, error=str(exc))
            raise E.ResultExpired(f"{exc}. Queue again to submit a new (billed) job.", provider=name,
                                  request_id=rid) from None
        except E.ProviderError as exc:
            self._record(row, str(exc), error=str(exc))  # stays RESULT: queuing again fetches it (not billed again)
            raise
        except _Stop:
            raise self._interruption(f"{name}: interrupted during the download of request id {rid}; queue the same job "
                                     "again to fetch it (not billed again)") from None
        except _Deadline:
            raise self._timed_out(row, "downloading the video") from None
        state = {**row.state, "download_s": round(time.monotonic() - started, 3)}
        return self._record(row, "video cached", phase=J.DONE, video_path=str(path), video_sha256=sha, state=state)

    async def _interrupt(self, client: httpx.AsyncClient, row: J.JobRow, last: Status | None) -> BaseException:
        """Cancel a queued job where the provider can; otherwise detach and leave the row resumable."""
        name, rid = self.protocol.name, row.request_id
        queued = last is None or last.phase == "queued"
        if self.protocol.can_cancel and queued and await self.protocol.cancel(client, row):
            message = f"{name}: interrupted; the queued request {rid} was cancelled (not billed)"
            self._record(row, message, phase=J.CANCELLED)
        else:
            message = (f"{name}: interrupted; request id {rid} keeps running at the provider. Queue the same job "
                       "again to pick up its result without paying twice")
            self._record(row, "detached on interrupt")
        return self._interruption(message)

    def _interruption(self, message: str) -> BaseException:
        """The exception to stop with: the host's own (e.g. ComfyUI's) when a callback raised one."""
        message = self.protocol.redact(message)
        self._notify(self.callbacks.text, message)
        log.info("%s", message)
        if self._raised is not None:
            return self._raised
        return E.Interrupted(message, provider=self.protocol.name)

    def _outcome(self, row: J.JobRow, job: Job, *, from_cache: bool, resumed: bool) -> Outcome:
        timings = {"total_s": round(self._elapsed(), 3)}
        if "download_s" in row.state:
            timings["download_s"] = row.state["download_s"]
        if row.state.get("submitted_at"):
            timings["submitted_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.state["submitted_at"]))
        return Outcome(Path(row.video_path), row.provider, row.model, row.request_id or "",
                       row.state.get("seed", row.seed), row.fingerprint, from_cache, resumed, timings, job.notes)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MB" if count >= 2**20 else f"{count / 1024:.0f} KB"


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
