"""fal.ai queue, as documented: submit -> {request_id, status_url, response_url, cancel_url};
status 202 while IN_QUEUE / IN_PROGRESS, 200 when COMPLETED; PUT cancel removes a queued job."""

from __future__ import annotations

import json
import uuid

from .server import MediaServer, ProviderFake, Reply, Seen, check_auth

HV15_MODELS = ("fal-ai/hunyuan-video-v1.5/text-to-video", "fal-ai/hunyuan-video-v1.5/image-to-video")
MODELS = ("fal-ai/hunyuan-video", "fal-ai/hunyuan-video-image-to-video", *HV15_MODELS)


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def hv15_errors(body: dict) -> list[dict]:
    """HunyuanVideo 1.5's documented fields (SPEC-hv15 §9.1), checked as fal's pydantic schema would: 422 details."""
    checks = {
        "negative_prompt": lambda v: isinstance(v, str),
        "num_inference_steps": lambda v: _int_in(v, 1, 50),
        "seed": lambda v: v is None or _int_in(v, 0, 2**63),
        "aspect_ratio": lambda v: v in ("16:9", "9:16"),
        "resolution": lambda v: v == "480p",
        "num_frames": lambda v: _int_in(v, 1, 121),
        "enable_prompt_expansion": lambda v: isinstance(v, bool),
    }
    return [{"loc": ["body", name], "msg": f"invalid value {body[name]!r}"}
            for name, ok in checks.items() if name in body and not ok(body[name])]


class FalFake(ProviderFake):
    def __init__(self, media: MediaServer, key: str, *, queue_polls: int = 1, run_polls: int = 1):
        super().__init__(media, key, queue_polls=queue_polls, run_polls=run_polls)
        self.result_status: int | None = None    # e.g. 404 (expired result) or 422
        self.foreign_urls = False                # answer URLs on another host (must not receive the key)
        self.prefix = ""
        self.log_text = "step {polls}"           # the log line IN_PROGRESS answers carry ({polls} filled in)

    @property
    def billed(self) -> int:
        return sum(1 for job in self.jobs.values() if not job["cancelled"])

    def route(self, seen: Seen) -> Reply:
        denied = check_auth(seen, "authorization", f"Key {self.key}")
        if denied:
            return denied
        path = seen.path[len(self.prefix):]
        parts = path.strip("/").split("/")
        if seen.method == "POST":
            return self._submit("/".join(parts), seen)
        if len(parts) >= 4 and parts[2] == "requests":
            job = self.jobs.get(parts[3])
            if job is None:
                return Reply(404, json={"detail": "Request not found"})
            if seen.method == "PUT" and parts[-1] == "cancel":
                return self._cancel(job)
            if seen.method == "GET" and parts[-1] == "status":
                return self._status(job, "logs=1" in seen.query)
            if seen.method == "GET" and len(parts) == 4:
                return self._result(job)
        return Reply(405, json={"detail": "Method not allowed"})

    def _submit(self, model: str, seen: Seen) -> Reply:
        if self.submit_replies:
            return self.submit_replies.pop(0)
        if model not in MODELS:
            return Reply(404, json={"detail": f"Application '{model}' not found"})
        body = json.loads(seen.body)
        missing = [k for k in (("prompt", "image_url") if "image" in model else ("prompt",)) if not body.get(k)]
        if model in HV15_MODELS and not missing and hv15_errors(body):
            return Reply(422, json={"detail": hv15_errors(body)})
        if missing or (model not in HV15_MODELS and not isinstance(body.get("num_frames", "129"), str)):
            return Reply(422, json={"detail": [{"loc": ["body", m], "msg": "field required"} for m in missing] or
                                    [{"loc": ["body", "num_frames"], "msg": "must be a string"}]})
        rid = str(uuid.uuid4())
        app = "/".join(model.split("/")[:2])
        base = "https://queue.fal.run" if self.foreign_urls else self.url + self.prefix
        self.jobs[rid] = {"id": rid, "model": model, "body": body, "polls": 0, "cancelled": False, "done": False}
        if self.drop_after_submit:
            return Reply(drop=True)
        return Reply(200, json={
            "request_id": rid, "status": "IN_QUEUE", "queue_position": self.queue_polls,
            "status_url": f"{base}/{app}/requests/{rid}/status", "response_url": f"{base}/{app}/requests/{rid}",
            "cancel_url": f"{base}/{app}/requests/{rid}/cancel"})

    def _state(self, job: dict) -> str:
        if job["polls"] < self.queue_polls:
            return "IN_QUEUE"
        if job["polls"] < self.queue_polls + self.run_polls:
            return "IN_PROGRESS"
        return "COMPLETED"

    def _status(self, job: dict, logs: bool) -> Reply:
        if self.status_glitches:
            code = self.status_glitches.pop(0)
            if isinstance(code, Reply):
                return code
            return Reply(code, json={"detail": "slow down" if code == 429 else "upstream error"},
                         headers={"retry-after": "0"} if code == 429 else {})
        state = self._state(job)
        job["polls"] += 1
        body = {"status": state, "request_id": job["id"], "response_url": f"{self.url}/x"}
        if state == "IN_QUEUE":
            body["queue_position"] = self.queue_polls - job["polls"]
        if logs and state != "IN_QUEUE":
            body["logs"] = [{"message": self.log_text.format(polls=job["polls"]), "level": "INFO", "timestamp": "2025-01-01T00:00:00"}]
        if state == "COMPLETED":
            job["done"] = True
            if self.fail_with:
                body["error"] = self.fail_with
            return Reply(200, json=body)
        return Reply(202, json=body)

    def _result(self, job: dict) -> Reply:
        if self.result_status:
            return Reply(self.result_status, json={"detail": "Request result not found or expired"})
        if self._state(job) != "COMPLETED":
            return Reply(400, json={"detail": "Request is still in progress"})
        url = self.media.add(job["id"] + ".mp4")
        seed = job["body"].get("seed", 1234)
        return Reply(200, json={"video": {"url": url, "content_type": "video/mp4", "file_name": "out.mp4",
                                          "file_size": len(self.media.video)}, "seed": seed})

    def _cancel(self, job: dict) -> Reply:
        if self._state(job) == "IN_QUEUE":
            job["cancelled"] = True
            return Reply(202, json={"status": "CANCELLATION_REQUESTED"})
        return Reply(400, json={"status": "ALREADY_COMPLETED"})
