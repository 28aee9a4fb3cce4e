"""HTTP rules shared by all providers: reads are retried, submits are not.

httpx has no retry policy for HTTP statuses (its `retries` only covers connection set-up), so the
loop below is ours: it backs off exponentially on network errors and 5xx, and on 429 it waits as
long as the provider's reset header says (`Retry-After`, Segmind's `x-rate-limit-reset-at-utc`,
`x-ratelimit-reset`). A submit is sent once; it is repeated only when it certainly never reached
the provider (the connection could not be opened) or the provider refused it with 429.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

import httpx

from . import errors as E

log = logging.getLogger("hunyuan_video_suite.providers")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Pause = Callable[[float], Awaitable[None]]


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_rate_wait_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def wait(self, response: httpx.Response, attempt: int) -> float:
        """How long to wait before trying again after `response` (429 reset headers, else the backoff)."""
        reset = rate_limit_wait(response) if response.status_code == 429 else None
        return self.backoff(attempt) if reset is None else min(reset, self.max_rate_wait_s)


MAX_RESET_S = 86400.0  # a reset further away than a day is not believed: the normal backoff applies


def rate_limit_wait(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait according to the response's reset headers, or None when they give no usable wait.

    Providers and gateways send odd values: `nan`, `inf`, negative numbers, instants in the past or
    years away, text that is neither a number nor a date. None of those is a wait: they fall back to
    the caller's normal backoff (a `nan` wait would otherwise turn the retry loop into a busy loop).
    """
    now = time.time() if now is None else now
    for name, as_delay in _RESET_HEADERS:
        value = response.headers.get(name, "").strip()
        if not value:
            continue
        delay = as_delay(value) if as_delay else None
        if delay is None:
            at = _instant(value)
            delay = None if at is None else at - now
        if delay is not None and math.isfinite(delay) and 0.0 <= delay <= MAX_RESET_S:
            return delay
    return None


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _delay_or_epoch(value: str) -> float | None:
    """Small numbers are a delay in seconds; large ones an epoch timestamp (left to `_instant`)."""
    number = _number(value)
    return None if number is None or number > 1e9 else number


def _instant(value: str) -> float | None:
    """An epoch (seconds or milliseconds), ISO 8601 or HTTP date as epoch seconds; None for anything else."""
    number = _number(value)
    if number is not None:
        return number / 1000.0 if number > 1e12 else number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


# Each header, and how to read it as a delay first (else it is read as an instant).
_RESET_HEADERS = (("retry-after", _number), ("x-rate-limit-reset-at-utc", None), ("x-ratelimit-reset", _delay_or_epoch),
                  ("ratelimit-reset", _delay_or_epoch), ("x-rate-limit-reset", _delay_or_epoch))


async def retrying(
    send: Callable[[], Awaitable[httpx.Response]], *, policy: RetryPolicy, pause: Pause, what: str, provider: str,
    request_id: str | None = None,
) -> httpx.Response:
    """Call `send` until it answers something other than 429/5xx or the attempts run out.

    Returns the last response (the caller maps an error status to a typed error); raises
    ProviderUnavailable when the network failed on every attempt.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            response = await send()
        except httpx.TransportError as exc:
            if attempt == policy.attempts:
                raise E.ProviderUnavailable(
                    f"{provider}: {what} failed: network error ({type(exc).__name__}) after {attempt} tries",
                    provider=provider, request_id=request_id,
                ) from None
            delay = policy.backoff(attempt)
            log.info("%s: %s: %s, retrying in %.1f s", provider, what, type(exc).__name__, delay)
        else:
            if response.status_code not in RETRY_STATUSES or attempt == policy.attempts:
                return response
            await response.aclose()
            delay = policy.wait(response, attempt)
            log.info("%s: %s: HTTP %d, retrying in %.1f s", provider, what, response.status_code, delay)
        await pause(delay)
    raise AssertionError("unreachable")


async def submit_once(
    client: httpx.AsyncClient, url: str, *, policy: RetryPolicy, pause: Pause, provider: str, stream: bool = False,
    **kwargs,
) -> httpx.Response:
    """POST a paid job. Raises SubmitUncertain when it may have reached the provider without an answer.

    A 429 answer means the provider did not accept the job: it is sent again after the reset wait, and a
    429 that outlasts the attempts is returned (the caller reports it as not accepted, never as billed).
    With `stream=True` the answer's body is left unread (the caller streams it and closes the response).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            response = await client.send(client.build_request("POST", url, **kwargs), stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # The connection never opened: nothing was sent, so trying again cannot bill twice.
            if attempt == policy.attempts:
                raise E.ProviderUnavailable(
                    f"{provider}: cannot connect ({type(exc).__name__}); the job was not sent. Re-queue to try again.",
                    provider=provider,
                ) from None
            await pause(policy.backoff(attempt))
            continue
        except httpx.TransportError as exc:
            raise E.SubmitUncertain(
                f"{provider}: the connection failed ({type(exc).__name__}) after the job was sent, so it may have "
                "been accepted and billed. It is not resubmitted automatically: check your dashboard at the "
                "provider. To submit it again anyway, change an input (e.g. the seed) and queue again.",
                provider=provider,
            ) from None
        if response.status_code == 429 and attempt < policy.attempts:
            await response.aclose()
            await pause(policy.wait(response, attempt))
            continue
        return response
    raise AssertionError("unreachable")


MAX_ANSWER_BYTES = 8 << 20  # an API answer is a few KB of JSON; a larger one is refused, not held in memory


def is_video_type(response: httpx.Response) -> bool:
    """A body that is a video, judged from the headers before it is read (such bodies are streamed to disk)."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind.startswith("video/") or kind in ("application/octet-stream", "binary/octet-stream")


class AnswerTooLarge(httpx.ReadError):
    """An answer body beyond its limit: reading stops there (a transport error, so a submit stays uncertain)."""


class _Capped(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int):
        self._inner, self._limit = inner, limit

    async def __aiter__(self):
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise AnswerTooLarge(f"the answer is larger than {self._limit} bytes; not read further")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def answer_limit(video_bytes: int) -> Callable[[httpx.Response], Awaitable[None]]:
    """A response hook for API clients that bounds every body read into memory (MAX_ANSWER_BYTES) and
    every video body (`video_bytes` plus slack, so the streaming writer's own cap and message come first)."""

    async def cap(response: httpx.Response) -> None:
        limit = video_bytes + (1 << 20) if is_video_type(response) else MAX_ANSWER_BYTES
        response.stream = _Capped(response.stream, limit)

    return cap


def provider_message(response: httpx.Response, redact: Callable[[object], str]) -> str:
    """The provider's own error text (JSON `message`/`error`/`detail`), shortened and redacted."""
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("message", "error", "detail", "error_description", "msg"):
            value = body.get(name)
            if isinstance(value, list):
                value = "; ".join(
                    f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}" if isinstance(item, dict)
                    else str(item) for item in value
                )
            if isinstance(value, dict):
                value = value.get("message") or value.get("msg") or str(value)
            if value:
                text = str(value)
                break
    if not text:
        content_type = response.headers.get("content-type", "")
        text = response.text if content_type.startswith(("text/plain", "application/json")) else ""
    return redact(text.strip()[:500])


_CREDIT_WORDS = ("balance", "credit", "insufficient", "exhausted", "locked", "spend limit", "payment", "quota")


def error_for(
    response: httpx.Response, *, provider: str, redact: Callable[[object], str], action: str,
    request_id: str | None = None, key_variable: str = "",
) -> E.ProviderError:
    """The typed error for an HTTP error answer to `action` ('submit', 'status', 'result', ...)."""
    code = response.status_code
    message = provider_message(response, redact)
    suffix = f" [request id {request_id}]" if request_id else ""
    detail = f": {message}" if message else ""
    lowered = message.lower()
    if code == 401:
        cls, text = E.AuthenticationFailed, f"invalid or missing API key (HTTP 401; check {key_variable})"
    elif code == 402 or code == 406 or (code == 403 and any(w in lowered for w in _CREDIT_WORDS)):
        cls, text = E.InsufficientCredits, f"insufficient credits or spend limit reached (HTTP {code})"
    elif code == 403:
        cls, text = E.AuthenticationFailed, f"forbidden for this key (HTTP 403; check {key_variable})"
    elif code in (404, 410) and action != "submit":
        cls, text = E.ResultExpired, f"{action}: the provider no longer knows this job or its result (HTTP {code})"
    elif code in (400, 404, 405, 413, 422):
        cls, text = E.BadRequest, f"{action} rejected: bad request (HTTP {code})"
    elif code == 429:
        cls, text = E.RateLimited, "rate limited (HTTP 429) even after waiting for the reset; try again later"
    elif code >= 500:
        cls, text = E.ProviderUnavailable, f"{action}: provider error (HTTP {code})"
    else:
        cls, text = E.ProviderError, f"{action}: unexpected answer (HTTP {code})"
    return cls(f"{provider}: {text}{suffix}{detail}", provider=provider, request_id=request_id, status=code)


def same_origin(url: str, base: str) -> bool:
    """True when `url` is on the provider's configured host (scheme, host and port), where the key may go."""
    try:
        a, b = httpx.URL(url), httpx.URL(base)
    except (httpx.InvalidURL, TypeError):
        return False
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
