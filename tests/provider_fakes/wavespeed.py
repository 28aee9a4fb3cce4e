"""WaveSpeedAI, as documented: POST /api/v3/{model} -> {code, message, data:{id, status, urls.get, ...}};
GET /api/v3/predictions/{id}/result -> created -> processing -> completed | failed. No cancel."""

from __future__ import annotations

import json
import uuid
from urllib.parse import unquote

from .server import MediaServer, ProviderFake, Reply, Seen, check_auth

HV15_T2V = "wavespeed-ai/hunyuan-video-1.5/text-to-video"
HV15_I2V = "wavespeed-ai/hunyuan-video-1.5/image-to-video"
MODELS = {"wavespeed-ai/hunyuan-video/t2v", "wavespeed-ai/hunyuan-video/i2v",
          "wavespeed-ai/hunyuan-custom-ref2v-720p", "wavespeed-ai/hunyuan-custom-ref2v-480p", HV15_T2V, HV15_I2V}
_IMAGE_MODELS = {"wavespeed-ai/hunyuan-video/i2v", "wavespeed-ai/hunyuan-custom-ref2v-720p",
                 "wavespeed-ai/hunyuan-custom-ref2v-480p", HV15_I2V}


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def hv15_error(model: str, body: dict) -> str | None:
    """The first HunyuanVideo 1.5 field out of its range (SPEC-hv15 §9.2), as WaveSpeedAI's 400 message."""
    checks = {"prompt": lambda v: isinstance(v, str), "seed": lambda v: _int_in(v, -1, 2147483647),
              "duration": lambda v: v in (5, 8) and not isinstance(v, bool)}
    if model == HV15_T2V:
        checks.update(negative_prompt=lambda v: isinstance(v, str),
                      size=lambda v: v in ("1280*720", "720*1280", "832*480", "480*832"))
        if not str(body.get("prompt", "")).strip():
            return "prompt is required"
    else:
        checks.update(resolution=lambda v: v in ("480p", "720p"))
    for name, ok in checks.items():
        if name in body and not ok(body[name]):
            return f"invalid {name}: {body[name]!r}"
    return None


class WaveSpeedFake(ProviderFake):
    def __init__(self, media: MediaServer, key: str, *, queue_polls: int = 1, run_polls: int = 1):
        super().__init__(media, key, queue_polls=queue_polls, run_polls=run_polls)
        self.nsfw = False
        self.custom_only_v2 = False
        self.id_prefix = ""          # e.g. "a/b?c#" : ids that must be escaped in a URL path
        self.with_get_url = True     # False: answers carry no urls.get, so the client builds the URL itself
        self.output_url: str | None = None  # the video URL a completed task names (default: the media server)

    @property
    def billed(self) -> int:
        return len(self.jobs)

    def _wrap(self, data: dict, code: int = 200, message: str = "success") -> Reply:
        return Reply(code, json={"code": code, "message": message, "data": data})

    def route(self, seen: Seen) -> Reply:
        denied = check_auth(seen, "authorization", f"Bearer {self.key}")
        if denied:
            return Reply(401, json={"code": 401, "message": "Invalid API key", "data": None})
        parts = seen.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "api" or parts[1] not in ("v2", "v3"):
            return Reply(404, json={"code": 404, "message": "not found", "data": None})
        version, rest = parts[1], "/".join(parts[2:])
        if seen.method == "POST":
            return self._submit(version, rest, seen)
        if seen.method == "GET" and parts[2] == "predictions" and parts[-1] == "result":
            return self._result(unquote(parts[3]))
        return Reply(404, json={"code": 404, "message": "not found", "data": None})

    def _submit(self, version: str, model: str, seen: Seen) -> Reply:
        if self.submit_replies:
            return self.submit_replies.pop(0)
        if model not in MODELS or (self.custom_only_v2 and "custom" in model and version == "v3"):
            return Reply(404, json={"code": 404, "message": f"model {model} not found", "data": None})
        body = json.loads(seen.body)
        if model in _IMAGE_MODELS:
            if not str(body.get("image", "")).startswith(("data:image/", "http")):
                return Reply(400, json={"code": 400, "message": "image is required", "data": None})
        if model in (HV15_T2V, HV15_I2V) and hv15_error(model, body):
            return Reply(400, json={"code": 400, "message": hv15_error(model, body), "data": None})
        file = uuid.uuid4().hex
        rid = self.id_prefix + file
        self.jobs[rid] = {"id": rid, "file": file, "model": model, "body": body, "polls": 0}
        if self.drop_after_submit:
            return Reply(drop=True)
        return self._wrap(self._data(self.jobs[rid], "created", version))

    def _data(self, job: dict, status: str, version: str = "v3") -> dict:
        done = status == "completed"
        return {"id": job["id"], "model": job["model"], "status": status,
                "outputs": [self.output_url or self.media.add(job["file"] + ".mp4")] if done else [],
                "urls": ({"get": f"{self.url}/api/{version}/predictions/{job['id']}/result"}
                         if self.with_get_url else {}),
                "has_nsfw_contents": [self.nsfw] if done else [], "created_at": "2025-01-01T00:00:00Z",
                "error": self.fail_with if status == "failed" else "", "timings": {"inference": 1234 if done else 0}}

    def _result(self, rid: str) -> Reply:
        if self.status_glitches:
            code = self.status_glitches.pop(0)
            if isinstance(code, Reply):
                return code
            return Reply(code, json={"code": code, "message": "busy", "data": None},
                         headers={"retry-after": "0"} if code == 429 else {})
        job = self.jobs.get(rid)
        if job is None or self.expired:
            return Reply(404, json={"code": 404, "message": "prediction not found", "data": None})
        job["polls"] += 1
        if job["polls"] <= self.queue_polls:
            status = "created"
        elif job["polls"] <= self.queue_polls + self.run_polls:
            status = "processing"
        else:
            status = "failed" if self.fail_with else "completed"
        return self._wrap(self._data(job, status))
