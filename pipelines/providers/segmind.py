"""Segmind protocol. Async v2 first: `POST {base}/v2/hunyuan-video` -> `{request_id, status_url,
response_url}`, statuses QUEUED/PROCESSING/COMPLETED/FAILED, records kept about an hour.

When v2 answers 404 (not offered on that host; a 404 creates nothing and only 200 is billed) the
runner falls back to the synchronous `POST {base}/v1/hunyuan-video`, whose 200 answer is the MP4
itself (streamed to disk). That call has no request id to resume with: the runner journals it
before it starts, so a crash during it is reported as "may have been billed, result lost" and
never silently paid again. Segmind has no cancel endpoint: an interrupted v2 job is detached
and stays resumable.
"""

from __future__ import annotations

import random

import httpx

from . import errors as E
from .base import Job, Protocol, Result, Status, Submitted, check_float, check_int, check_text, json_number
from .http import is_video_type, retrying, submit_once
from .journal import JobRow

MODEL = "hunyuan-video"
DEFAULT_NEGATIVE_PROMPT = "Aerial view, overexposed, low quality, deformation"
DEFAULT_SEED = 96501778
SEED_MAX = 4294967295
SYNC_TIMEOUT_S = 900.0


def t2v_job(*, prompt: str, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT, seed: int = DEFAULT_SEED,
            width: int = 854, height: int = 480, video_length: int = 77, infer_steps: int = 40, flow_shift: int = 7,
            embedded_guidance_scale: float = 6.0) -> Job:
    """seed -1 draws a seed here, so the request always carries a valid one and the info can report it;
    the fingerprint keeps -1, so a re-queue of the same inputs resumes the recorded job."""
    seed = check_int("seed", seed, -1, SEED_MAX)
    params = {
        "prompt": check_text("prompt", prompt, required=True),
        "negative_prompt": check_text("negative_prompt", negative_prompt),
        "seed": seed,
        "width": check_int("width", width, 1, 1280),
        "height": check_int("height", height, 1, 1280),
        "video_length": check_int("video_length", video_length, 1, 129),
        "infer_steps": check_int("infer_steps", infer_steps, 1, 70),
        "flow_shift": check_int("flow_shift", flow_shift, 1, 15),
        "embedded_guidance_scale": json_number(check_float("embedded_guidance_scale", embedded_guidance_scale, 1.0, 10.0)),
    }
    used = random.SystemRandom().randint(0, SEED_MAX) if seed == -1 else seed
    return Job("segmind", MODEL, {**params, "seed": used}, seed=used, basis=params)


_STATUS_PHASES = {"QUEUED": "queued", "PENDING": "queued", "PROCESSING": "running", "IN_PROGRESS": "running",
                  "COMPLETED": "done", "SUCCEEDED": "done", "FAILED": "failed", "ERROR": "failed",
                  "CANCELLED": "cancelled", "CANCELED": "cancelled"}
_URL_KEYS = ("output", "outputs", "video", "video_url", "output_url", "url", "result", "data")
_API_URL_KEYS = frozenset({"status_url", "response_url", "cancel_url", "webhook_url"})


def _find_url(value, depth: int = 0) -> str | None:
    """The first http(s) URL in a result body, looking at the usual output keys first."""
    if depth > 4:
        return None
    if isinstance(value, str):
        return value if value.startswith(("http://", "https://")) else None
    if isinstance(value, list):
        return next((u for u in (_find_url(v, depth + 1) for v in value) if u), None)
    if isinstance(value, dict):
        keys = [k for k in _URL_KEYS if k in value] + [k for k in value if k not in _URL_KEYS and k not in _API_URL_KEYS]
        return next((u for u in (_find_url(value[k], depth + 1) for k in keys) if u), None)
    return None


class Segmind(Protocol):
    provider = "segmind"
    expected_run_s = 211.0

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._key}

    async def submit(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        response = await submit_once(client, f"{self.base_url}/v2/{job.model}", json=job.payload,
                                     headers=self.auth_headers(), policy=self.policy, pause=self.pause,
                                     provider=self.name)
        if response.status_code == 404:
            return Submitted("", {"api": "v1"}, sync=True)
        if response.status_code >= 300:
            raise self.error(response, "submit")
        return self.queued_submission(response, ("status_url", "response_url"), api="v2")

    async def call_sync(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        """The v1 call: its 200 answer (billed) is the MP4, streamed to disk; any other answer is not billed."""
        response = await submit_once(client, f"{self.base_url}/v1/{job.model}", json=job.payload, stream=True,
                                     headers=self.auth_headers(), policy=self.policy, pause=self.pause,
                                     provider=self.name, timeout=httpx.Timeout(SYNC_TIMEOUT_S, connect=10))
        try:
            request_id = response.headers.get("x-request-id") or ""
            if response.status_code != 200:
                await response.aread()
                raise self.error(response, "submit")
            return Submitted(request_id, {"api": "v1"}, video_file=await self.spool(response, request_id or None))
        finally:
            await response.aclose()

    async def status(self, client: httpx.AsyncClient, row: JobRow) -> Status:
        url = self.api_url(row.state.get("status_url"),
                           f"{self.base_url}/v2/requests/{self.path_id(row.request_id)}/status")
        response = await retrying(lambda: client.get(url, headers=self.auth_headers()), policy=self.policy,
                                  pause=self.pause, what="status", provider=self.name, request_id=row.request_id)
        body = None
        if response.status_code in (200, 422):
            try:
                body = response.json()
            except ValueError:
                body = None
        if not isinstance(body, dict) or "status" not in body:
            raise self.error(response, "status", row.request_id)
        remote = str(body["status"]).upper()
        phase = _STATUS_PHASES.get(remote)
        if phase is None:
            raise E.ProviderError(f"{self.name}: unknown status {remote!r} [request id {row.request_id}]",
                                  provider=self.name, request_id=row.request_id)
        error = body.get("error") or body.get("message")
        return Status(phase, remote, error=self.redact(error) if error else None)

    async def result(self, client: httpx.AsyncClient, row: JobRow, status: Status) -> Result:
        url = self.api_url(row.state.get("response_url"), f"{self.base_url}/v2/requests/{self.path_id(row.request_id)}")
        response = await retrying(lambda: client.send(client.build_request("GET", url, headers=self.auth_headers()),
                                                      stream=True),
                                  policy=self.policy, pause=self.pause, what="result", provider=self.name,
                                  request_id=row.request_id)
        try:
            if response.status_code == 200 and is_video_type(response):
                return Result(video_file=await self.spool(response, row.request_id))
            await response.aread()
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise self.error(response, "result", row.request_id)
        body = self.json_body(response, "result", row.request_id)
        if str(body.get("status", "")).upper() == "FAILED":
            raise E.JobFailed(f"{self.name}: the job failed [request id {row.request_id}]: "
                              f"{self.redact(body.get('error') or '')}", provider=self.name, request_id=row.request_id)
        url = _find_url(body)
        if url is None:
            raise E.JobFailed(f"{self.name}: the result has no video URL [request id {row.request_id}]",
                              provider=self.name, request_id=row.request_id)
        return Result(video_url=url)
