"""fal.ai queue client against a fake fal queue server on 127.0.0.1."""

import re

import pytest
import torch
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import fal
from hunyuan_video_suite.pipelines.providers import journal as J
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, Recorder, all_log_text, journal_row, run
from provider_fakes.server import Reply


def t2v(**kw):
    return fal.t2v_job(**{"prompt": "a cat surfing", "seed": 7, **kw})


def test_slow_queue_then_202_while_running_then_cached_video(provider_env, media, data_dir, fast, caplog):
    fake = provider_env("fal", queue_polls=3, run_polls=2)
    recorder = Recorder()
    outcome = run(t2v(), data_dir, fast, recorder)
    assert outcome.video_path.is_file() and outcome.video_path.read_bytes() == media.video
    assert outcome.seed == 7 and outcome.request_id in fake.jobs and not outcome.from_cache
    assert any("position 2" in t for t in recorder.texts) and any("step" in t for t in recorder.texts)
    assert recorder.fractions[-1] == 1.0
    assert fake.billed == 1 and len(fake.requests("POST")) == 1
    assert all("logs=1" in s.query for s in fake.requests("GET", "/status"))
    # The media host never sees the key; the fal host always gets `Key <key>`.
    assert all("authorization" not in s.headers for s in media.seen)
    assert all(s.headers["authorization"] == f"Key {KEYS['fal']}" for s in fake.seen)
    assert journal_row(data_dir, t2v()).phase == J.DONE
    # Queued again: served from the cache, no request at all.
    before = len(fake.seen)
    again = run(t2v(), data_dir, fast)
    assert again.from_cache and again.video_path == outcome.video_path and len(fake.seen) == before
    assert KEYS["fal"] not in all_log_text(caplog)


def test_i2v_sends_image_as_data_uri(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=0, run_polls=0)
    image = torch.rand(1, 32, 48, 3)
    job = fal.i2v_job(image=image, prompt="she smiles", i2v_stability=True)
    run(job, data_dir, fast)
    body = next(iter(fake.jobs.values()))["body"]
    assert body["image_url"].startswith("data:image/png;base64,") and body["i2v_stability"] is True
    assert body["num_frames"] == "129" and "seed" not in body
    assert fal.i2v_job(image=image.clone(), prompt="she smiles", i2v_stability=True).fingerprint == job.fingerprint


def test_connection_dropped_after_submit_is_never_resubmitted(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fake.drop_after_submit = True
    with pytest.raises(E.SubmitUncertain, match="not resubmitted"):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.UNCERTAIN
    fake.drop_after_submit = False
    with pytest.raises(E.SubmitUncertain, match="change an input"):
        run(t2v(), data_dir, fast)
    assert len(fake.requests("POST")) == 1 and fake.billed == 1
    run(t2v(seed=8), data_dir, fast)  # a changed input is a new job
    assert fake.billed == 2


def test_reads_retry_5xx_and_429(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fake.status_glitches = [503, 429, 500]
    outcome = run(t2v(), data_dir, fast)
    assert outcome.video_path.is_file() and fake.billed == 1


def test_submit_429_waits_and_submits_once(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=0)
    fake.submit_replies = [Reply(429, json={"detail": "Too many requests"}, headers={"retry-after": "0"})]
    run(t2v(), data_dir, fast)
    assert fake.billed == 1 and len(fake.requests("POST")) == 2


@pytest.mark.parametrize("reply, error, words", [
    (Reply(401, json={"detail": "Unauthorized"}), E.AuthenticationFailed, "FAL_KEY"),
    (Reply(403, json={"detail": "User is locked. Reason: Exhausted balance."}), E.InsufficientCredits, "credits"),
    (Reply(422, json={"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]}), E.BadRequest, "body.prompt: too long"),
    (Reply(500, json={"detail": "Internal error"}), E.ProviderUnavailable, "HTTP 500"),
])
def test_submit_errors_are_typed_and_resubmittable(provider_env, data_dir, fast, reply, error, words):
    fake = provider_env("fal", queue_polls=0)
    fake.submit_replies = [reply] * 5
    with pytest.raises(error, match=words) as info:
        run(t2v(), data_dir, fast)
    assert KEYS["fal"] not in str(info.value)
    assert journal_row(data_dir, t2v()).phase == J.REJECTED
    fake.submit_replies = []
    run(t2v(), data_dir, fast)  # the provider created nothing, so queuing again submits
    assert fake.billed == 1


def test_wrong_key_is_reported_without_the_key(provider_env, data_dir, fast, monkeypatch, caplog):
    provider_env("fal")
    monkeypatch.setenv("FAL_KEY", "wrong-SECRET-key")
    with pytest.raises(E.AuthenticationFailed) as info:
        run(t2v(), data_dir, fast)
    assert "wrong-SECRET-key" not in str(info.value) and "wrong-SECRET-key" not in all_log_text(caplog)


def test_failed_job_maps_provider_message(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fake.fail_with = "CUDA out of memory"
    with pytest.raises(E.JobFailed, match="CUDA out of memory") as info:
        run(t2v(), data_dir, fast)
    assert info.value.request_id in fake.jobs
    assert journal_row(data_dir, t2v()).phase == J.FAILED


def test_expired_result(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fake.result_status = 404
    with pytest.raises(E.ResultExpired, match="new \\(billed\\) job"):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.EXPIRED


def test_interrupt_while_queued_cancels(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=1000)
    recorder = Recorder(stop_when=lambda text: "position" in text)
    with pytest.raises(E.Interrupted, match="cancelled"):
        run(t2v(), data_dir, fast, recorder)
    assert len(fake.requests("PUT", "/cancel")) == 1 and fake.billed == 0
    assert journal_row(data_dir, t2v()).phase == J.CANCELLED


def test_interrupt_while_running_detaches_then_resumes(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=0, run_polls=1000)
    recorder = Recorder(stop_when=lambda text: "processing" in text)
    with pytest.raises(E.Interrupted, match="Queue the same job again"):
        run(t2v(), data_dir, fast, recorder)
    assert journal_row(data_dir, t2v()).phase == J.PENDING
    fake.run_polls = 0
    outcome = run(t2v(), data_dir, fast)
    assert outcome.resumed and fake.billed == 1 and len(fake.requests("POST")) == 1


def test_host_exception_from_progress_is_reraised_after_detach(provider_env, data_dir, fast):
    class HostInterrupt(Exception):
        pass

    provider_env("fal", queue_polls=0, run_polls=1000)
    recorder = Recorder()

    def fraction(value):
        if value > 0.04:
            raise HostInterrupt()

    from hunyuan_video_suite.pipelines.providers.runner import Callbacks
    from hunyuan_video_suite.pipelines.providers.service import run_job
    with pytest.raises(HostInterrupt):
        run_job(t2v(), data_dir, config=fast, callbacks=Callbacks(text=recorder.texts.append, fraction=fraction))
    assert journal_row(data_dir, t2v()).phase == J.PENDING


def test_local_timeout_names_request_and_resumes(provider_env, data_dir, fast):
    fake = provider_env("fal", queue_polls=10_000)
    fast.timeout_s = 0.2
    with pytest.raises(E.WaitTimeout) as info:
        run(t2v(), data_dir, fast)
    rid = next(iter(fake.jobs))
    assert rid in str(info.value) and "again to resume" in str(info.value)
    fake.queue_polls = 0
    fast.timeout_s = 10
    assert run(t2v(), data_dir, fast).request_id == rid and fake.billed == 1


def test_foreign_urls_are_not_followed_with_the_key(provider_env, data_dir, fast):
    fake = provider_env("fal")
    fake.foreign_urls = True  # URLs on queue.fal.run: unreachable here, and not our configured host
    outcome = run(t2v(), data_dir, fast)
    assert outcome.video_path.is_file()


def test_base_url_with_path_prefix(provider_env, data_dir, fast, monkeypatch):
    fake = provider_env("fal")
    fake.prefix = "/proxy/fal"
    monkeypatch.setenv("FAL_QUEUE_BASE_URL", fake.url + "/proxy/fal/")
    run(t2v(), data_dir, fast)
    assert fake.requests("POST")[0].path == "/proxy/fal/fal-ai/hunyuan-video"


@pytest.mark.parametrize("kw, name", [({"resolution": "1080p"}, "resolution"), ({"num_frames": "64"}, "num_frames"),
                                      ({"aspect_ratio": "4:3"}, "aspect_ratio"), ({"prompt": "  "}, "prompt"),
                                      ({"seed": -2}, "seed")])
def test_validation_names_the_input(kw, name):
    with pytest.raises(E.InvalidParameter, match=f"'{name}'"):
        t2v(**kw)


def test_i2v_allows_only_documented_values():
    with pytest.raises(E.InvalidParameter, match="'resolution'"):
        fal.i2v_job(image=torch.rand(1, 8, 8, 3), prompt="x", resolution="480p")


@pytest.mark.parametrize("builder", [fal.hv15_t2v_job, fal.hv15_i2v_job], ids=["hv15-t2v", "hv15-i2v"])
@pytest.mark.parametrize("kw, name, allowed", [
    ({"resolution": "720p"}, "resolution", "'480p'"), ({"num_frames": 122}, "num_frames", "between 1 and 121"),
    ({"num_frames": 0}, "num_frames", "between 1 and 121"), ({"num_frames": "121"}, "num_frames", "whole number"),
    ({"num_inference_steps": 51}, "num_inference_steps", "between 1 and 50"),
    ({"aspect_ratio": "1:1"}, "aspect_ratio", "'16:9', '9:16'"), ({"prompt": "  "}, "prompt", "required"),
    ({"seed": -2}, "seed", "between -1"), ({"enable_prompt_expansion": "yes"}, "enable_prompt_expansion", "true or false"),
    ({"negative_prompt": None}, "negative_prompt", "text"),
])
def test_hv15_validation_names_the_input_and_what_is_allowed(builder, kw, name, allowed):
    extra = {"image": torch.rand(1, 8, 8, 3)} if builder is fal.hv15_i2v_job else {}
    with pytest.raises(E.InvalidParameter, match=f"'{name}'.*{re.escape(allowed)}"):
        builder(**{"prompt": "x", **extra, **kw})
