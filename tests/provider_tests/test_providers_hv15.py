"""HunyuanVideo 1.5 on fal.ai and WaveSpeedAI (SPEC-hv15 §9): the four nodes against the fakes.

What the older jobs are tested for holds for these too: the documented fields go out (and only those),
out-of-range values are refused before any request, a provider's own refusal is typed and bills nothing,
and a paid result is never lost nor paid twice (interrupt, resume, re-queue; the crash across processes
is in test_providers_crash.py)."""

import pytest
import torch
from hunyuan_video_suite.nodes import api, host
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import fal
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import wavespeed
from hunyuan_video_suite.pipelines.providers.base import Job
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, Recorder, journal_row, run

NODES = {
    "HYVS_FalHV15T2V": ("fal", fal.HV15_T2V_MODEL),
    "HYVS_FalHV15I2V": ("fal", fal.HV15_I2V_MODEL),
    "HYVS_WaveSpeedHV15T2V": ("wavespeed", wavespeed.HV15_T2V_MODEL),
    "HYVS_WaveSpeedHV15I2V": ("wavespeed", wavespeed.HV15_I2V_MODEL),
}
# The fields each job sends: exactly these (seed left out on fal when -1, as fal then picks one).
FIELDS = {
    "HYVS_FalHV15T2V": {"prompt", "negative_prompt", "num_inference_steps", "aspect_ratio", "resolution",
                        "num_frames", "enable_prompt_expansion"},
    "HYVS_WaveSpeedHV15T2V": {"prompt", "negative_prompt", "size", "duration", "seed"},
    "HYVS_WaveSpeedHV15I2V": {"image", "prompt", "resolution", "duration", "seed"},
}
FIELDS["HYVS_FalHV15I2V"] = FIELDS["HYVS_FalHV15T2V"] | {"image_url"}
IMAGE = torch.linspace(0, 1, 12 * 20 * 3).reshape(1, 12, 20, 3)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HYVS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYVS_API_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("HYVS_API_BACKOFF", "0.01")
    return host.user_directory()


def params(node_id: str, **kw) -> dict:
    cls = api.NODE_CLASS_MAPPINGS[node_id]
    values = {n: o.get("default") for n, (kind, o) in cls.INPUT_TYPES()["required"].items() if kind != "IMAGE"}
    values["prompt"] = "a paper boat on a rainy street"
    if "image" in cls.INPUT_TYPES()["required"]:
        values["image"] = IMAGE
    return {**values, **kw}


def test_nodes_are_registered_with_their_names():
    titles = api.NODE_DISPLAY_NAME_MAPPINGS
    assert titles["HYVS_FalHV15T2V"] == "HunyuanVideo Suite: fal.ai HunyuanVideo 1.5 T2V"
    assert titles["HYVS_FalHV15I2V"] == "HunyuanVideo Suite: fal.ai HunyuanVideo 1.5 I2V"
    assert titles["HYVS_WaveSpeedHV15T2V"] == "HunyuanVideo Suite: WaveSpeedAI HunyuanVideo 1.5 T2V"
    assert titles["HYVS_WaveSpeedHV15I2V"] == "HunyuanVideo Suite: WaveSpeedAI HunyuanVideo 1.5 I2V"
    for node_id in NODES:
        names = set(api.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"])
        assert not any("key" in n.lower() for n in names), names


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_node_sends_the_documented_fields_and_requeue_bills_once(node_id, provider_env, user_dir):
    provider, model = NODES[node_id]
    fake = provider_env(provider, queue_polls=1, run_polls=1)
    node = api.NODE_CLASS_MAPPINGS[node_id]
    video, frames, info = node().generate(**params(node_id), unique_id="7")
    assert frames.shape == (6, 48, 64, 3) and f"model: {model}" in info and KEYS[provider] not in info
    (job,) = fake.jobs.values()
    assert job["model"] == model and set(job["body"]) == FIELDS[node_id]
    assert fake.requests("POST")[0].path.endswith("/" + model)
    body = job["body"]
    if provider == "fal":
        assert body["num_frames"] == 121 and body["num_inference_steps"] == 28 and body["resolution"] == "480p"
        assert body["enable_prompt_expansion"] is True and body["negative_prompt"] == "" and "seed" not in body
    else:
        assert body["duration"] == 5 and body["seed"] == -1
        assert body.get("size", "1280*720") == "1280*720" and body.get("resolution", "720p") == "720p"
    image_field = {"HYVS_FalHV15I2V": "image_url", "HYVS_WaveSpeedHV15I2V": "image"}.get(node_id)
    if image_field:
        assert body[image_field].startswith("data:image/png;base64,")
    _, _, again = node().generate(**params(node_id), unique_id="7")
    assert "served from cache: yes" in again and fake.billed == 1 and len(fake.requests("POST")) == 1


@pytest.mark.parametrize("node_id, kw, name", [
    ("HYVS_FalHV15T2V", {"num_frames": 129}, "num_frames"),
    ("HYVS_FalHV15T2V", {"resolution": "720p"}, "resolution"),
    ("HYVS_FalHV15I2V", {"num_inference_steps": 0}, "num_inference_steps"),
    ("HYVS_FalHV15I2V", {"prompt": ""}, "prompt"),
    ("HYVS_FalHV15I2V", {"image": torch.rand(8, 8)}, "image"),
    ("HYVS_WaveSpeedHV15T2V", {"duration": 10}, "duration"),
    ("HYVS_WaveSpeedHV15T2V", {"size": "1280*768"}, "size"),
    ("HYVS_WaveSpeedHV15I2V", {"duration": 7}, "duration"),
    ("HYVS_WaveSpeedHV15I2V", {"resolution": "1080p"}, "resolution"),
])
def test_bad_input_is_refused_before_any_request(node_id, kw, name, provider_env, user_dir):
    fake = provider_env(NODES[node_id][0])
    with pytest.raises(E.InvalidParameter, match=f"'{name}'"):
        api.NODE_CLASS_MAPPINGS[node_id]().generate(**params(node_id, **kw))
    assert fake.seen == [] and fake.billed == 0


def test_refusal_messages_say_what_is_allowed():
    with pytest.raises(E.InvalidParameter, match="'duration'.*5, 8"):
        wavespeed.hv15_t2v_job(prompt="x", duration=10)
    with pytest.raises(E.InvalidParameter, match="'size'.*'1280\\*720', '720\\*1280', '832\\*480', '480\\*832'"):
        wavespeed.hv15_t2v_job(prompt="x", size="960*544")
    with pytest.raises(E.InvalidParameter, match="'resolution'.*'720p', '480p'"):
        wavespeed.hv15_i2v_job(image=IMAGE, resolution="540p")
    with pytest.raises(E.InvalidParameter, match="'num_frames'.*between 1 and 121"):
        fal.hv15_t2v_job(prompt="x", num_frames=200)


@pytest.mark.parametrize("provider, model, payload, field", [
    ("fal", fal.HV15_T2V_MODEL, {"prompt": "x", "num_frames": 129}, "num_frames"),
    ("fal", fal.HV15_T2V_MODEL, {"prompt": "x", "resolution": "720p"}, "resolution"),
    ("fal", fal.HV15_I2V_MODEL, {"prompt": "x", "image_url": "data:image/png;base64,AA==", "aspect_ratio": "1:1"},
     "aspect_ratio"),
    ("wavespeed", wavespeed.HV15_T2V_MODEL, {"prompt": "x", "size": "1024*1024"}, "size"),
    ("wavespeed", wavespeed.HV15_I2V_MODEL, {"image": "data:image/png;base64,AA==", "duration": 10}, "duration"),
])
def test_the_fakes_refuse_what_the_services_refuse(provider, model, payload, field, provider_env, data_dir, fast):
    """A job that got past the checks (built by hand here) is refused by the provider: typed, not billed."""
    fake = provider_env(provider)
    job = Job(provider, model, payload, seed=None)
    with pytest.raises(E.BadRequest, match=field):
        run(job, data_dir, fast)
    assert fake.billed == 0 and journal_row(data_dir, job).phase == J.REJECTED


@pytest.mark.parametrize("build, provider", [
    (lambda: fal.hv15_t2v_job(prompt="a lighthouse", seed=9, num_frames=33), "fal"),
    (lambda: fal.hv15_i2v_job(image=IMAGE, prompt="the waves rise", seed=9, aspect_ratio="9:16"), "fal"),
    (lambda: wavespeed.hv15_t2v_job(prompt="a lighthouse", size="480*832", duration=8, seed=9), "wavespeed"),
    (lambda: wavespeed.hv15_i2v_job(image=IMAGE, resolution="480p", seed=9), "wavespeed"),
], ids=["fal-t2v", "fal-i2v", "wavespeed-t2v", "wavespeed-i2v"])
def test_interrupt_while_running_detaches_then_resumes_with_one_billing(build, provider, provider_env, data_dir, fast):
    fake = provider_env(provider, queue_polls=0, run_polls=1000)
    recorder = Recorder(stop_when=lambda text: "processing" in text)
    with pytest.raises(E.Interrupted):
        run(build(), data_dir, fast, recorder)
    assert journal_row(data_dir, build()).phase == J.PENDING
    fake.run_polls = 0
    outcome = run(build(), data_dir, fast)
    assert outcome.resumed and outcome.seed == 9 and fake.billed == 1 and len(fake.requests("POST")) == 1
    assert run(build(), data_dir, fast).from_cache and fake.billed == 1


@pytest.mark.parametrize("build, provider", [
    (lambda: fal.hv15_t2v_job(prompt="a lighthouse", seed=9), "fal"),
    (lambda: wavespeed.hv15_i2v_job(image=IMAGE, seed=9), "wavespeed"),
], ids=["fal-t2v", "wavespeed-i2v"])
def test_lost_submit_answer_is_never_resubmitted(build, provider, provider_env, data_dir, fast):
    fake = provider_env(provider)
    fake.drop_after_submit = True
    for _ in range(2):
        with pytest.raises(E.SubmitUncertain):
            run(build(), data_dir, fast)
    assert len(fake.requests("POST")) == 1 and journal_row(data_dir, build()).phase == J.UNCERTAIN


def test_fingerprint_covers_every_input_and_the_image_pixels():
    base = fal.hv15_i2v_job(image=IMAGE, prompt="x", seed=1)
    assert fal.hv15_i2v_job(image=IMAGE.clone(), prompt="x", seed=1).fingerprint == base.fingerprint
    for kw in ({"num_frames": 120}, {"enable_prompt_expansion": False}, {"negative_prompt": "blur"},
               {"image": IMAGE.flip(1)}):
        assert fal.hv15_i2v_job(**{"image": IMAGE, "prompt": "x", "seed": 1, **kw}).fingerprint != base.fingerprint
    assert fal.hv15_t2v_job(prompt="x", seed=1).fingerprint != fal.t2v_job(prompt="x", seed=1).fingerprint
    a = wavespeed.hv15_t2v_job(prompt="x", duration=5)
    assert wavespeed.hv15_t2v_job(prompt="x", duration=8).fingerprint != a.fingerprint
