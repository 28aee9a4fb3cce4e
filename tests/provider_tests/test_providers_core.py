"""Shared provider pieces: reset headers, keys and redaction, the journal, running from inside an event loop."""

import asyncio
import email.utils
import json
import logging

import httpx
import pytest
from hunyuan_video_suite.pipelines.providers import errors as E
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers.base import fingerprint
from hunyuan_video_suite.pipelines.providers.http import rate_limit_wait, same_origin
from hunyuan_video_suite.pipelines.providers.keys import api_key, base_url, install_log_redaction
from hunyuan_video_suite.pipelines.providers.runner import run_blocking

NOW = 1_700_000_000.0


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": email.utils.formatdate(NOW + 12, usegmt=True)}, 12.0),
    ({"x-rate-limit-reset-at-utc": "2023-11-14T22:13:40Z"}, 20.0),
    ({"x-rate-limit-reset-at-utc": str(int(NOW + 5))}, 5.0),
    ({"x-ratelimit-reset": str(NOW + 3)}, 3.0),
    ({"x-ratelimit-reset": "4"}, 4.0),
    ({}, None),
])
def test_rate_limit_wait_reads_reset_headers(headers, seconds):
    wait = rate_limit_wait(httpx.Response(429, headers=headers), now=NOW)
    assert wait == seconds if seconds is None else wait == pytest.approx(seconds, abs=1.0)


def test_same_origin_guards_where_the_key_goes():
    assert same_origin("https://queue.fal.run/fal-ai/x/requests/1/status", "https://queue.fal.run")
    assert not same_origin("https://evil.example/fal-ai/x", "https://queue.fal.run")
    assert not same_origin("http://queue.fal.run/x", "https://queue.fal.run")
    assert same_origin("http://127.0.0.1:8000/p/x", "http://127.0.0.1:8000/p")


def test_env_wins_over_config_file_and_base_urls(tmp_path, monkeypatch):
    (tmp_path / "api_keys.json").write_text(json.dumps({"FAL_KEY": "from-file", "SEGMIND_BASE_URL": "http://proxy:9/sg/"}))
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("SEGMIND_BASE_URL", raising=False)
    monkeypatch.delenv("WAVESPEED_BASE_URL", raising=False)
    assert api_key("fal", tmp_path) == "from-file"
    monkeypatch.setenv("FAL_KEY", "from-env")
    assert api_key("fal", tmp_path) == "from-env"
    assert base_url("segmind", tmp_path) == "http://proxy:9/sg"
    assert base_url("wavespeed", tmp_path) == "https://api.wavespeed.ai"
    monkeypatch.setenv("WAVESPEED_BASE_URL", "ftp://nope")
    with pytest.raises(E.ProviderError, match="WAVESPEED_BASE_URL"):
        base_url("wavespeed", tmp_path)


def test_broken_config_file_error_does_not_echo_its_content(tmp_path, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    (tmp_path / "api_keys.json").write_text('{"FAL_KEY": "SECRET-in-broken-json"')
    with pytest.raises(E.ProviderError) as info:
        api_key("fal", tmp_path)
    assert "SECRET" not in str(info.value) and "api_keys.json" in str(info.value)


def test_loaded_keys_are_redacted_from_logs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SEGMIND_API_KEY", "SG_LEAKY_SECRET_1")
    key = api_key("segmind", tmp_path)
    install_log_redaction()
    caplog.set_level(logging.INFO)
    logging.getLogger("hunyuan_video_suite.providers").info("header was %s", key)
    logging.getLogger("httpx").info("x-api-key: %s", key)
    assert "SG_LEAKY_SECRET_1" not in caplog.text and "***" in caplog.text


def test_journal_is_durable_and_keeps_history(tmp_path):
    path = tmp_path / "j.sqlite3"
    journal = J.Journal(path)
    row, mine = journal.claim("fp1", "me", 60, provider="fal", model="fal-ai/hunyuan-video",
                              base_url="https://queue.fal.run", seed=5)
    assert mine and row.phase == J.NEW
    row = journal.restart(row, 5)
    journal.update(row, "submitted", phase=J.PENDING, request_id="r-1", state={"status_url": "u"})
    journal.update(row, None, remote_status="IN_QUEUE")
    again = J.Journal(path).get("fp1")
    assert (again.phase, again.request_id, again.state, again.remote_status) == (J.PENDING, "r-1", {"status_url": "u"},
                                                                                 "IN_QUEUE")
    assert [e["phase"] for e in journal.events("fp1")] == [J.SUBMITTING, J.PENDING, J.PENDING]
    assert journal.get("nope") is None


def test_fingerprint_is_canonical():
    assert fingerprint("fal", "m", {"a": 1, "b": "x"}) == fingerprint("fal", "m", {"b": "x", "a": 1})
    assert fingerprint("fal", "m", {"a": 1}) != fingerprint("fal", "m", {"a": 2})


def test_run_blocking_works_inside_a_running_loop():
    async def inner():
        await asyncio.sleep(0)
        return 42

    async def outer():
        return run_blocking(inner)

    assert run_blocking(inner) == 42
    assert asyncio.run(outer()) == 42
