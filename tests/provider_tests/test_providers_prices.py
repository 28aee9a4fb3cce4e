"""The pack's price table: the price for each endpoint's settings against the providers' published rules,
the nodes' descriptions, the price shown before anything is sent, and what the info output says a run cost
(fresh, served from the cache, resumed)."""

import re

import pytest
import torch
from hunyuan_video_suite.nodes import api, host
from hunyuan_video_suite.pipelines.providers import fal, pricing, segmind, wavespeed
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures

IMAGE = torch.rand(1, 16, 16, 3)


def defaults(cls):
    required = cls.INPUT_TYPES()["required"]
    return {name: opts.get("default") for name, (kind, opts) in required.items() if kind != "IMAGE"}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HYVS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYVS_API_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("HYVS_API_BACKOFF", "0.01")
    return host.user_directory()


# ----------------------------------------------------------------------------- the published rules

# (job, expected price in USD or None where the provider publishes none)
CASES = [
    # WaveSpeedAI hunyuan-video/t2v: "Per video $0.40", whatever the steps and size
    ("ws-t2v-default", lambda: wavespeed.t2v_job(prompt="x"), 0.40),
    ("ws-t2v-2-steps-portrait", lambda: wavespeed.t2v_job(prompt="x", size="720*1280", num_inference_steps=2), 0.40),
    # WaveSpeedAI hunyuan-video/i2v: "Per run $0.40", whatever the duration and steps
    ("ws-i2v-5s", lambda: wavespeed.i2v_job(image=IMAGE), 0.40),
    ("ws-i2v-10s-1-step", lambda: wavespeed.i2v_job(image=IMAGE, duration=10, num_inference_steps=1), 0.40),
    # WaveSpeedAI HunyuanCustom: no price published
    ("ws-custom-720p", lambda: wavespeed.custom_ref2v_job(image=IMAGE, prompt="x"), None),
    ("ws-custom-480p", lambda: wavespeed.custom_ref2v_job(image=IMAGE, prompt="x", resolution="480p",
                                                          size="480*832"), None),
    # WaveSpeedAI HunyuanVideo 1.5 T2V: $0.02/s at 480p, $0.04/s at 720p
    ("ws-hv15-t2v-720p-5s", lambda: wavespeed.hv15_t2v_job(prompt="x"), 0.20),
    ("ws-hv15-t2v-720p-portrait-8s", lambda: wavespeed.hv15_t2v_job(prompt="x", size="720*1280", duration=8), 0.32),
    ("ws-hv15-t2v-480p-5s", lambda: wavespeed.hv15_t2v_job(prompt="x", size="832*480"), 0.10),
    ("ws-hv15-t2v-480p-portrait-8s", lambda: wavespeed.hv15_t2v_job(prompt="x", size="480*832", duration=8), 0.16),
    # WaveSpeedAI HunyuanVideo 1.5 I2V: no price published
    ("ws-hv15-i2v", lambda: wavespeed.hv15_i2v_job(image=IMAGE), None),
    ("ws-hv15-i2v-480p-8s", lambda: wavespeed.hv15_i2v_job(image=IMAGE, resolution="480p", duration=8), None),
    # fal hunyuan-video: $0.4 per video, pro mode 2x billing units
    ("fal-t2v", lambda: fal.t2v_job(prompt="x"), 0.40),
    ("fal-t2v-480p-85", lambda: fal.t2v_job(prompt="x", resolution="480p", num_frames="85"), 0.40),
    ("fal-t2v-pro", lambda: fal.t2v_job(prompt="x", pro_mode=True), 0.80),
    # fal hunyuan-video-image-to-video: $0.4 per video
    ("fal-i2v", lambda: fal.i2v_job(image=IMAGE, prompt="x"), 0.40),
    # fal HunyuanVideo 1.5: $0.075 per second of video (frames at 24 fps)
    ("fal-hv15-t2v-121", lambda: fal.hv15_t2v_job(prompt="x"), 121 / 24 * 0.075),
    ("fal-hv15-t2v-24", lambda: fal.hv15_t2v_job(prompt="x", num_frames=24, num_inference_steps=50), 0.075),
    ("fal-hv15-i2v-121", lambda: fal.hv15_i2v_job(image=IMAGE, prompt="x"), 121 / 24 * 0.075),
    ("fal-hv15-i2v-48", lambda: fal.hv15_i2v_job(image=IMAGE, prompt="x", num_frames=48), 0.15),
    # Segmind: GPU time; its page estimates ~$1.464 for its example settings only
    ("segmind-defaults", lambda: segmind.t2v_job(prompt="x"), 1.464),
    ("segmind-70-steps", lambda: segmind.t2v_job(prompt="x", infer_steps=70), None),
    ("segmind-720p", lambda: segmind.t2v_job(prompt="x", width=1280, height=720, seed=-1), None),
]


@pytest.mark.parametrize("build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_price_for_settings_follows_the_published_rule(build, expected):
    quote = pricing.price_of(build())
    if expected is None:
        assert quote.usd is None and not quote.published and "not published" in quote.text
    else:
        assert quote.usd == pytest.approx(expected) and quote.published
        assert pricing._usd(quote.usd) in quote.text


def test_price_text_says_how_it_was_counted():
    assert pricing.price_of(fal.t2v_job(prompt="x", pro_mode=True)).text == "$0.80 (pro mode, 2x $0.40)"
    assert pricing.price_of(wavespeed.hv15_t2v_job(prompt="x", duration=8)).text == "$0.32 (8 s x $0.04/s at 720p)"
    text = pricing.price_of(fal.hv15_t2v_job(prompt="x")).text
    assert text == "about $0.378 (5.04 s (121 frames at 24 fps) x $0.075/s at 480p)"
    assert "Segmind's estimate" in pricing.price_of(segmind.t2v_job(prompt="x")).text


def test_every_endpoint_a_node_can_call_is_in_the_table_with_its_source_and_date():
    models = {wavespeed.T2V_MODEL, wavespeed.I2V_MODEL, *wavespeed.CUSTOM_MODELS.values(), wavespeed.HV15_T2V_MODEL,
              wavespeed.HV15_I2V_MODEL, fal.T2V_MODEL, fal.I2V_MODEL, fal.HV15_T2V_MODEL, fal.HV15_I2V_MODEL,
              segmind.MODEL}
    assert models == set(pricing.RULES)
    for rule in pricing.RULES.values():
        assert rule.source.startswith("https://") and rule.says and re.fullmatch(r"\d{4}-\d{2}-\d{2}", rule.read)
        assert rule.kind in (pricing.PER_VIDEO, pricing.PER_SECOND, pricing.GPU_TIME, pricing.NOT_PUBLISHED)
        assert (rule.kind == pricing.PER_VIDEO) == (rule.usd is not None)
        assert (rule.kind == pricing.PER_SECOND) == bool(rule.by_resolution)
    assert pricing.rule_for("someone/else").kind == pricing.NOT_PUBLISHED


def test_every_node_description_states_its_price_rule_and_the_date():
    for name, cls in api.NODE_CLASS_MAPPINGS.items():
        params = {**defaults(cls), "prompt": "x"}
        params.pop("timeout_minutes")
        if "image" in cls.INPUT_TYPES()["required"]:
            params["image"] = IMAGE
        rule = pricing.rule_for(cls.build_job(**params).model)
        assert "Price" in cls.DESCRIPTION and rule.rule_text() in cls.DESCRIPTION, name
        assert f"read {pricing.READ}" in cls.DESCRIPTION, name
    assert "2x ($0.80)" in api.HYVSFalT2V.DESCRIPTION and "$0.04 at 720p" in api.HYVSWaveSpeedHV15T2V.DESCRIPTION
    assert "not published" in api.HYVSWaveSpeedCustomRef2V.DESCRIPTION
    assert "$0.80" in api.HYVSFalT2V.INPUT_TYPES()["required"]["pro_mode"][1]["tooltip"]


def test_table_markdown_has_a_row_per_endpoint():
    table = pricing.table_markdown().splitlines()
    assert len(table) == 2 + len(pricing.RULES)
    assert all(row.count("|") >= 5 and pricing.READ in row for row in table[2:])


# ----------------------------------------------------------------------------- before and after a run

@pytest.fixture
def progress(monkeypatch):
    """Progress texts the nodes send, each with the number of requests the fake had seen by then."""
    sent: list[tuple[str, int]] = []
    state = {"fake": None, "stop_on": None}

    def record(text, node_id):
        fake = state["fake"]
        sent.append((text, len(fake.requests("POST")) if fake else 0))
        if state["stop_on"] and state["stop_on"] in text:
            host.request_interrupt(True)

    monkeypatch.setattr(api.host, "send_progress_text", record)
    yield sent, state
    host.request_interrupt(False)


def test_fresh_run_shows_the_price_before_sending_and_its_cost_after(provider_env, user_dir, progress):
    sent, state = progress
    state["fake"] = fake = provider_env("fal", queue_polls=1, run_polls=1)
    params = {**defaults(api.HYVSFalT2V), "prompt": "a cat", "seed": 5, "pro_mode": True}
    _, _, info = api.HYVSFalT2V().generate(**params, unique_id="3")
    first, requests_then = sent[0]
    assert first == f"price by the pack's table (read {pricing.READ}): $0.80 (pro mode, 2x $0.40)"
    assert requests_then == 0  # shown before anything was sent
    assert all(text.endswith(first) for text, _ in sent)  # the price stays under the node while the job runs
    assert f"cost by the pack's price table (read {pricing.READ}): $0.80 (pro mode, 2x $0.40)" in info
    assert fake.billed == 1

    _, _, info = api.HYVSFalT2V().generate(**params, unique_id="3")
    assert f"served from the cache: $0 (paid earlier: $0.80, by the pack's price table read {pricing.READ})" in info
    assert "cost by the pack's price table" not in info and fake.billed == 1


def test_resumed_run_adds_no_charge(provider_env, user_dir, progress):
    sent, state = progress
    state["fake"] = fake = provider_env("wavespeed", queue_polls=1000)
    state["stop_on"] = "in queue"
    params = {**defaults(api.HYVSWaveSpeedHV15T2V), "prompt": "a lighthouse", "size": "832*480", "duration": 8,
              "seed": 9}
    with pytest.raises(host.Interrupted):
        api.HYVSWaveSpeedHV15T2V().generate(**params)
    host.request_interrupt(False)
    state["stop_on"] = None
    fake.queue_polls = 0
    _, _, info = api.HYVSWaveSpeedHV15T2V().generate(**params)
    assert (f"resumed a job submitted earlier: $0 now (its submit cost $0.16, by the pack's price table read "
            f"{pricing.READ})") in info
    assert fake.billed == 1


def test_unpublished_price_says_so_in_the_info(provider_env, user_dir, progress):
    sent, state = progress
    state["fake"] = provider_env("wavespeed", queue_polls=0, run_polls=0)
    params = {**defaults(api.HYVSWaveSpeedCustomRef2V), "prompt": "waves"}
    _, _, info = api.HYVSWaveSpeedCustomRef2V().generate(image=IMAGE, **params)
    assert "price not published" in sent[0][0]
    assert (f"cost by the pack's price table (read {pricing.READ}): price not published (WaveSpeedAI's page for "
            "this model shows none); see the provider's dashboard") in info


def test_cost_line_for_each_kind_of_run():
    job = wavespeed.t2v_job(prompt="x")
    read = pricing.READ
    assert pricing.cost_line(job, from_cache=False, resumed=False) == \
        f"cost by the pack's price table (read {read}): $0.40 (per video)"
    assert pricing.cost_line(job, from_cache=True, resumed=True) == \
        f"served from the cache: $0 (paid earlier: $0.40, by the pack's price table read {read})"
    assert pricing.cost_line(job, from_cache=False, resumed=True).startswith("resumed a job submitted earlier: $0 now")


def test_the_readme_lists_the_price_table():
    from conftest import PACK_ROOT

    assert pricing.table_markdown().rstrip("\n") in (PACK_ROOT / "README.md").read_text()
