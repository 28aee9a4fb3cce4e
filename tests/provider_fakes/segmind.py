"""Segmind, as documented: async POST /v2/hunyuan-video -> {request_id, status_url, response_url},
statuses QUEUED/PROCESSING/COMPLETED/FAILED; sync POST /v1/hunyuan-video answers the MP4 itself."""

from __future__ import annotations

import json
import uuid

from .server import MediaServer, ProviderFake, Reply, Seen, check_auth

LIMITS = {"width": (1, 1280), "height": (1, 1280), "video_length": (1, 129), "infer_steps": (1, 70),
          "flow_shift": (1, 15), "embedded_guidance_scale": (1, 10)}


class SegmindFake(ProviderFake):
    def __init__(self, media: MediaServer, key: str, *, queue_polls: int = 1, run_polls: int = 1):
        super().__init__(media, key, queue_polls=queue_polls, run_polls=run_polls)
        self.v2_enabled = True
        self.sync_style: dict = {}        # extra Reply fields for the synchronous answer (e.g. a drip)
        self.sync_cut: float = 1.0        # fraction of the MP4 the synchronous answer carries

    @property
    def billed(self) -> int:
        return sum(1 for job in self.jobs.values() if not job.get("failed"))

    def route(self, seen: Seen) -> Reply:
        denied = check_auth(seen, "x-api-key", self.key)
        if denied:
            return denied
        parts = seen.path.strip("/").split("/")
        if seen.method == "POST" and parts == ["v1", "hunyuan-video"]:
            return self._submit(seen, sync=True)
        if seen.method == "POST" and parts == ["v2", "hunyuan-video"] and self.v2_enabled:
            return self._submit(seen, sync=False)
        if seen.method == "GET" and parts[:2] == ["v2", "requests"] and len(parts) >= 3:
            return self._read(parts[2], status_only=parts[-1] == "status")
        return Reply(404, json={"error": "Not Found"})

    def _submit(self, seen: Seen, sync: bool) -> Reply:
        if self.submit_replies:
            return self.submit_replies.pop(0)
        body = json.loads(seen.body)
        if not body.get("prompt"):
            return Reply(400, json={"error": "prompt is required"})
        for name, (low, high) in LIMITS.items():
            if name in body and not low <= body[name] <= high:
                return Reply(400, json={"error": f"{name} must be between {low} and {high}"})
        rid = str(uuid.uuid4())
        self.jobs[rid] = {"id": rid, "body": body, "polls": 0}
        if self.drop_after_submit:
            return Reply(drop=True)
        if sync:
            body = self.media.video[:int(len(self.media.video) * self.sync_cut)]
            return Reply(200, body=body, headers={"content-type": "video/mp4", "x-request-id": rid,
                                                  "x-remaining-credits": "12.5"}, **self.sync_style)
        return Reply(200, json={"request_id": rid, "status": "QUEUED",
                                "status_url": f"{self.url}/v2/requests/{rid}/status",
                                "response_url": f"{self.url}/v2/requests/{rid}"})

    def _read(self, rid: str, status_only: bool) -> Reply:
        if self.status_glitches:
            return self.status_glitches.pop(0)
        job = self.jobs.get(rid)
        if job is None or self.expired:
            return Reply(404, json={"error": "Request not found or expired"})
        if status_only:
            job["polls"] += 1
        polls = job["polls"]
        if polls <= self.queue_polls:
            return Reply(200, json={"request_id": rid, "status": "QUEUED"})
        if polls <= self.queue_polls + self.run_polls:
            return Reply(200, json={"request_id": rid, "status": "PROCESSING"})
        if self.fail_with:
            job["failed"] = True
            return Reply(422, json={"status": "FAILED", "error": self.fail_with, "metrics": {"total_time": 3}})
        if status_only:
            return Reply(200, json={"request_id": rid, "status": "COMPLETED"})
        return Reply(200, json={"request_id": rid, "status": "COMPLETED", "output": self.media.add(rid + ".mp4"),
                                "metrics": {"cost": 1.46, "remaining_credits": 10.0}})
