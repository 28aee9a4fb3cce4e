"""The API nodes end to end against the fakes, their declared inputs, and the shipped API workflows."""

import json
import math
import sqlite3

import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.nodes import api, host
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers.keys import KEY_VARIABLES
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import KEYS, all_log_text

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("api_*.json"))


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HYVS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYVS_API_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("HYVS_API_BACKOFF", "0.01")
    return host.user_directory()


def defaults(cls):
    return {name: opts.get("default") for name, (kind, opts) in cls.INPUT_TYPES()["required"].items() if kind != "IMAGE"}


def test_every_input_has_a_tooltip_and_outputs_are_declared():
    for cls in api.NODE_CLASS_MAPPINGS.values():
        for name, (kind, opts) in cls.INPUT_TYPES()["required"].items():
            assert opts.get("tooltip"), (cls.__name__, name)
        assert cls.RETURN_TYPES == ("VIDEO", "IMAGE", "STRING") and len(cls.OUTPUT_TOOLTIPS) == 3
        assert cls.CATEGORY.startswith("HunyuanVideo Suite/") and cls.DESCRIPTION


def test_node_defaults_build_valid_jobs():
    image = torch.rand(1, 8, 8, 3)
    for cls in api.NODE_CLASS_MAPPINGS.values():
        params = {**defaults(cls), "prompt": "x"}
        params.pop("timeout_minutes")
        if "image" in cls.INPUT_TYPES()["required"]:
            params["image"] = image
        assert cls.build_job(**params).fingerprint


def test_is_changed_is_a_stable_string():
    cls = api.HYVSFalT2V
    a = cls.IS_CHANGED(**defaults(cls), unique_id="5")
    assert isinstance(a, str) and a == cls.IS_CHANGED(**defaults(cls), unique_id="9")
    assert a != cls.IS_CHANGED(**{**defaults(cls), "seed": 3})
    assert not (isinstance(a, float) and math.isnan(a))


def test_fal_t2v_node_runs_and_requeue_is_served_from_cache(provider_env, user_dir, caplog):
    fake = provider_env("fal", queue_polls=2, run_polls=1)
    node = api.HYVSFalT2V()
    params = {**defaults(api.HYVSFalT2V), "prompt": "a cat", "seed": 5}
    video, frames, info = node.generate(**params, unique_id="3")
    assert frames.dtype == torch.float32 and frames.shape == (6, 48, 64, 3) and 0 <= frames.min() <= frames.max() <= 1
    assert "request id" in info and "seed: 5" in info and KEYS["fal"] not in info
    components, _ = video.get_components()
    assert components.shape == frames.shape
    _, _, info2 = api.HYVSFalT2V().generate(**params, unique_id="3")
    assert "served from cache: yes" in info2 and fake.billed == 1
    journal = user_dir / "hunyuan_video_suite" / "api_jobs.sqlite3"
    dump = "\n".join(sqlite3.connect(journal).iterdump())
    assert KEYS["fal"] not in dump and KEYS["fal"] not in all_log_text(caplog)


def test_image_node_runs(provider_env, user_dir):
    fake = provider_env("wavespeed", queue_polls=0, run_polls=0)
    params = {**defaults(api.HYVSWaveSpeedCustomRef2V), "prompt": "waves", "resolution": "480p", "size": "832*480"}
    api.HYVSWaveSpeedCustomRef2V().generate(image=torch.rand(2, 12, 20, 3), **params)
    assert next(iter(fake.jobs.values()))["model"] == "wavespeed-ai/hunyuan-custom-ref2v-480p"


def test_bad_input_fails_before_any_request(provider_env, user_dir):
    fake = provider_env("segmind")
    params = {**defaults(api.HYVSSegmindT2V), "prompt": "x", "width": 2000}
    with pytest.raises(E.InvalidParameter, match="'width'"):
        api.HYVSSegmindT2V().generate(**params)
    assert fake.seen == []


def test_missing_key_names_env_and_config_file(user_dir, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    with pytest.raises(E.MissingKey, match="FAL_KEY.*api_keys.json"):
        api.HYVSFalT2V().generate(**{**defaults(api.HYVSFalT2V), "prompt": "x"})


def test_key_from_config_file(provider_env, user_dir, monkeypatch):
    fake = provider_env("segmind")
    monkeypatch.delenv("SEGMIND_API_KEY")
    (user_dir / "hunyuan_video_suite").mkdir(parents=True)
    (user_dir / "hunyuan_video_suite" / "api_keys.json").write_text(json.dumps({"SEGMIND_API_KEY": KEYS["segmind"]}))
    api.HYVSSegmindT2V().generate(**{**defaults(api.HYVSSegmindT2V), "prompt": "x"})
    assert fake.billed == 1


def test_interrupt_detaches_through_the_host(provider_env, user_dir):
    provider_env("wavespeed", queue_polls=1000)
    host.request_interrupt(True)
    try:
        with pytest.raises(host.Interrupted):
            api.HYVSWaveSpeedT2V().generate(**{**defaults(api.HYVSWaveSpeedT2V), "prompt": "x"})
    finally:
        host.request_interrupt(False)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_api_workflows_match_the_nodes(path):
    workflow = json.loads(path.read_text())
    types = [n["type"] for n in workflow["nodes"]]
    assert "SaveVideo" in types and workflow["version"] == 0.4
    ours = [n for n in workflow["nodes"] if n["type"].startswith("HYVS_")]
    assert len(ours) == 1
    cls = api.NODE_CLASS_MAPPINGS[ours[0]["type"]]
    required = cls.INPUT_TYPES()["required"]
    assert ("LoadImage" in types) == ("image" in required)
    widget_names = [n for n, (kind, _) in required.items() if kind != "IMAGE"]
    values = list(ours[0]["widgets_values"])
    seed_at = widget_names.index("seed")
    assert values.pop(seed_at + 1) == "fixed"
    params = dict(zip(widget_names, values, strict=True))
    params.pop("timeout_minutes")
    if "image" in required:
        params["image"] = torch.rand(1, 8, 8, 3)
    cls.build_job(**params)  # the saved values pass the provider's own checks


def test_no_key_in_workflows():
    # A workflow's Note may name where the key goes (the variables and the key file), nothing more.
    where_keys_go = [*KEY_VARIABLES.values(), "api_keys.json"]
    text = "\n".join(p.read_text() for p in (PACK_ROOT / "workflows").glob("*.json"))
    for name in where_keys_go:
        text = text.replace(name, "")
    for word in ("api_key", "fal_key", "x-api-key", "authorization", "bearer"):
        assert word.lower() not in text.lower()
