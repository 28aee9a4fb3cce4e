"""WaveSpeedAI client against a fake WaveSpeedAI server on 127.0.0.1."""

import pytest
import torch
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import wavespeed
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, Recorder, all_log_text, journal_row, run
from provider_fakes.server import Reply


def t2v(**kw):
    return wavespeed.t2v_job(**{"prompt": "a fox in snow", "seed": 11, **kw})


def test_t2v_created_processing_completed(provider_env, media, data_dir, fast, caplog):
    fake = provider_env("wavespeed", queue_polls=2, run_polls=2)
    outcome = run(t2v(), data_dir, fast)
    assert outcome.video_path.read_bytes() == media.video and fake.billed == 1
    body = next(iter(fake.jobs.values()))["body"]
    assert body == {"prompt": "a fox in snow", "size": "1280*720", "num_inference_steps": 30, "seed": 11,
                    "enable_safety_checker": True}
    assert all("authorization" not in s.headers for s in media.seen)
    assert run(t2v(), data_dir, fast).from_cache and fake.billed == 1
    assert KEYS["wavespeed"] not in all_log_text(caplog)


def test_i2v_and_custom_ref2v_fall_back_to_v2(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    fake.custom_only_v2 = True
    image = torch.rand(1, 16, 16, 3)
    run(wavespeed.i2v_job(image=image, prompt="", duration=10), data_dir, fast)
    job = wavespeed.custom_ref2v_job(image=image, prompt="a man waves", resolution="480p", size="480*832",
                                     guidance_scale=7.5, flow_shift=13.0, seed=9999999999)
    run(job, data_dir, fast)
    paths = [s.path for s in fake.requests("POST")]
    assert paths == ["/api/v3/wavespeed-ai/hunyuan-video/i2v", "/api/v3/wavespeed-ai/hunyuan-custom-ref2v-480p",
                     "/api/v2/wavespeed-ai/hunyuan-custom-ref2v-480p"]
    assert fake.billed == 2
    body = fake.jobs[run(job, data_dir, fast).request_id]["body"]
    assert body["flow_shift"] == 13 and body["guidance_scale"] == 7.5 and body["image"].startswith("data:image/png")


def test_failed_task(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=0)
    fake.fail_with = "inference error"
    with pytest.raises(E.JobFailed, match="inference error"):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.FAILED


def test_nsfw_flag_is_replayed_without_new_bill(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=0)
    fake.nsfw = True
    with pytest.raises(E.ContentFlagged, match="NSFW"):
        run(t2v(), data_dir, fast)
    with pytest.raises(E.ContentFlagged, match="not submitted again"):
        run(t2v(), data_dir, fast)
    assert fake.billed == 1


@pytest.mark.parametrize("reply, error", [
    (Reply(401, json={"code": 401, "message": "Unauthorized", "data": None}), E.AuthenticationFailed),
    (Reply(402, json={"code": 402, "message": "Insufficient balance", "data": None}), E.InsufficientCredits),
    (Reply(400, json={"code": 400, "message": "size is invalid", "data": None}), E.BadRequest),
    (Reply(200, json={"code": 400, "message": "prompt is invalid", "data": None}), E.BadRequest),
])
def test_submit_errors(provider_env, data_dir, fast, reply, error):
    fake = provider_env("wavespeed")
    fake.submit_replies = [reply]
    with pytest.raises(error):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.REJECTED and fake.billed == 0


@pytest.mark.parametrize("drop, reply", [(True, None), (False, Reply(504, body=b"gateway timeout"))])
def test_ambiguous_submit_is_not_repeated(provider_env, data_dir, fast, drop, reply):
    fake = provider_env("wavespeed")
    fake.drop_after_submit = drop
    fake.submit_replies = [reply] if reply else []
    for _ in range(2):
        with pytest.raises(E.SubmitUncertain):
            run(t2v(), data_dir, fast)
    assert len(fake.requests("POST")) == 1


def test_expired_prediction(provider_env, data_dir, fast):
    fake = provider_env("wavespeed")
    fake.expired = True
    with pytest.raises(E.ResultExpired):
        run(t2v(), data_dir, fast)
    assert journal_row(data_dir, t2v()).phase == J.EXPIRED


def test_expired_media_url(provider_env, media, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    original = media.add
    media.add = lambda name, body=None: (media.expired.add(name), original(name, body))[1]
    with pytest.raises(E.ResultExpired, match="video URL has expired"):
        run(t2v(), data_dir, fast)
    assert fake.billed == 1


def test_corrupt_video_is_not_cached(provider_env, media, data_dir, fast):
    provider_env("wavespeed", queue_polls=0, run_polls=0)
    media.video = b"<html>not a video</html>"
    with pytest.raises(E.InvalidVideo):
        run(t2v(), data_dir, fast)
    row = journal_row(data_dir, t2v())
    assert row.phase == J.RESULT and not list((data_dir / "api_cache").glob("*.mp4"))


def test_interrupt_detaches_and_resume_bills_once(provider_env, data_dir, fast):
    fake = provider_env("wavespeed", queue_polls=1000)
    recorder = Recorder(stop_when=lambda text: "in queue" in text)
    with pytest.raises(E.Interrupted, match="keeps running"):
        run(t2v(), data_dir, fast, recorder)
    assert journal_row(data_dir, t2v()).phase == J.PENDING
    fake.queue_polls = 0
    assert run(t2v(), data_dir, fast).resumed and fake.billed == 1


@pytest.mark.parametrize("builder, kw, name", [
    (wavespeed.t2v_job, {"prompt": "x", "num_inference_steps": 1}, "num_inference_steps"),
    (wavespeed.t2v_job, {"prompt": "x", "size": "832*480"}, "size"),
    (wavespeed.t2v_job, {"prompt": "x", "seed": 2147483648}, "seed"),
    (wavespeed.i2v_job, {"image": torch.rand(1, 4, 4, 3), "duration": 11}, "duration"),
    (wavespeed.custom_ref2v_job, {"image": torch.rand(1, 4, 4, 3), "prompt": "x", "resolution": "720p",
                                  "size": "832*480"}, "size"),
    (wavespeed.custom_ref2v_job, {"image": torch.rand(1, 4, 4, 3), "prompt": "x", "flow_shift": 20.5}, "flow_shift"),
    (wavespeed.custom_ref2v_job, {"image": torch.rand(1, 4, 4, 3), "prompt": "x", "guidance_scale": float("nan")},
     "guidance_scale"),
    (wavespeed.i2v_job, {"image": torch.rand(4, 4)}, "image"),
    (wavespeed.hv15_t2v_job, {"prompt": " "}, "prompt"),
    (wavespeed.hv15_t2v_job, {"prompt": "x", "size": "1920*1080"}, "size"),
    (wavespeed.hv15_t2v_job, {"prompt": "x", "duration": 10}, "duration"),
    (wavespeed.hv15_t2v_job, {"prompt": "x", "duration": "5"}, "duration"),
    (wavespeed.hv15_t2v_job, {"prompt": "x", "seed": -2}, "seed"),
    (wavespeed.hv15_t2v_job, {"prompt": "x", "negative_prompt": 3}, "negative_prompt"),
    (wavespeed.hv15_i2v_job, {"image": torch.rand(1, 4, 4, 3), "resolution": "1080p"}, "resolution"),
    (wavespeed.hv15_i2v_job, {"image": torch.rand(1, 4, 4, 3), "duration": 6}, "duration"),
    (wavespeed.hv15_i2v_job, {"image": torch.rand(1, 4, 4, 3), "seed": 2147483648}, "seed"),
    (wavespeed.hv15_i2v_job, {"image": torch.rand(4, 4)}, "image"),
])
def test_validation_names_the_input(builder, kw, name):
    with pytest.raises(E.InvalidParameter, match=f"'{name}'"):
        builder(**kw)
