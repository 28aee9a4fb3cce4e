"""The HunyuanVideo 1.5 endpoints (fal and WaveSpeedAI, text- and image-to-video) under hostile provider,
gateway and concurrent behaviour, against the fakes on 127.0.0.1.

Every test runs once per endpoint (the `endpoint` fixture): the hardening of test_providers_hostile.py
(rate-limit headers of any shape, one deadline per job, bounded downloads, only whole videos cached, the
same job twice billed once, unsendable input refused first, keys redacted, safe media URLs) must hold for
the new models as for the 13B ones. Billed jobs are counted at the fake; nothing waits on time, only on
state (journal rows, files, progress text), with the job deadline moved by the `clock` fixture.
"""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import httpx
import pytest
import torch
from hunyuan_video_suite.nodes import api
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import fal
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import wavespeed
from hunyuan_video_suite.pipelines.providers.base import Job
from hunyuan_video_suite.pipelines.providers.http import RetryPolicy
from hunyuan_video_suite.pipelines.providers.media import REFETCH_ATTEMPTS, verify_video
from hunyuan_video_suite.pipelines.providers.runner import Outcome
from hunyuan_video_suite.pipelines.providers.service import JOURNAL_FILE
from PIL import Image
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, Recorder, all_log_text, journal_row, run
from provider_fakes.server import Reply
from provider_tests.test_providers_hostile import BAD_RESETS, faststart, parts  # noqa: F401 - faststart: a fixture
from provider_tests.test_providers_hv15 import IMAGE, NODES, params, user_dir  # noqa: F401 - user_dir: a fixture


@dataclass(frozen=True)
class Endpoint:
    provider: str
    node_id: str
    build: Callable[..., Job]  # the job with this test module's inputs, overridable by keyword
    image_field: str | None    # the body field the input image goes in (I2V only)
    poll_path: str             # part of the path of every status poll (not of the submit or the result)

    @property
    def model(self) -> str:
        return NODES[self.node_id][1]


ENDPOINTS = {
    "fal-t2v": Endpoint("fal", "HYVS_FalHV15T2V", lambda **kw: fal.hv15_t2v_job(
        **{"prompt": "a lighthouse in a storm", "seed": 9, "num_frames": 33, **kw}), None, "/status"),
    "fal-i2v": Endpoint("fal", "HYVS_FalHV15I2V", lambda **kw: fal.hv15_i2v_job(
        **{"image": IMAGE, "prompt": "the waves rise", "seed": 9, **kw}), "image_url", "/status"),
    "wavespeed-t2v": Endpoint("wavespeed", "HYVS_WaveSpeedHV15T2V", lambda **kw: wavespeed.hv15_t2v_job(
        **{"prompt": "a lighthouse in a storm", "size": "832*480", "seed": 9, **kw}), None, "/predictions/"),
    "wavespeed-i2v": Endpoint("wavespeed", "HYVS_WaveSpeedHV15I2V", lambda **kw: wavespeed.hv15_i2v_job(
        **{"image": IMAGE, "prompt": "the waves rise", "resolution": "480p", "seed": 9, **kw}), "image",
        "/predictions/"),
}
I2V = [name for name, e in ENDPOINTS.items() if e.image_field]


@pytest.fixture(params=sorted(ENDPOINTS))
def endpoint(request) -> Endpoint:
    return ENDPOINTS[request.param]


@pytest.fixture(autouse=True)
def roomy_deadline(fast):
    """A job deadline no loaded machine reaches by itself; the deadline tests pass it with the `clock` instead."""
    fast.timeout_s = 120.0


def refusal(provider: str, status: int, message: str, headers: dict | None = None) -> Reply:
    """An error answer in the provider's own shape."""
    if provider == "wavespeed":
        return Reply(status, json={"code": status, "message": message, "data": None}, headers=headers or {})
    return Reply(status, json={"detail": message}, headers=headers or {})


def garbage_resets(value: str) -> dict:
    return {"retry-after": value, "x-ratelimit-reset": value, "x-rate-limit-reset-at-utc": value}


def rewrite_fal_result(fake, change: Callable[[dict], None]) -> None:
    """Let `change` edit the `video` object of the fal fake's result answers (its URL, its announced size)."""
    original = fake._result

    def result(job):
        reply = original(job)
        if reply.status == 200:
            change(reply.json["video"])
        return reply

    fake._result = result


def serve_result_url(endpoint: Endpoint, fake, url: str) -> None:
    """Make the finished job's result name `url` as its video."""
    if endpoint.provider == "wavespeed":
        fake.output_url = url
    else:
        rewrite_fal_result(fake, lambda video: video.update(url=url))


@pytest.fixture
def transport_hosts(monkeypatch) -> list[str]:
    """Every host a request was handed to httpx's transport for (where a connection would be opened)."""
    hosts: list[str] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def handle(self, request):
        hosts.append(request.url.host)
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)
    return hosts


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """Every retry wait the policy computes (a nan or inf one would be a busy loop or a hang)."""
    seen: list[float] = []
    original = RetryPolicy.wait
    monkeypatch.setattr(RetryPolicy, "wait", lambda self, r, a: seen.append(original(self, r, a)) or seen[-1])
    return seen


def secrets_in(provider: str) -> list[str]:
    """Every form of the provider's key that must never be shown (lower case; fal's halves too)."""
    key = KEYS[provider]
    return [s.lower() for s in {key, quote(key, safe=""), *key.split(":")}]


def everything_shown(data_dir, error: BaseException, recorder: Recorder, caplog) -> str:
    dump = "\n".join(sqlite3.connect(data_dir / JOURNAL_FILE).iterdump())
    return "\n".join([str(error), *recorder.texts, dump, all_log_text(caplog)]).lower()


# ----------------------------------------------------------------------------- 1. rate-limit headers of any shape

def test_submit_429_with_garbage_resets_is_not_accepted_and_bills_nothing(endpoint, provider_env, data_dir, fast,
                                                                          waits):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    fast.policy.attempts = len(BAD_RESETS)  # every odd value once, then the 429 is given up on
    fake.submit_replies = [refusal(endpoint.provider, 429, "rate limited", garbage_resets(v)) for v in BAD_RESETS]
    with pytest.raises(E.RateLimited) as info:
        run(endpoint.build(), data_dir, fast)
    assert "429" in str(info.value)
    assert len(fake.requests("POST")) == fast.policy.attempts and fake.billed == 0
    assert waits == [fast.policy.backoff(a) for a in range(1, fast.policy.attempts)]  # the normal backoff
    row = journal_row(data_dir, endpoint.build())
    assert row.phase == J.REJECTED and row.request_id is None  # not "may have been billed"
    outcome = run(endpoint.build(), data_dir, fast)  # queued again: submitted again, billed once
    assert outcome.video_path.is_file() and not outcome.resumed and fake.billed == 1
    assert fake.jobs[outcome.request_id]["model"] == endpoint.model


def test_poll_429_with_garbage_resets_backs_off_normally(endpoint, provider_env, data_dir, fast, waits):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    fake.status_glitches = [refusal(endpoint.provider, 429, "slow down", garbage_resets(v)) for v in BAD_RESETS]
    fast.policy.attempts = len(BAD_RESETS) + 1
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.video_path.is_file() and fake.billed == 1 and len(fake.requests("POST")) == 1
    assert waits == [fast.policy.backoff(a) for a in range(1, len(BAD_RESETS) + 1)]  # never nan, inf or 0
    assert len(fake.requests("GET", endpoint.poll_path)) >= len(BAD_RESETS) + 1 and not fake.status_glitches


# ----------------------------------------------------------------------------- 2. only whole videos are cached

# fal announces the file size (a cut is seen by its length), WaveSpeedAI does not (only decoding shows it):
# fal is also run without the size, so the decode check is what catches the cut there too.
TRUNCATION_CASES = [(name, sized) for name, e in sorted(ENDPOINTS.items())
                    for sized in ((True, False) if e.provider == "fal" else (False,))]


@pytest.mark.parametrize("name, sized", TRUNCATION_CASES,
                         ids=[f"{n}-{'sized' if s else 'unsized'}" for n, s in TRUNCATION_CASES])
def test_truncated_faststart_result_is_fetched_again(name, sized, provider_env, media, data_dir, fast, faststart):
    endpoint = ENDPOINTS[name]
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    if endpoint.provider == "fal" and not sized:
        rewrite_fal_result(fake, lambda video: video.pop("file_size"))
    media.truncate = [0.6]
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.video_path.read_bytes() == faststart and verify_video(outcome.video_path).frames == 24
    assert len(media.requests("GET")) == 2 and fake.billed == 1 and not parts(data_dir)


def test_always_truncated_result_is_a_clear_error_and_nothing_is_cached(endpoint, provider_env, media, data_dir, fast,
                                                                       faststart):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    media.truncate = [0.6] * (REFETCH_ATTEMPTS + 2)
    with pytest.raises(E.InvalidVideo) as info:
        run(endpoint.build(), data_dir, fast)
    row = journal_row(data_dir, endpoint.build())
    assert row.request_id and row.request_id in str(info.value) and row.phase == J.RESULT
    assert len(media.requests("GET")) == REFETCH_ATTEMPTS
    assert not list((data_dir / "api_cache").glob("*.mp4")) and not parts(data_dir)
    media.truncate = []  # the provider serves it whole again: fetched, not billed again
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.resumed and outcome.request_id == row.request_id and outcome.video_path.read_bytes() == faststart
    assert fake.billed == 1 and len(fake.requests("POST")) == 1


# ----------------------------------------------------------------------------- 3. downloads are bounded

@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_oversized_result_is_refused_by_the_size_cap(endpoint, length, provider_env, media, data_dir, fast):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    media.style = {"length": length}
    fast.max_download_bytes = len(media.video) // 2
    with pytest.raises(E.DownloadTooLarge, match="HYVS_API_MAX_DOWNLOAD_MB") as info:
        run(endpoint.build(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert rid in str(info.value)
    assert journal_row(data_dir, endpoint.build()).phase == J.RESULT and not parts(data_dir)
    assert not list((data_dir / "api_cache").glob("*.mp4"))
    fast.max_download_bytes = 1 << 20  # the cap raised: queued again, fetched, not billed again
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.request_id == rid and outcome.video_path.read_bytes() == media.video and fake.billed == 1


# ----------------------------------------------------------------------------- 4. the same job twice at once

def test_same_job_queued_twice_at_once_bills_once(endpoint, provider_env, data_dir, fast):
    fake = provider_env(endpoint.provider, queue_polls=100_000, run_polls=2)
    results, recorders = {}, {}

    def release(text):  # the job finishes only once one run waits on the other (else both may run in turn),
        # or once both have paid (a broken claim: fail at once rather than poll until the deadline)
        if "already running elsewhere" in text or ("submitted, request id" in text and fake.billed > 1):
            fake.queue_polls = 0

    def worker(name):
        recorders[name] = Recorder(stop_when=release)
        try:
            results[name] = run(endpoint.build(), data_dir, fast, recorders[name])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc
            fake.queue_polls = 0  # and the other run need not wait for its deadline

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
    assert journal_row(data_dir, endpoint.build()).phase == J.DONE


# ----------------------------------------------------------------------------- 5. input that cannot be sent

def test_lone_surrogate_is_refused_before_anything_is_recorded(endpoint, provider_env, data_dir, fast):
    fake = provider_env(endpoint.provider)
    texts = [n for n in ("prompt", "negative_prompt") if n in endpoint.build().payload]
    for name in texts:
        with pytest.raises(E.InvalidParameter, match=f"'{name}'.*surrogate"):
            endpoint.build(**{name: "a lighthouse \ud800 in a storm"})
    job = endpoint.build()
    job.payload["prompt"] = "a lighthouse \udcff in a storm"  # past the builder's check (a caller's own job)
    with pytest.raises(E.InvalidParameter, match="'prompt'"):
        run(job, data_dir, fast)
    assert fake.seen == [] and journal_row(data_dir, job) is None and journal_row(data_dir, endpoint.build()) is None


def test_lone_surrogate_in_the_node_is_refused_before_anything_is_recorded(endpoint, provider_env, user_dir):
    fake = provider_env(endpoint.provider)
    node = api.NODE_CLASS_MAPPINGS[endpoint.node_id]()
    with pytest.raises(E.InvalidParameter, match="'prompt'.*surrogate"):
        node.generate(**params(endpoint.node_id, prompt="a paper boat \udc80"), unique_id="3")
    assert fake.seen == [] and not (user_dir / api.DATA_FOLDER / JOURNAL_FILE).exists()


@pytest.mark.parametrize("name", I2V)
def test_big_image_is_downscaled_and_the_sent_size_reported(name, provider_env, data_dir, fast):
    endpoint = ENDPOINTS[name]
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    big = torch.linspace(0, 1, 300 * 2600 * 3).reshape(1, 300, 2600, 3)
    recorder = Recorder()
    outcome = run(endpoint.build(image=big), data_dir, fast, recorder)
    uri = fake.jobs[outcome.request_id]["body"][endpoint.image_field]
    sent = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert sent.size == (2048, 236)
    assert any("2048x236" in n and "downscaled from 2600x300" in n for n in outcome.notes)
    assert any("2048x236" in t and "downscaled" in t for t in recorder.texts)
    small = endpoint.build()
    assert "downscaled" not in small.notes[0] and "20x12" in small.notes[0]


@pytest.mark.parametrize("name", I2V)
def test_the_node_reports_the_downscaled_size(name, provider_env, user_dir):
    endpoint = ENDPOINTS[name]
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    big = torch.linspace(0, 1, 2400 * 90 * 3).reshape(1, 2400, 90, 3)  # portrait: the height is capped
    _, frames, info = api.NODE_CLASS_MAPPINGS[endpoint.node_id]().generate(**params(endpoint.node_id, image=big),
                                                                          unique_id="4")
    (job,) = fake.jobs.values()
    sent = Image.open(io.BytesIO(base64.b64decode(job["body"][endpoint.image_field].split(",", 1)[1])))
    assert sent.size == (77, 2048) and "77x2048" in info and "downscaled from 90x2400" in info
    assert frames.shape[0] == 6 and fake.billed == 1


# ----------------------------------------------------------------------------- 6. keys stay secret

@pytest.mark.parametrize("where", ["submit-refusal", "failed-job"])
def test_a_key_echoed_by_the_provider_is_redacted_everywhere(endpoint, where, provider_env, data_dir, fast, caplog):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=2)
    key = KEYS[endpoint.provider]
    echo = f"credentials {key.upper()} / {quote(key, safe='')} / {key.split(':')[-1].lower()} rejected"
    if where == "submit-refusal":
        fake.submit_replies = [refusal(endpoint.provider, 401, echo)]
        expected = E.AuthenticationFailed
    else:
        fake.fail_with = echo
        if endpoint.provider == "fal":
            fake.log_text = f"auth with Key {key.upper()} ok ({key.split(':')[0]})"
        expected = E.JobFailed
    recorder = Recorder()
    with pytest.raises(expected) as info:
        run(endpoint.build(), data_dir, fast, recorder)
    assert "credentials ***" in str(info.value) and "rejected" in str(info.value)  # the echo is kept, scrubbed
    row = journal_row(data_dir, endpoint.build())
    assert row.error and "credentials ***" in row.error
    assert row.phase == (J.REJECTED if where == "submit-refusal" else J.FAILED)
    assert fake.billed == (0 if where == "submit-refusal" else 1)
    shown = everything_shown(data_dir, info.value, recorder, caplog)
    for secret in secrets_in(endpoint.provider):
        assert secret not in shown
    if where == "failed-job" and endpoint.provider == "fal":
        assert any("auth with key ***" in t.lower() for t in recorder.texts)


# ----------------------------------------------------------------------------- 7. media URLs fetched safely

@pytest.mark.parametrize("url, words", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:192.168.0.7]/video.mp4", "private"),
    ("file:///etc/passwd", "only http"),
], ids=["metadata", "mapped-private", "file"])
def test_an_internal_result_url_is_refused_before_any_connection(endpoint, url, words, provider_env, media, data_dir,
                                                                 fast, transport_hosts):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    serve_result_url(endpoint, fake, url)
    with pytest.raises(E.UnsafeUrl, match=words) as info:
        run(endpoint.build(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and fake.billed == 1
    assert journal_row(data_dir, endpoint.build()).phase == J.RESULT
    assert transport_hosts and set(transport_hosts) == {"127.0.0.1"}  # only the fake API: nothing else was opened
    assert media.seen == [] and not parts(data_dir)


def test_a_redirect_to_an_internal_address_is_refused(endpoint, provider_env, media, data_dir, fast, transport_hosts):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    media.redirect = "http://169.254.169.254/latest/meta-data/iam"
    with pytest.raises(E.UnsafeUrl, match="metadata") as info:
        run(endpoint.build(), data_dir, fast)
    assert next(iter(fake.jobs)) in str(info.value) and fake.billed == 1
    assert len(media.requests("GET")) == 1 and "169.254.169.254" not in transport_hosts


# ----------------------------------------------------------------------------- 8. one deadline per job

def test_the_deadline_bounds_a_rate_limited_poll(endpoint, provider_env, data_dir, fast, clock, monkeypatch):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    fast.policy = RetryPolicy(attempts=50, backoff_s=0.01, max_backoff_s=0.02, max_rate_wait_s=30.0)
    fake.status_glitches = [refusal(endpoint.provider, 429, "slow", {"retry-after": "20"})] * 50
    original = RetryPolicy.wait

    def wait(self, response, attempt):  # the job deadline passes during the provider's 20 s wait
        clock.ahead = fast.timeout_s
        return original(self, response, attempt)

    monkeypatch.setattr(RetryPolicy, "wait", wait)
    with pytest.raises(E.WaitTimeout) as info:
        run(endpoint.build(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and "Queue the same job again to resume" in str(info.value)
    assert len(fake.requests("GET", endpoint.poll_path)) == 1  # gave up inside the one 20 s wait
    assert journal_row(data_dir, endpoint.build()).phase == J.PENDING
    fake.status_glitches = []
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.resumed and outcome.request_id == rid and fake.billed == 1 and len(fake.requests("POST")) == 1


def test_the_deadline_bounds_the_download(endpoint, provider_env, media, data_dir, fast, clock):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    media.style = {"drip_s": 0.2, "chunk": 64}  # seconds for the whole file; no single read ever times out

    def deadline_passes(text):  # once the download is under way
        if "downloading the video ·" in text:
            clock.ahead = fast.timeout_s

    with pytest.raises(E.WaitTimeout) as info:
        run(endpoint.build(), data_dir, fast, Recorder(stop_when=deadline_passes))
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and "downloading" in str(info.value) and "again to resume" in str(info.value)
    assert journal_row(data_dir, endpoint.build()).phase == J.RESULT and not parts(data_dir)
    media.style = {}
    outcome = run(endpoint.build(), data_dir, fast)
    assert outcome.resumed and outcome.video_path.read_bytes() == media.video and fake.billed == 1


def test_the_deadline_bounds_a_rate_limited_submit_and_bills_nothing(endpoint, provider_env, data_dir, fast, clock,
                                                                     monkeypatch):
    fake = provider_env(endpoint.provider, queue_polls=0, run_polls=0)
    fast.policy = RetryPolicy(attempts=50, backoff_s=0.01, max_rate_wait_s=30.0)
    fake.submit_replies = [refusal(endpoint.provider, 429, "busy", {"retry-after": "20"})] * 50
    original = RetryPolicy.wait

    def wait(self, response, attempt):
        clock.ahead = fast.timeout_s
        return original(self, response, attempt)

    monkeypatch.setattr(RetryPolicy, "wait", wait)
    with pytest.raises(E.WaitTimeout, match="nothing was billed"):
        run(endpoint.build(), data_dir, fast)
    assert len(fake.requests("POST")) == 1 and fake.billed == 0
    assert journal_row(data_dir, endpoint.build()).phase == J.REJECTED
    fake.submit_replies = []
    assert run(endpoint.build(), data_dir, fast).video_path.is_file() and fake.billed == 1
