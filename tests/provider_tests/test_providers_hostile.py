"""The API clients under odd but possible provider, gateway and concurrent behaviour, against the fakes on 127.0.0.1.

Billed jobs are counted at the fake; every fault below was seen on earlier code (a busy loop, a double
bill, a broken video cached, an unbounded download, a key in a message, a fetch of an internal address).
"""

import asyncio
import base64
import io
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import types

import httpx
import numpy as np
import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.nodes import api
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import fal
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import segmind, wavespeed
from hunyuan_video_suite.pipelines.providers.base import Job
from hunyuan_video_suite.pipelines.providers.http import MAX_ANSWER_BYTES, RetryPolicy, rate_limit_wait
from hunyuan_video_suite.pipelines.providers.media import REFETCH_ATTEMPTS, Sink, spool, verify_video
from hunyuan_video_suite.pipelines.providers.netguard import media_client
from hunyuan_video_suite.pipelines.providers.runner import SYNC_LOST, Outcome
from hunyuan_video_suite.pipelines.providers.service import JOURNAL_FILE, config_from_env
from PIL import Image
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, Recorder, all_log_text, journal_row, run, wait_until
from provider_fakes.server import Reply, make_mp4

NOW = 1_700_000_000.0
BAD_RESETS = ["nan", "NaN", "inf", "-inf", "-5", "1e308", "1e400", "soon", "Wed, 99 Foo 2024 25:61:00 GMT",
              "9999-12-31T23:59:59Z", "0000-00-00", "\x7f"]


def fal_t2v(**kw):
    return fal.t2v_job(**{"prompt": "a cat surfing", "seed": 7, **kw})


def ws_t2v(**kw):
    return wavespeed.t2v_job(**{"prompt": "a fox in snow", "seed": 11, **kw})


def sg_t2v(**kw):
    return segmind.t2v_job(**{"prompt": "waves at dusk", "seed": 5, **kw})


def parts(data_dir):
    return sorted((data_dir / "api_cache").glob("*.part")) if (data_dir / "api_cache").exists() else []


# ----------------------------------------------------------------------------- 1. rate-limit headers of any shape

@pytest.mark.parametrize("value", BAD_RESETS)
@pytest.mark.parametrize("header", ["retry-after", "x-rate-limit-reset-at-utc", "x-ratelimit-reset"])
def test_unusable_reset_headers_mean_normal_backoff(header, value):
    assert rate_limit_wait(httpx.Response(429, headers={header: value}), now=NOW) is None


def test_a_bad_header_does_not_hide_a_good_one():
    headers = {"retry-after": "nan", "x-ratelimit-reset": "3"}
    assert rate_limit_wait(httpx.Response(429, headers=headers), now=NOW) == 3.0


def test_status_429_with_garbage_headers_backs_off_normally(provider_env, data_dir, fast, monkeypatch):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    fake.status_glitches = [Reply(429, json={"detail": "slow down"}, headers={"retry-after": v, "x-ratelimit-reset": v})
                            for v in ("nan", "inf", "-3", "1e308", "garbage")]
    fast.policy.attempts = 10
    waits = []
    original = RetryPolicy.wait
    monkeypatch.setattr(RetryPolicy, "wait", lambda self, r, a: waits.append(original(self, r, a)) or waits[-1])
    outcome = run(fal_t2v(), data_dir, fast)
    assert outcome.video_path.is_file() and fake.billed == 1
    assert waits == [fast.policy.backoff(a) for a in range(1, 6)]  # the normal backoff, never nan or inf


def test_submit_429_is_not_accepted_and_stays_resubmittable(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    fake.submit_replies = [Reply(429, json={"code": 429, "message": "rate limited", "data": None},
                                 headers={"retry-after": "nan"})] * fast.policy.attempts
    with pytest.raises(E.RateLimited):
        run(ws_t2v(), data_dir, fast)
    row = journal_row(data_dir, ws_t2v())
    assert row.phase == J.REJECTED and fake.billed == 0
    assert run(ws_t2v(), data_dir, fast).video_path.is_file() and fake.billed == 1


# ----------------------------------------------------------------------------- 2. the job deadline holds everywhere

def test_rate_limit_waits_inside_one_poll_respect_the_deadline(provider_env, data_dir, fast, clock, monkeypatch):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    fast.policy = RetryPolicy(attempts=50, backoff_s=0.01, max_backoff_s=0.02, max_rate_wait_s=30.0)
    fake.status_glitches = [Reply(429, json={"detail": "slow"}, headers={"retry-after": "20"})] * 50
    original = RetryPolicy.wait

    def wait(self, response, attempt):  # the job deadline passes during the provider's 20 s wait
        clock.ahead = fast.timeout_s
        return original(self, response, attempt)

    monkeypatch.setattr(RetryPolicy, "wait", wait)
    with pytest.raises(E.WaitTimeout) as info:
        run(fal_t2v(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and "Queue the same job again to resume" in str(info.value)
    assert len(fake.requests("GET", "/status")) == 1  # gave up inside the one 20 s wait
    fake.status_glitches = []
    assert run(fal_t2v(), data_dir, fast).request_id == rid and fake.billed == 1


def test_submit_rate_limited_past_the_deadline_bills_nothing(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fast.policy = RetryPolicy(attempts=50, backoff_s=0.01, max_rate_wait_s=30.0)
    fast.timeout_s = 0.3
    fake.submit_replies = [Reply(429, json={"detail": "busy"}, headers={"retry-after": "20"})] * 50
    with pytest.raises(E.WaitTimeout, match="nothing was billed"):
        run(fal_t2v(), data_dir, fast)
    assert journal_row(data_dir, fal_t2v()).phase == J.REJECTED and fake.billed == 0


def test_dripping_download_hits_the_deadline_and_resumes(provider_env, media, data_dir, fast, clock):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.style = {"drip_s": 0.2, "chunk": 64}  # seconds for the whole file; no single read ever times out

    def deadline_passes(text):  # once the download is under way, not after a time the steps before may need
        if "downloading the video ·" in text:
            clock.ahead = fast.timeout_s

    with pytest.raises(E.WaitTimeout) as info:
        run(ws_t2v(), data_dir, fast, Recorder(stop_when=deadline_passes))
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and "downloading" in str(info.value) and "again to resume" in str(info.value)
    assert journal_row(data_dir, ws_t2v()).phase == J.RESULT and not parts(data_dir)
    media.style = {}
    outcome = run(ws_t2v(), data_dir, fast)
    assert outcome.resumed and outcome.video_path.read_bytes() == media.video and fake.billed == 1


# ----------------------------------------------------------------------------- 3. downloads bounded and cancellable

@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_download_size_cap(provider_env, media, data_dir, fast, length):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.style = {"length": length}
    fast.max_download_bytes = len(media.video) // 2
    with pytest.raises(E.DownloadTooLarge, match="HYVS_API_MAX_DOWNLOAD_MB") as info:
        run(ws_t2v(), data_dir, fast)
    assert next(iter(fake.jobs)) in str(info.value)
    assert journal_row(data_dir, ws_t2v()).phase == J.RESULT and not parts(data_dir)
    fast.max_download_bytes = 1 << 20
    assert run(ws_t2v(), data_dir, fast).video_path.read_bytes() == media.video and fake.billed == 1


def test_cancel_during_a_stalled_download(provider_env, media, data_dir, fast):
    provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.style = {"drip_s": 1.0, "chunk": 16}  # minutes for the whole file
    recorder = Recorder(stop_when=lambda text: "downloading the video ·" in text)
    with pytest.raises(E.Interrupted, match="during the download"):
        run(ws_t2v(), data_dir, fast, recorder)
    assert journal_row(data_dir, ws_t2v()).phase == J.RESULT and not parts(data_dir)
    assert wait_until(lambda: media.sent)  # the server notices the closed connection at its next write
    assert media.sent[0][0] < media.sent[0][1]


def test_each_body_gets_its_own_temporary_file(tmp_path, media):
    async def two_at_once():
        sink = Sink(tmp_path, 1 << 20)
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", media.add("a.mp4")) as one, client.stream("GET", media.add("a.mp4")) as two:
                return await asyncio.gather(spool(one, sink, "same.mp4", provider="p", request_id="r"),
                                            spool(two, sink, "same.mp4", provider="p", request_id="r"))

    first, second = asyncio.run(two_at_once())
    assert first != second and first.read_bytes() == second.read_bytes() == media.video
    assert first.name.startswith("same.mp4.") and first.suffix == ".part"


def test_download_progress_is_shown(provider_env, media, data_dir, fast):
    provider_env("fal", queue_polls=0, run_polls=0)
    first_shown = threading.Event()
    media.style = {"chunk": 256, "hold": first_shown}  # a first piece alone, however late the client reads it

    def first_piece(text):
        if "downloading the video ·" in text:
            first_shown.set()

    recorder = Recorder(stop_when=first_piece)
    run(fal_t2v(), data_dir, fast, recorder)
    shown = [t for t in recorder.texts if "downloading the video ·" in t and " KB" in t]
    assert shown and any(0.9 < f < 1.0 for f in recorder.fractions)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_oversized_api_answers_are_not_read_into_memory(provider_env, data_dir, fast, length):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    huge = b'{"status": "IN_QUEUE", "pad": "' + b"x" * (MAX_ANSWER_BYTES + 1024) + b'"}'
    fake.status_glitches = [Reply(200, body=huge, headers={"content-type": "application/json"}, length=length)] * 9
    with pytest.raises(E.ProviderUnavailable, match="AnswerTooLarge"):
        run(fal_t2v(), data_dir, fast)
    assert journal_row(data_dir, fal_t2v()).phase == J.PENDING  # resumable, nothing lost
    fake.submit_replies = [Reply(200, body=huge, headers={"content-type": "application/json"}, length=length)]
    with pytest.raises(E.SubmitUncertain):  # the job may have been accepted: never sent again blindly
        run(fal_t2v(seed=8), data_dir, fast)


def test_stale_partial_files_are_removed_on_the_next_start(provider_env, data_dir, fast):
    provider_env("fal", queue_polls=0, run_polls=0)
    cache = data_dir / "api_cache"
    cache.mkdir(parents=True)
    stale, live = cache / "fal-x.mp4.abc.part", cache / "fal-y.mp4.def.part"
    stale.write_bytes(b"half a video")
    live.write_bytes(b"being written by another run")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    run(fal_t2v(), data_dir, fast)
    assert not stale.exists() and live.exists()


# ----------------------------------------------------------------------------- 4. only whole videos are cached

@pytest.fixture
def faststart(media):
    media.video = make_mp4(frames=24, faststart=True)
    return media.video


def test_truncated_faststart_mp4_is_detected(tmp_path, faststart):
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    whole.write_bytes(faststart)
    cut.write_bytes(faststart[:int(len(faststart) * 0.6)])
    assert verify_video(whole).frames == 24
    with pytest.raises(E.InvalidVideo, match="truncated"):
        verify_video(cut, provider="x", request_id="r-9")


def test_truncated_download_is_fetched_again(provider_env, media, data_dir, fast, faststart):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    fake.foreign_urls = False
    media.truncate = [0.6]
    outcome = run(fal_t2v(), data_dir, fast)
    assert outcome.video_path.read_bytes() == faststart and verify_video(outcome.video_path).frames == 24
    assert len(media.requests("GET")) == 2 and fake.billed == 1


def test_always_truncated_download_is_a_clear_error(provider_env, media, data_dir, fast, faststart):
    provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.truncate = [0.6] * 10
    with pytest.raises(E.InvalidVideo) as info:
        run(ws_t2v(), data_dir, fast)
    row = journal_row(data_dir, ws_t2v())
    assert row.request_id in str(info.value) and row.phase == J.RESULT
    assert len(media.requests("GET")) == REFETCH_ATTEMPTS
    assert not list((data_dir / "api_cache").glob("*.mp4")) and not parts(data_dir)


# ----------------------------------------------------------------------------- 5. Segmind's synchronous mode

SYNC_SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    root, data_dir, die_on = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = importlib.util.spec_from_file_location("crash_pipelines", os.path.join(root, "pipelines", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(root, "pipelines")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_pipelines"] = module
    spec.loader.exec_module(module)
    from crash_pipelines.providers import segmind
    from crash_pipelines.providers.runner import Callbacks, RunnerConfig
    from crash_pipelines.providers.service import run_job

    def die(text):
        if die_on in text:
            os._exit(3)  # kill -9 alike: no cleanup, no exception handling

    run_job(segmind.t2v_job(prompt="waves at dusk", seed=5), data_dir, config=RunnerConfig(poll_interval_s=0.01),
            callbacks=Callbacks(text=die))
""")


@pytest.mark.parametrize("die_on, billed", [("no queue API", 0), ("downloading the video ·", 1)],
                         ids=["before-the-call", "mid-answer"])
def test_crash_during_the_synchronous_call_is_reported_not_repaid(provider_env, media, data_dir, fast, die_on, billed):
    fake = provider_env("segmind")
    fake.v2_enabled = False
    media.video = make_mp4(frames=48, width=256, height=160)  # several chunks, so the crash is mid-answer
    fake.sync_style = {"drip_s": 0.05, "chunk": 4096}
    result = subprocess.run([sys.executable, "-c", SYNC_SCRIPT, str(PACK_ROOT), str(data_dir), die_on],
                            env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert journal_row(data_dir, sg_t2v()).phase == J.SYNC
    v1_posts = len(fake.requests("POST", "/v1/"))
    fake.sync_style = {}
    with pytest.raises(E.SubmitUncertain) as info:
        run(sg_t2v(), data_dir, fast)
    assert SYNC_LOST in str(info.value)
    assert len(fake.requests("POST", "/v1/")) == v1_posts and not fake.requests("GET")  # no poll of a phantom job
    assert len(fake.jobs) == billed
    fast.resubmit = True  # the user turns on resubmit: paid once more, on purpose
    outcome = run(sg_t2v(), data_dir, fast)
    assert outcome.video_path.read_bytes() == media.video and len(fake.jobs) == billed + 1


def test_synchronous_answer_cached_just_before_a_crash_is_served(provider_env, media, data_dir, fast):
    """Killed between moving the verified answer into the cache and journaling it: the file is adopted."""
    fake = provider_env("segmind")
    job = sg_t2v()
    journal = J.Journal(data_dir / JOURNAL_FILE)
    row, _ = journal.claim(job.fingerprint, "elsewhere:1:dead", 0.0, provider="segmind", model=job.model,
                           base_url=fake.url, seed=job.seed)
    journal.update(journal.restart(row, job.seed), "synchronous call started", phase=J.SYNC, state={"api": "v1"})
    (data_dir / "api_cache").mkdir(parents=True)
    (data_dir / "api_cache" / f"segmind-{job.fingerprint[:40]}.mp4").write_bytes(media.video)
    outcome = run(job, data_dir, fast)
    assert outcome.from_cache and outcome.video_path.read_bytes() == media.video
    assert fake.seen == [] and journal_row(data_dir, job).phase == J.DONE


def test_truncated_synchronous_answer_is_lost_not_cached(provider_env, media, data_dir, fast, faststart):
    fake = provider_env("segmind")
    fake.v2_enabled = False
    fake.sync_cut = 0.6
    with pytest.raises(E.InvalidVideo) as info:
        run(sg_t2v(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert SYNC_LOST in str(info.value) and rid in str(info.value)
    row = journal_row(data_dir, sg_t2v())
    assert row.phase == J.SYNC and not list((data_dir / "api_cache").glob("*.mp4")) and not parts(data_dir)
    with pytest.raises(E.SubmitUncertain, match="result is lost"):
        run(sg_t2v(), data_dir, fast)
    assert len(fake.jobs) == 1


def test_interrupt_during_the_synchronous_call(provider_env, media, data_dir, fast):
    fake = provider_env("segmind")
    fake.v2_enabled = False
    fake.sync_style = {"drip_s": 5.0, "chunk": 64}
    recorder = Recorder(stop_when=lambda text: "downloading the video ·" in text)
    with pytest.raises(E.Interrupted, match="result is lost"):
        run(sg_t2v(), data_dir, fast, recorder)
    assert journal_row(data_dir, sg_t2v()).phase == J.SYNC and not parts(data_dir)


def test_synchronous_error_answer_is_not_billed_and_resubmittable(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    fake.v2_enabled = False
    fake.submit_replies = [Reply(406, json={"error": "Not enough credits"})]
    with pytest.raises(E.InsufficientCredits):
        run(sg_t2v(), data_dir, fast)
    assert journal_row(data_dir, sg_t2v()).phase == J.REJECTED
    assert run(sg_t2v(), data_dir, fast).video_path.is_file() and len(fake.jobs) == 1


# ----------------------------------------------------------------------------- 6. the same job twice at once

def test_same_job_queued_twice_at_once_bills_once(provider_env, media, data_dir, fast):
    fake = provider_env("fal", queue_polls=100_000, run_polls=2)
    fast.timeout_s = 120  # each run waits on the other thread: bounded, generously
    results, recorders = {}, {}

    def release(text):  # the job finishes only once one run waits on the other (else both may run in turn)
        if "already running elsewhere" in text:
            fake.queue_polls = 0

    def worker(name):
        recorders[name] = Recorder(stop_when=release)
        try:
            results[name] = run(fal_t2v(), data_dir, fast, recorders[name])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(results) == ["a", "b"] and all(isinstance(r, Outcome) for r in results.values()), results
    assert fake.billed == 1 and len(fake.requests("POST")) == 1
    assert results["a"].video_path == results["b"].video_path and results["a"].request_id == results["b"].request_id
    waited = [n for n, r in recorders.items() if any("already running elsewhere" in t for t in r.texts)]
    assert len(waited) == 1 and results[waited[0]].from_cache


TWIN_SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    root, data_dir = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("twin_pipelines", os.path.join(root, "pipelines", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(root, "pipelines")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["twin_pipelines"] = module
    spec.loader.exec_module(module)
    from twin_pipelines.providers import wavespeed
    from twin_pipelines.providers.runner import RunnerConfig
    from twin_pipelines.providers.service import run_job

    outcome = run_job(wavespeed.t2v_job(prompt="a fox in snow", seed=11), data_dir,
                      config=RunnerConfig(poll_interval_s=0.02, max_poll_interval_s=0.05, timeout_s=60))
    print("REQUEST", outcome.request_id, outcome.from_cache)
""")


def _start_twin(data_dir) -> subprocess.Popen:
    """Another process running the same job, returned once its request id is in the journal (bounded: 120 s).
    The fake having the job is not enough: killed before its journal row has the id, the twin leaves a submit
    that may have been billed, which the waiter rightly refuses to resume or repeat (SubmitUncertain)."""
    other = subprocess.Popen([sys.executable, "-c", TWIN_SCRIPT, str(PACK_ROOT), str(data_dir)], env=os.environ.copy(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def journaled():
        row = journal_row(data_dir, ws_t2v())
        return row is not None and row.request_id is not None

    if not wait_until(lambda: other.poll() is not None or journaled()):
        other.kill()
    assert other.poll() is None and journaled(), f"the twin never journaled its request id: {other.communicate()[1]}"
    return other


def test_two_processes_queueing_the_same_job_bill_once(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=100_000, run_polls=2)
    fast.timeout_s = 120  # this run waits on the other process: bounded, generously
    other = _start_twin(data_dir)

    def release(text):  # once this process is waiting on the other one, let the remote job finish
        if "already running elsewhere" in text:
            fake.queue_polls = 0

    mine = run(ws_t2v(), data_dir, fast, Recorder(stop_when=release))
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert f"REQUEST {mine.request_id} False" in out and mine.from_cache
    assert fake.billed == 1 and len(fake.requests("POST")) == 1


def test_waiter_takes_over_when_the_first_process_is_killed(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=100_000, run_polls=1)
    other = _start_twin(data_dir)

    def kill_the_owner(text):  # kill -9 the first process while this one waits on it
        if "already running elsewhere" in text:
            other.kill()
            other.wait()
            fake.queue_polls = 0

    outcome = run(ws_t2v(), data_dir, fast, Recorder(stop_when=kill_the_owner))
    assert outcome.resumed and outcome.request_id == next(iter(fake.jobs))
    assert fake.billed == 1 and len(fake.requests("POST")) == 1


def test_a_second_claim_waits_and_cannot_write_the_first_ones_row(tmp_path):
    journal = J.Journal(tmp_path / "j.sqlite3")
    args = dict(provider="fal", model="m", base_url="http://x", seed=1)
    first, mine = journal.claim("fp", J.new_owner(), 60, **args)
    assert mine
    first = journal.restart(first, 1)
    journal.update(first, "submitted", phase=J.PENDING, request_id="r-1")
    second, mine = journal.claim("fp", J.new_owner(), 60, **args)
    assert not mine and second.request_id == "r-1"
    second.owner = "someone-else"
    with pytest.raises(E.ClaimLost):
        journal.update(second, "overwrite", phase=J.FAILED, request_id=None)
    row = journal.get("fp")
    assert (row.phase, row.request_id, row.owner) == (J.PENDING, "r-1", first.owner)
    journal.release(first)
    third, mine = journal.claim("fp", J.new_owner(), 60, **args)
    assert mine and third.request_id == "r-1"


def test_a_dead_owners_claim_is_void_at_once(tmp_path):
    journal = J.Journal(tmp_path / "j.sqlite3")
    args = dict(provider="fal", model="m", base_url="http://x", seed=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ghost = f"{J.new_owner().split(':')[0]}:{dead.stdout.strip()}:feedface"
    assert journal.claim("fp", ghost, 600, **args)[1]
    assert journal.claim("fp", J.new_owner(), 60, **args)[1]


# ----------------------------------------------------------------------------- 7. input that cannot be sent

def test_lone_surrogate_is_refused_before_anything_is_recorded(provider_env, data_dir, fast):
    fake = provider_env("fal")
    with pytest.raises(E.InvalidParameter, match="'prompt'.*surrogate"):
        fal_t2v(prompt="a cat \ud800 surfing")
    job = Job("fal", fal.T2V_MODEL, {**fal_t2v().payload, "extra": "bad \udcff"})
    with pytest.raises(E.InvalidParameter, match="'extra'"):
        run(job, data_dir, fast)
    assert fake.seen == [] and journal_row(data_dir, job) is None


def test_big_images_are_downscaled_and_the_sent_size_reported(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    job = fal.i2v_job(image=torch.rand(1, 300, 2600, 3), prompt="she smiles")
    recorder = Recorder()
    outcome = run(job, data_dir, fast, recorder)
    uri = next(iter(fake.jobs.values()))["body"]["image_url"]
    sent = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert sent.size == (2048, 236)
    assert any("2048x236" in n and "downscaled from 2600x300" in n for n in outcome.notes)
    assert any("2048x236" in t for t in recorder.texts)
    small = fal.i2v_job(image=torch.rand(1, 30, 40, 3), prompt="she smiles")
    assert "downscaled" not in small.notes[0] and "40x30" in small.notes[0]


# ----------------------------------------------------------------------------- 8. keys stay secret

def test_keys_echoed_by_the_provider_are_redacted_everywhere(provider_env, data_dir, fast, caplog):
    fake = provider_env("fal", queue_polls=0, run_polls=2)
    key_id, secret = KEYS["fal"].split(":")
    fake.log_text = f"auth with Key {KEYS['fal'].upper()} ok ({secret.lower()})"
    fake.fail_with = f"bad credentials {secret} / {key_id.upper()}"
    recorder = Recorder()
    with pytest.raises(E.JobFailed) as info:
        run(fal_t2v(), data_dir, fast, recorder)
    journal = data_dir / JOURNAL_FILE
    dump = "\n".join(sqlite3.connect(journal).iterdump())
    texts = "\n".join([str(info.value), *recorder.texts, dump, all_log_text(caplog)]).lower()
    assert "***" in texts and any("auth with key ***" in t.lower() for t in recorder.texts)
    for secret_text in (KEYS["fal"], key_id, secret):
        assert secret_text.lower() not in texts


def test_info_output_is_redacted(provider_env):
    provider_env("fal")
    from hunyuan_video_suite.pipelines.providers.keys import api_key
    key = api_key("fal", None)
    outcome = Outcome(PACK_ROOT / "x.mp4", "fal", "m", f"rid-{key.split(':')[1].upper()}", 1, "fp", False, False, {},
                      (f"note {key}",))
    text = api._info(outcome, (1, 2, 3, 3), 24.0)
    assert key.split(":")[1].lower() not in text.lower() and "rid-***" in text


# ----------------------------------------------------------------------------- 9. media URLs fetched safely

@pytest.mark.parametrize("url, words", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://10.1.2.3/video.mp4", "private"),
    ("http://[::ffff:192.168.0.7]/video.mp4", "private"),
    ("http://[fe80::1]/video.mp4", "link-local"),
    ("file:///etc/passwd", "only http"),
])
def test_internal_result_urls_are_refused(provider_env, data_dir, fast, url, words):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    fake.output_url = url
    with pytest.raises(E.UnsafeUrl, match=words) as info:
        run(ws_t2v(), data_dir, fast)
    assert next(iter(fake.jobs)) in str(info.value) and fake.billed == 1
    assert journal_row(data_dir, ws_t2v()).phase == J.RESULT


def test_redirects_are_checked_hop_by_hop(provider_env, media, data_dir, fast):
    provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.redirect = "http://169.254.169.254/latest/meta-data/iam"
    with pytest.raises(E.UnsafeUrl, match="metadata"):
        run(ws_t2v(), data_dir, fast)
    assert len(media.requests("GET")) == 1


def test_loopback_media_only_when_the_provider_base_is_loopback(media):
    async def fetch(allow):
        async with media_client(timeout=httpx.Timeout(5.0), allow_loopback=allow, provider="p", request_id="r") as c:
            return (await c.get(media.add("v.mp4"))).status_code

    with pytest.raises(E.UnsafeUrl, match="loopback"):
        asyncio.run(fetch(False))
    assert media.seen == []  # refused before any connection
    assert asyncio.run(fetch(True)) == 200


def test_request_ids_are_escaped_in_url_paths(provider_env, media, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=1, run_polls=1)
    fake.id_prefix = "../x/a?b#c"
    fake.with_get_url = False
    outcome = run(ws_t2v(), data_dir, fast)
    assert outcome.request_id.startswith("../x/a?b#c") and outcome.video_path.read_bytes() == media.video
    paths = {s.path for s in fake.requests("GET")}
    assert all(p.startswith("/api/v3/predictions/..%2Fx%2Fa%3Fb%23c") and p.endswith("/result") for p in paths)
    assert fake.billed == 1


# ----------------------------------------------------------------------------- 10. two processes, one journal

JOURNAL_SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    root, folder, me = sys.argv[1], sys.argv[2], sys.argv[3]
    here = os.path.join(root, "pipelines", "providers")  # the package without its __init__ (no torch import)
    spec = importlib.util.spec_from_file_location("jp", os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    sys.modules["jp"] = importlib.util.module_from_spec(spec)
    from jp import journal as J
    for i in range(40):
        journal = J.Journal(os.path.join(folder, f"j{i}.sqlite3"))  # both processes create the same new files
        row, mine = journal.claim(f"{me}-{i}", J.new_owner(), 60, provider="fal", model="m", base_url="b", seed=i)
        row = journal.restart(row, i)
        journal.update(row, "submitted", phase=J.PENDING, request_id=f"{me}-{i}")
        journal.release(row)
""")


def test_two_processes_share_a_journal_without_lock_errors(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", JOURNAL_SCRIPT, str(PACK_ROOT), str(tmp_path), me],
                              stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for i in range(40):
        journal = J.Journal(tmp_path / f"j{i}.sqlite3")
        assert {journal.get(f"{me}-{i}").request_id for me in "ab"} == {f"a-{i}", f"b-{i}"}
        assert sqlite3.connect(tmp_path / f"j{i}.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_opening_waits_for_another_processes_write_lock(tmp_path, monkeypatch):
    """Switching a fresh file to WAL while another connection writes failed at once ("database is locked").
    The writer commits while the opening waits for its lock, so the opening always meets the lock."""
    path = tmp_path / "j.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE other (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other VALUES (1)")

    def sleep(seconds):  # the journal's wait for the lock: now the writer finishes
        if other.in_transaction:
            other.execute("COMMIT")
        time.sleep(seconds)

    monkeypatch.setattr(J, "time", types.SimpleNamespace(time=time.time, monotonic=time.monotonic, sleep=sleep))
    journal = J.Journal(path)
    assert not other.in_transaction and journal.get("fp") is None
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ----------------------------------------------------------------------------- settings

def test_settings_from_the_config_file(tmp_path, monkeypatch):
    for name in ("HYVS_API_MAX_DOWNLOAD_MB", "HYVS_API_RESUBMIT", "HYVS_API_POLL_INTERVAL", "HYVS_API_BACKOFF"):
        monkeypatch.delenv(name, raising=False)
    assert config_from_env(config_dir=tmp_path).max_download_bytes == 1 << 30
    (tmp_path / "api_keys.json").write_text('{"HYVS_API_MAX_DOWNLOAD_MB": "12", "HYVS_API_RESUBMIT": "1"}')
    config = config_from_env(config_dir=tmp_path)
    assert config.max_download_bytes == 12 << 20 and config.resubmit
    monkeypatch.setenv("HYVS_API_MAX_DOWNLOAD_MB", "nan")
    with pytest.raises(E.ProviderError, match="HYVS_API_MAX_DOWNLOAD_MB"):
        config_from_env(config_dir=tmp_path)
    assert not math.isnan(config.timeout_s) and np.isfinite(config.max_download_bytes)
