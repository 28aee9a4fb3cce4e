"""WaveSpeedAI protocol: `POST {base}/api/v3/{model_id}` -> prediction id -> poll `.../predictions/{id}/result`.

Answers are `{code, message, data: {id, status, outputs[], urls.get, has_nsfw_contents[], error,
timings.inference}}`; statuses created -> processing -> completed | failed (also cancelled,
timeout). There is no cancel endpoint: an interrupted job is detached and stays resumable.
The seed document puts the HunyuanCustom models on `/api/v2/`: for those we try v3 first and
fall back to v2 only when v3 answers 404 (a route that does not exist creates nothing).
"""

from __future__ import annotations

import httpx

from . import errors as E
from .base import (
    Job,
    Protocol,
    Result,
    Status,
    Submitted,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_text,
    json_number,
)
from .http import retrying, submit_once
from .journal import JobRow
from .media import upload_image

T2V_MODEL = "wavespeed-ai/hunyuan-video/t2v"
I2V_MODEL = "wavespeed-ai/hunyuan-video/i2v"
CUSTOM_MODELS = {"720p": "wavespeed-ai/hunyuan-custom-ref2v-720p", "480p": "wavespeed-ai/hunyuan-custom-ref2v-480p"}
SIZES = ("1280*720", "720*1280")
CUSTOM_SIZES = {"720p": ("1280*720", "720*1280"), "480p": ("832*480", "480*832")}
SEED_MAX = 2147483647
CUSTOM_SEED_MAX = 9999999999
_V2_MODELS = frozenset(CUSTOM_MODELS.values())
# HunyuanVideo 1.5 (SPEC-hv15 §9.2). I2V: every field from WaveSpeedAI's own llms.txt. T2V: no official schema
# was found; the fields are those third-party clients send, durations limited to the 5 and 8 s that both they
# and the I2V schema accept (the docs page also names 10 s).
HV15_T2V_MODEL = "wavespeed-ai/hunyuan-video-1.5/text-to-video"
HV15_I2V_MODEL = "wavespeed-ai/hunyuan-video-1.5/image-to-video"
HV15_SIZES = ("1280*720", "720*1280", "832*480", "480*832")
HV15_RESOLUTIONS = ("720p", "480p")
HV15_DURATIONS = (5, 8)


def t2v_job(*, prompt: str, size: str = "1280*720", num_inference_steps: int = 30, seed: int = -1,
            enable_safety_checker: bool = True) -> Job:
    seed = check_int("seed", seed, -1, SEED_MAX)
    payload = {
        "prompt": check_text("prompt", prompt, required=True),
        "size": check_choice("size", size, SIZES),
        "num_inference_steps": check_int("num_inference_steps", num_inference_steps, 2, 30),
        "seed": seed,
        "enable_safety_checker": check_bool("enable_safety_checker", enable_safety_checker),
    }
    return Job("wavespeed", T2V_MODEL, payload, seed=None if seed == -1 else seed)


def i2v_job(*, image, prompt: str = "", size: str = "1280*720", num_inference_steps: int = 30, duration: int = 5,
            seed: int = -1, enable_safety_checker: bool = True) -> Job:
    upload = upload_image(image)
    seed = check_int("seed", seed, -1, SEED_MAX)
    params = {
        "prompt": check_text("prompt", prompt),
        "size": check_choice("size", size, SIZES),
        "num_inference_steps": check_int("num_inference_steps", num_inference_steps, 1, 30),
        "duration": check_int("duration", duration, 5, 10),
        "seed": seed,
        "enable_safety_checker": check_bool("enable_safety_checker", enable_safety_checker),
    }
    return Job("wavespeed", I2V_MODEL, {**params, "image": upload.uri}, seed=None if seed == -1 else seed,
               basis={**params, "image": upload.digest}, notes=(upload.note,))


def custom_ref2v_job(*, image, prompt: str, resolution: str = "720p", size: str = "1280*720",
                     negative_prompt: str = "", guidance_scale: float = 7.5, flow_shift: float = 13.0, seed: int = -1,
                     enable_safety_checker: bool = True) -> Job:
    resolution = check_choice("resolution", resolution, tuple(CUSTOM_MODELS))
    upload = upload_image(image)
    seed = check_int("seed", seed, -1, CUSTOM_SEED_MAX)
    params = {
        "prompt": check_text("prompt", prompt, required=True),
        "negative_prompt": check_text("negative_prompt", negative_prompt),
        "size": check_choice("size", size, CUSTOM_SIZES[resolution]),
        "guidance_scale": json_number(check_float("guidance_scale", guidance_scale, 1.0, 10.0)),
        "flow_shift": json_number(check_float("flow_shift", flow_shift, 1.0, 20.0)),
        "seed": seed,
        "enable_safety_checker": check_bool("enable_safety_checker", enable_safety_checker),
    }
    return Job("wavespeed", CUSTOM_MODELS[resolution], {**params, "image": upload.uri},
               seed=None if seed == -1 else seed, basis={**params, "image": upload.digest}, notes=(upload.note,))


def _duration(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise E.InvalidParameter("duration", f"must be one of 5, 8 (seconds); got {value!r}")
    return int(check_choice("duration", int(value), HV15_DURATIONS))


def hv15_t2v_job(*, prompt: str, negative_prompt: str = "", size: str = "1280*720", duration: int = 5,
                 seed: int = -1) -> Job:
    """HunyuanVideo 1.5 text-to-video; seed -1 is sent as is (the provider picks)."""
    seed = check_int("seed", seed, -1, SEED_MAX)
    payload = {
        "prompt": check_text("prompt", prompt, required=True),
        "negative_prompt": check_text("negative_prompt", negative_prompt),
        "size": check_choice("size", size, HV15_SIZES),
        "duration": _duration(duration),
        "seed": seed,
    }
    return Job("wavespeed", HV15_T2V_MODEL, payload, seed=None if seed == -1 else seed)


def hv15_i2v_job(*, image, prompt: str = "", resolution: str = "720p", duration: int = 5, seed: int = -1) -> Job:
    """HunyuanVideo 1.5 image-to-video (the official fields only); the image goes as a PNG data URI."""
    upload = upload_image(image)
    seed = check_int("seed", seed, -1, SEED_MAX)
    params = {
        "prompt": check_text("prompt", prompt),
        "resolution": check_choice("resolution", resolution, HV15_RESOLUTIONS),
        "duration": _duration(duration),
        "seed": seed,
    }
    return Job("wavespeed", HV15_I2V_MODEL, {**params, "image": upload.uri}, seed=None if seed == -1 else seed,
               basis={**params, "image": upload.digest}, notes=(upload.note,))


_STATUS_PHASES = {"created": "queued", "pending": "queued", "queued": "queued", "processing": "running",
                  "completed": "done", "failed": "failed", "timeout": "failed", "cancelled": "cancelled",
                  "canceled": "cancelled"}


class WaveSpeed(Protocol):
    provider = "wavespeed"
    expected_run_s = 120.0

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def _data(self, response: httpx.Response, action: str, request_id: str | None = None) -> dict:
        """`data` of a 200 answer; a body `code` other than 200 is an error like the same HTTP status."""
        if response.status_code != 200:
            raise self.error(response, action, request_id)
        body = self.json_body(response, action, request_id)
        code = body.get("code", 200)
        if isinstance(code, int) and code != 200:
            raise self.error(httpx.Response(code, json=body), action, request_id)
        data = body.get("data")
        if not isinstance(data, dict):
            raise E.ProviderError(f"{self.name}: {action}: the answer has no data object", provider=self.name,
                                  request_id=request_id)
        return data

    async def submit(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        versions = ("v3", "v2") if job.model in _V2_MODELS else ("v3",)
        for version in versions:
            response = await submit_once(client, f"{self.base_url}/api/{version}/{job.model}", json=job.payload,
                                         headers=self.auth_headers(), policy=self.policy, pause=self.pause,
                                         provider=self.name)
            if response.status_code != 404:
                break
        if response.status_code in (502, 504):
            # A gateway error: the API behind it may have created (and billed) the task.
            raise E.SubmitUncertain(f"{self.name}: the submit got HTTP {response.status_code} from a gateway; the task "
                                    "may exist and be billed. Not resubmitted automatically: check your WaveSpeedAI "
                                    "dashboard, or change an input (e.g. the seed) to submit again.",
                                    provider=self.name, status=response.status_code)
        if response.status_code >= 300:
            raise self.error(response, "submit")
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(code, int) and code != 200:
            raise self.error(httpx.Response(code, json=body), "submit")  # refused: the body's code says why
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not data.get("id"):
            raise E.SubmitUncertain(f"{self.name}: the submit answer (HTTP {response.status_code}) has no task id; "
                                    "the task may exist and be billed. Not resubmitted automatically.",
                                    provider=self.name)
        get_url = (data.get("urls") or {}).get("get") if isinstance(data.get("urls"), dict) else None
        state = {"api": version, "safety": bool(job.payload.get("enable_safety_checker", True))}
        if isinstance(get_url, str):
            state["get_url"] = get_url
        return Submitted(str(data["id"]), state)

    async def status(self, client: httpx.AsyncClient, row: JobRow) -> Status:
        version = row.state.get("api", "v3")
        url = self.api_url(row.state.get("get_url"),
                           f"{self.base_url}/api/{version}/predictions/{self.path_id(row.request_id)}/result")
        response = await retrying(lambda: client.get(url, headers=self.auth_headers()), policy=self.policy,
                                  pause=self.pause, what="status", provider=self.name, request_id=row.request_id)
        data = self._data(response, "status", row.request_id)
        remote = str(data.get("status", "")).lower()
        phase = _STATUS_PHASES.get(remote)
        if phase is None:
            raise E.ProviderError(f"{self.name}: unknown status {remote!r} [request id {row.request_id}]",
                                  provider=self.name, request_id=row.request_id)
        error = self.redact(data.get("error")) if data.get("error") else None
        if remote == "timeout":
            error = f"the provider timed out the task{': ' + error if error else ''}"
        return Status(phase, remote, error=error, payload=data)

    async def result(self, client: httpx.AsyncClient, row: JobRow, status: Status) -> Result:
        data = status.payload or {}
        outputs = [o for o in data.get("outputs") or [] if isinstance(o, str) and o]
        flags = data.get("has_nsfw_contents") or []
        flagged = isinstance(flags, list) and any(flags)
        if flagged and (row.state.get("safety", True) or not outputs):
            return Result(flagged=True)
        if not outputs:
            raise E.JobFailed(f"{self.name}: the task completed without an output [request id {row.request_id}]",
                              provider=self.name, request_id=row.request_id)
        return Result(video_url=outputs[0])
