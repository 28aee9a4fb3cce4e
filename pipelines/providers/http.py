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


def rate_limit_wait(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait according to the response's reset headers, or None when it gives none."""
    now = time.time() if now is None else now
    headers = response.headers
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is not None:
                return max(parsed.timestamp() - now, 0.0)
    value = headers.get("x-rate-limit-reset-at-utc")
    if value:
        at = _parse_instant(value)
        if at is not None:
            return max(at - now, 0.0)
    for name in ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"):
        value = headers.get(name)
        if value:
            try:
                number = float(value)
            except ValueError:
                at = _parse_instant(value)
                return None if at is None else max(at - now, 0.0)
            # Small numbers are a delay in seconds, large ones an epoch timestamp.
            return max(number - now, 0.0) if number > 1e9 else max(number, 0.0)
    return None


def _parse_instant(value: str) -> float | None:
    value = value.strip()
    try:
        number = float(value)
        return number / 1000.0 if number > 1e12 else number
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


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
            delay = rate_limit_wait(response) if response.status_code == 429 else None
            delay = policy.backoff(attempt) if delay is None else min(delay, policy.max_rate_wait_s)
            log.info("%s: %s: HTTP %d, retrying in %.1f s", provider, what, response.status_code, delay)
        await pause(delay)
    raise AssertionError("unreachable")


async def submit_once(
    client: httpx.AsyncClient, url: str, *, policy: RetryPolicy, pause: Pause, provider: str, **kwargs
) -> httpx.Response:
    """POST a paid job. Raises SubmitUncertain when it may have reached the provider without an answer."""
    for attempt in range(1, policy.attempts + 1):
        try:
            response = await client.post(url, **kwargs)
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
            wait = rate_limit_wait(response)
            await pause(policy.backoff(attempt) if wait is None else min(wait, policy.max_rate_wait_s))
            continue
        return response
    raise AssertionError("unreachable")


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
