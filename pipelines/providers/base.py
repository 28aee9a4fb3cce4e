"""What every provider protocol shares: the job description, its fingerprint, input checks,
and the small interface the runner drives (submit, status, result, cancel)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

import httpx

from . import errors as E
from .http import Pause, RetryPolicy, error_for, same_origin
from .journal import JobRow
from .keys import KEY_VARIABLES, PROVIDER_NAMES


@dataclass
class Job:
    """One paid request: provider, model id and the JSON body, plus what identifies it."""

    provider: str
    model: str
    payload: dict
    seed: int | None = None
    basis: dict | None = None  # payload with images replaced by their pixel digests (defaults to payload)
    notes: tuple[str, ...] = ()  # what the user should know about what is sent (e.g. a downscaled image)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.provider, self.model, self.basis if self.basis is not None else self.payload)

    def check_sendable(self) -> None:
        """InvalidParameter unless the payload encodes as the JSON body httpx will send (UTF-8, no NaN).

        Run before anything is recorded as sent: an encoding error inside the submit would otherwise
        leave the job looking as if it might have reached the provider."""
        for name, value in self.payload.items():
            try:
                json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
                raise E.InvalidParameter(name, f"cannot be sent as JSON text ({type(exc).__name__}: {exc})") from None


def fingerprint(provider: str, model: str, params: dict) -> str:
    """sha256 of the canonical JSON of provider, model and parameters: equal inputs, equal job."""
    text = json.dumps({"provider": provider, "model": model, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- input checks

def check_text(name: str, value, *, required: bool = False, max_chars: int = 10000) -> str:
    if not isinstance(value, str):
        raise E.InvalidParameter(name, f"must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise E.InvalidParameter(name, f"holds a character that cannot be sent (an unpaired surrogate "
                                       f"{value[exc.start]!r} at position {exc.start}); remove it") from None
    if required and not value.strip():
        raise E.InvalidParameter(name, "is required and must not be empty")
    if len(value) > max_chars:
        raise E.InvalidParameter(name, f"is {len(value)} characters long; at most {max_chars} are allowed")
    return value


def check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise E.InvalidParameter(name, f"must be a whole number between {low} and {high}, got {value!r}")
    if not low <= int(value) <= high:
        raise E.InvalidParameter(name, f"must be between {low} and {high}, got {int(value)}")
    return int(value)


def check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise E.InvalidParameter(name, f"must be a number between {low} and {high}, got {value!r}")
    if not low <= float(value) <= high:
        raise E.InvalidParameter(name, f"must be between {low} and {high}, got {value}")
    return float(value)


def check_choice(name: str, value, allowed: tuple) -> object:
    if value not in allowed:
        raise E.InvalidParameter(name, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise E.InvalidParameter(name, f"must be true or false, got {value!r}")
    return value


def json_number(value: float) -> int | float:
    """7.0 -> 7: providers that validate integers accept it, providers that want floats accept it too."""
    return int(value) if float(value).is_integer() else value


# ----------------------------------------------------------------------------- protocol interface

@dataclass
class Submitted:
    request_id: str
    state: dict = field(default_factory=dict)  # URLs and details to resume with (no secrets)
    sync: bool = False                         # no queue here: the runner makes the synchronous call (`call_sync`)
    video_file: Path | None = None             # a synchronous answer that is the video itself, spooled to disk


@dataclass
class Status:
    phase: str                     # "queued" | "running" | "done" | "failed" | "cancelled"
    remote_status: str
    position: int | None = None
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    payload: dict | None = None    # the result itself, when the status answer already carries it


@dataclass
class Result:
    video_url: str | None = None
    video_file: Path | None = None  # a result answered with the video itself, spooled to disk
    video_size: int | None = None
    seed: int | None = None
    flagged: bool = False


class Protocol:
    """One provider's submit/poll/result/cancel. Subclasses set the class attributes and methods."""

    provider = ""            # "wavespeed" | "fal" | "segmind"
    expected_run_s = 120.0   # typical processing time, for the progress estimate
    can_cancel = False

    def __init__(self, base_url: str, key: str, *, policy: RetryPolicy, pause: Pause, redact: Callable[[object], str]):
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.policy = policy
        self.pause = pause
        self.redact = redact
        # Streams an open response whose body is the video into a temporary file (set by the runner).
        self.spool: Callable[[httpx.Response, str | None], Awaitable[Path]] | None = None

    @property
    def name(self) -> str:
        return PROVIDER_NAMES[self.provider]

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def api_url(self, url: str | None, fallback: str) -> str:
        """Use the URL the provider returned when it is on the configured host; otherwise build our own.

        The key is sent only to the configured host, so a URL pointing elsewhere is never followed.
        """
        if url and same_origin(url, self.base_url):
            return url
        return fallback

    @staticmethod
    def path_id(request_id: str | None) -> str:
        """A provider's request id as one URL path segment: '/', '?', '#' and the like are escaped."""
        return quote(str(request_id), safe="")

    def error(self, response: httpx.Response, action: str, request_id: str | None = None) -> E.ProviderError:
        return error_for(response, provider=self.name, redact=self.redact, action=action, request_id=request_id,
                         key_variable=KEY_VARIABLES[self.provider])

    def json_body(self, response: httpx.Response, action: str, request_id: str | None = None) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise E.ProviderError(f"{self.name}: {action}: the answer is not a JSON object", provider=self.name,
                                  request_id=request_id)
        return body

    def queued_submission(self, response: httpx.Response, url_fields: tuple[str, ...], **extra: str) -> Submitted:
        """A queue-style submit answer (`request_id` plus follow-up URLs). An answer without an id after
        the provider accepted the request may still be billed, so it is never resubmitted."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not request_id:
            raise E.SubmitUncertain(f"{self.name}: the submit was accepted (HTTP {response.status_code}) but the answer "
                                    "has no request_id; it may be billed. Not resubmitted automatically.",
                                    provider=self.name)
        state = {**extra, **{k: body[k] for k in url_fields if isinstance(body.get(k), str)}}
        return Submitted(str(request_id), state)

    async def submit(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        raise NotImplementedError

    async def status(self, client: httpx.AsyncClient, row: JobRow) -> Status:
        raise NotImplementedError

    async def result(self, client: httpx.AsyncClient, row: JobRow, status: Status) -> Result:
        raise NotImplementedError

    async def call_sync(self, client: httpx.AsyncClient, job: Job) -> Submitted:
        """The synchronous call, for a protocol whose `submit` answered `Submitted(sync=True)`."""
        raise NotImplementedError

    async def cancel(self, client: httpx.AsyncClient, row: JobRow) -> bool:
        return False
