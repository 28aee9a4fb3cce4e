"""fal.ai queue protocol: submit -> request id and URLs -> status (202 while running) -> result.

Documented: `POST {queue}/{model_id}` with `Authorization: Key <key>` answers
`{request_id, status_url, response_url, cancel_url}`; those URLs drop the model's sub-path, so
we use them as given (when they are on the configured host). Results are kept about an hour.
A queued job can be cancelled with `PUT cancel_url`. 5xx answers are not billed; 422 is.
"""

from __future__ import annotations

import httpx

from . import errors as E
from .base import Job, Protocol, Result, Status, Submitted, check_bool, check_choice, check_int, check_text
from .http import retrying, submit_once
from .journal import JobRow
from .media import upload_image

T2V_MODEL = "fal-ai/hunyuan-video"
I2V_MODEL = "fal-ai/hunyuan-video-image-to-video"
ASPECT_RATIOS = ("16:9", "9:16")
T2V_RESOLUTIONS = ("480p", "580p", "720p")
T2V_NUM_FRAMES = ("129", "85")
I2V_RESOLUTIONS = ("720p",)
I2V_NUM_FRAMES = ("129",)
SEED_MAX = 4294967295
# HunyuanVideo 1.5 (SPEC-hv15 §9.1): prompt, negative_prompt, num_inference_steps, seed and aspect_ratio from
# fal's own llms.txt; image_url, resolution, num_frames and enable_prompt_expansion from copies of its OpenAPI.
HV15_T2V_MODEL = "fal-ai/hunyuan-video-v1.5/text-to-video"
HV15_I2V_MODEL = "fal-ai/hunyuan-video-v1.5/image-to-video"
HV15_RESOLUTIONS = ("480p",)
HV15_STEPS = (1, 50)
HV15_NUM_FRAMES = (1, 121)


def _seed(seed) -> int | None:
    value = check_int("seed", seed, -1, SEED_MAX)
    return None if value == -1 else value


def t2v_job(*, prompt: str, seed: int = -1, pro_mode: bool = False, aspect_ratio: str = "16:9",
            resolution: str = "720p", num_frames: str = "129", enable_safety_checker: bool = True) -> Job:
    payload = {
        "prompt": check_text("prompt", prompt, required=True),
        "pro_mode": check_bool("pro_mode", pro_mode),
        "aspect_ratio": check_choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
        "resolution": check_choice("resolution", resolution, T2V_RESOLUTIONS),
        "num_frames": check_choice("num_frames", str(num_frames), T2V_NUM_FRAMES),
        "enable_safety_checker": check_bool("enable_safety_checker", enable_safety_checker),
    }
    value = _seed(seed)
    if value is not None:
        payload["seed"] = value
    return Job("fal", T2V_MODEL, payload, seed=value)


def i2v_job(*, image, prompt: str, seed: int = -1, aspect_ratio: str = "16:9", resolution: str = "720p",
            num_frames: str = "129", i2v_stability: bool = False) -> Job:
    upload = upload_image(image)
    params = {
        "prompt": check_text("prompt", prompt, required=True),
        "aspect_ratio": check_choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
        "resolution": check_choice("resolution", resolution, I2V_RESOLUTIONS),
        "num_frames": check_choice("num_frames", str(num_frames), I2V_NUM_FRAMES),
        "i2v_stability": check_bool("i2v_stability", i2v_stability),
    }
    value = _seed(seed)
    if value is not None:
        params["seed"] = value
    return Job("fal", I2V_MODEL, {**params, "image_url": upload.uri}, seed=value,
               basis={**params, "image_url": upload.digest}, notes=(upload.note,))


def _hv15_params(prompt, negative_prompt, num_inference_steps, aspect_ratio, resolution, num_frames,
                 enable_prompt_expansion) -> dict:
    return {
        "prompt": check_text("prompt", prompt, required=True),
        "negative_prompt": check_text("negative_prompt", negative_prompt),
        "num_inference_steps": check_int("num_inference_steps", num_inference_steps, *HV15_STEPS),
        "aspect_ratio": check_choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
        "resolution": check_choice("resolution", resolution, HV15_RESOLUTIONS),
        "num_frames": check_int("num_frames", num_frames, *HV15_NUM_FRAMES),
        "enable_prompt_expansion": check_bool("enable_prompt_expansion", enable_prompt_expansion),
    }


def hv15_t2v_job(*, prompt: str, negative_prompt: str = "", num_inference_steps: int = 28, seed: int = -1,
                 aspect_ratio: str = "16:9", resolution: str = "480p", num_frames: int = 121,
                 enable_prompt_expansion: bool = True) -> Job:
    """HunyuanVideo 1.5 text-to-video (480p only, at most 121 frames); seed -1 is left out (fal picks)."""
    payload = _hv15_params(prompt, negative_prompt, num_inference_steps, aspect_ratio, resolution, num_frames,
                           enable_prompt_expansion)
    value = _seed(seed)
    if value is not None:
        payload["seed"] = value
    return Job("fal", HV15_T2V_MODEL, payload, seed=value)


def hv15_i2v_job(*, image, prompt: str, negative_prompt: str = "", num_inference_steps: int = 28, seed: int = -1,
                 aspect_ratio: str = "16:9", resolution: str = "480p", num_frames: int = 121,
                 enable_prompt_expansion: bool = True) -> Job:
    """HunyuanVideo 1.5 image-to-video: the image goes as `image_url` (a PNG data URI), as `i2v_job` sends it."""
    upload = upload_image(image)
    params = _hv15_params(prompt, negative_prompt, num_inference_steps, aspect_ratio, resolution, num_frames,
                          enable_prompt_expansion)
    value = _seed(seed)
    if value is not None:
        params["seed"] = value
    return Job("fal", HV15_I2V_MODEL, {**params, "image_url": upload.uri}, seed=value,
               basis={**params, "image_url": upload.digest}, notes=(upload.note,))


def _app(model: str) -> str:
    """The model id without its sub-path ('fal-ai/flux/dev' -> 'fal-ai/flux'), as fal's queue URLs use it."""
    return "/".join(model.split("/")[:2])


class FalQueue(Protocol):
    provider = "fal"
    expected_run_s = 150.0
    can_cancel = True

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def _url(self, row: JobRow, name: str, suffix: str) -> str:
        fallback = f"{self.base_url}/{_app(row.model)}/requests/{self.path_id(row.request_id)}{suffix}"
        return self.api_url(row.state.get(name), fallback)

    async def submit(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        response = await submit_once(client, f"{self.base_url}/{job.model}", json=job.payload, headers=self.auth_headers(),
                                     policy=self.policy, pause=self.pause, provider=self.name)
        if response.status_code >= 300:
            raise self.error(response, "submit")
        return self.queued_submission(response, ("status_url", "response_url", "cancel_url"))

    async def status(self, client: httpx.AsyncClient, row: JobRow) -> Status:
        url = self._url(row, "status_url", "/status")
        response = await retrying(lambda: client.get(url, params={"logs": "1"}, headers=self.auth_headers()),
                                  policy=self.policy, pause=self.pause, what="status", provider=self.name,
                                  request_id=row.request_id)
        if response.status_code not in (200, 202):
            raise self.error(response, "status", row.request_id)
        body = self.json_body(response, "status", row.request_id)
        remote = str(body.get("status", "")).upper()
        logs = [str(item.get("message", "")) for item in body.get("logs") or [] if isinstance(item, dict)]
        if remote == "IN_QUEUE":
            position = body.get("queue_position")
            return Status("queued", remote, position if isinstance(position, int) else None, logs)
        if remote == "IN_PROGRESS":
            return Status("running", remote, logs=logs)
        if remote == "COMPLETED":
            if body.get("error"):
                return Status("failed", remote, logs=logs, error=self.redact(body.get("error")))
            return Status("done", remote, logs=logs)
        raise E.ProviderError(f"{self.name}: unknown status {remote!r} [request id {row.request_id}]",
                              provider=self.name, request_id=row.request_id)

    async def result(self, client: httpx.AsyncClient, row: JobRow, status: Status) -> Result:
        url = self._url(row, "response_url", "")
        response = await retrying(lambda: client.get(url, headers=self.auth_headers()), policy=self.policy,
                                  pause=self.pause, what="result", provider=self.name, request_id=row.request_id)
        if response.status_code == 422:
            error = self.error(response, "result", row.request_id)
            raise E.JobFailed(f"{error} (fal bills a job rejected with 422)", provider=self.name,
                              request_id=row.request_id, status=422)
        if response.status_code != 200:
            raise self.error(response, "result", row.request_id)
        body = self.json_body(response, "result", row.request_id)
        video = body.get("video") if isinstance(body.get("video"), dict) else {}
        flags = body.get("has_nsfw_concepts") or []
        if isinstance(flags, list) and any(flags) and not video.get("url"):
            return Result(flagged=True)
        if not video.get("url"):
            raise E.JobFailed(f"{self.name}: the result has no video URL [request id {row.request_id}]",
                              provider=self.name, request_id=row.request_id)
        size = video.get("file_size")
        seed = body.get("seed")
        return Result(video_url=str(video["url"]), video_size=size if isinstance(size, int) and size > 0 else None,
                      seed=seed if isinstance(seed, int) else None)

    async def cancel(self, client: httpx.AsyncClient, row: JobRow) -> bool:
        """PUT cancel_url once; True when fal accepted the cancellation (the queued job is removed)."""
        try:
            response = await client.put(self._url(row, "cancel_url", "/cancel"), headers=self.auth_headers(), timeout=10)
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 202)
