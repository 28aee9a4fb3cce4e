"""Segmind client against a fake Segmind server on 127.0.0.1 (async v2, sync v1 fallback)."""

from datetime import datetime, timedelta, timezone

import pytest
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import segmind
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, all_log_text, journal_row, run
from provider_fakes.server import Reply


def t2v(**kw):
    return segmind.t2v_job(**{"prompt": "waves at dusk", **kw})


def test_async_v2_flow_with_documented_defaults(provider_env, media, data_dir, fast, caplog):
    fake = provider_env("segmind", queue_polls=2, run_polls=2)
    outcome = run(t2v(), data_dir, fast)
    assert outcome.video_path.read_bytes() == media.video and fake.billed == 1
    body = next(iter(fake.jobs.values()))["body"]
    assert body == {"prompt": "waves at dusk", "negative_prompt": "Aerial view, overexposed, low quality, deformation",
                    "seed": 96501778, "width": 854, "height": 480, "video_length": 77, "infer_steps": 40,
                    "flow_shift": 7, "embedded_guidance_scale": 6}
    assert all(s.headers.get("x-api-key") == KEYS["segmind"] for s in fake.seen)
    assert all("x-api-key" not in s.headers for s in media.seen)
    assert KEYS["segmind"] not in all_log_text(caplog)


def test_sync_v1_fallback_when_v2_is_missing(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    fake.v2_enabled = False
    outcome = run(t2v(), data_dir, fast)
    assert outcome.video_path.is_file() and fake.billed == 1
    assert run(t2v(), data_dir, fast).from_cache and fake.billed == 1


def test_random_seed_is_drawn_locally_and_resumes(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    first = run(t2v(seed=-1), data_dir, fast)
    assert 0 <= first.seed <= segmind.SEED_MAX and next(iter(fake.jobs.values()))["body"]["seed"] == first.seed
    assert run(t2v(seed=-1), data_dir, fast).from_cache and fake.billed == 1


def test_failed_job_422(provider_env, data_dir, fast):
    fake = provider_env("segmind", queue_polls=0, run_polls=0)
    fake.fail_with = "model crashed"
    with pytest.raises(E.JobFailed, match="model crashed"):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.FAILED


@pytest.mark.parametrize("reply, error, words", [
    (Reply(400, json={"error": "width must be an integer"}), E.BadRequest, "width must be"),
    (Reply(401, json={"error": "Unauthorized"}), E.AuthenticationFailed, "SEGMIND_API_KEY"),
    (Reply(403, json={"error": "Forbidden"}), E.AuthenticationFailed, "forbidden"),
    (Reply(406, json={"error": "Not enough credits"}), E.InsufficientCredits, "Not enough credits"),
    (Reply(500, json={"error": "boom"}), E.ProviderUnavailable, "HTTP 500"),
])
def test_documented_submit_errors(provider_env, data_dir, fast, reply, error, words):
    fake = provider_env("segmind")
    fake.submit_replies = [reply]
    with pytest.raises(error, match=words):
        run(t2v(), data_dir, fast)
    assert fake.billed == 0 and journal_row(data_dir, t2v()).phase == J.REJECTED


def test_429_honours_reset_header(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    reset = (datetime.now(timezone.utc) + timedelta(seconds=0.3)).isoformat()
    fake.submit_replies = [Reply(429, json={"error": "rate limited"}, headers={"x-rate-limit-reset-at-utc": reset})]
    fake.status_glitches = [Reply(429, json={"error": "rate limited"}, headers={"x-rate-limit-reset-at-utc": reset}),
                            Reply(502, body=b"bad gateway"), Reply(504, body=b"timeout")]
    run(t2v(), data_dir, fast)
    assert fake.billed == 1 and len(fake.requests("POST")) == 2


def test_429_that_never_ends(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    fake.submit_replies = [Reply(429, json={"error": "rate limited"}, headers={"x-rate-limit-reset-at-utc": "0"})] * 9
    with pytest.raises(E.RateLimited):
        run(t2v(), data_dir, fast)
    assert fake.billed == 0


def test_dropped_submit_and_expired_record(provider_env, data_dir, fast):
    fake = provider_env("segmind")
    fake.drop_after_submit = True
    with pytest.raises(E.SubmitUncertain):
        run(t2v(), data_dir, fast)
    fake.drop_after_submit = False
    fake.expired = True
    with pytest.raises(E.ResultExpired, match="billed"):
        run(t2v(seed=5), data_dir, fast)
    assert journal_row(data_dir, t2v(seed=5)).phase == J.EXPIRED


@pytest.mark.parametrize("kw, name", [({"width": 1281}, "width"), ({"height": 0}, "height"),
                                      ({"video_length": 130}, "video_length"), ({"infer_steps": 71}, "infer_steps"),
                                      ({"flow_shift": 16}, "flow_shift"), ({"embedded_guidance_scale": 10.5},
                                                                          "embedded_guidance_scale")])
def test_validation_names_the_input(kw, name):
    with pytest.raises(E.InvalidParameter, match=f"'{name}'"):
        t2v(**kw)
