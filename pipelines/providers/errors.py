"""Typed errors of the provider clients. Nodes show `str(error)` to the user as it is.

Every message names the provider and, once one exists, the request id; none ever holds a key
(`Redactor` scrubs provider-supplied text before it becomes part of a message).
"""

from __future__ import annotations

import re
from urllib.parse import quote


class ProviderError(Exception):
    """Base of every provider failure."""

    def __init__(self, message: str, *, provider: str = "", request_id: str | None = None, status: int | None = None):
        super().__init__(message)
        self.provider = provider
        self.request_id = request_id
        self.status = status


class InvalidParameter(ProviderError, ValueError):
    """An input is outside what the provider documents; raised before any request is sent."""

    def __init__(self, name: str, message: str):
        super().__init__(f"input '{name}': {message}")
        self.input_name = name


class MissingKey(ProviderError):
    """No API key in the environment or the config file."""


class AuthenticationFailed(ProviderError):
    """401/403 for the key itself: wrong, revoked, or not allowed to use this model."""


class InsufficientCredits(ProviderError):
    """The account cannot pay for the job (Segmind 406, fal 'Exhausted balance', WaveSpeed 402)."""


class RateLimited(ProviderError):
    """429 that outlasted the retries."""


class BadRequest(ProviderError):
    """The provider rejected the parameters (400/422)."""


class ContentFlagged(ProviderError):
    """The provider's safety checker flagged the output (NSFW)."""


class JobFailed(ProviderError):
    """The remote job ended in failure, cancellation or a provider-side timeout."""


class ProviderUnavailable(ProviderError):
    """5xx or network trouble that outlasted the retries."""


class ResultExpired(ProviderError):
    """The provider no longer has the result (request record or media URL expired)."""


class SubmitUncertain(ProviderError):
    """The submit may have reached the provider, but no request id came back. Never resubmitted automatically."""


class WaitTimeout(ProviderError):
    """Local wait limit reached; the remote job keeps running and re-queuing resumes it."""


class Interrupted(ProviderError):
    """The user interrupted; the job was cancelled remotely or detached (resumable)."""


class InvalidVideo(ProviderError):
    """The downloaded file is not a playable video."""


class DownloadTooLarge(ProviderError):
    """The result is bigger than the configured download cap (HYVS_API_MAX_DOWNLOAD_MB)."""


class UnsafeUrl(ProviderError):
    """A media URL that points at a private, link-local, metadata or otherwise refused address or scheme."""


class ClaimLost(ProviderError):
    """Another process took this job over (this process stalled past its claim); it finishes the job."""


class Redactor:
    """Replaces every known secret in a text by '***' (logs, progress text, errors, the journal).

    A key is matched in any letter case, and so are its URL-encoded form and, for a composite
    key such as fal's `key_id:key_secret`, each half: a provider may echo any of them back.
    """

    MIN_PART = 6  # shorter halves are not secrets worth matching (they would blank ordinary words)

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()):
        self._secrets: set[str] = set()
        self._pattern: re.Pattern | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret:
            return
        forms = {secret, quote(secret, safe="")}
        forms |= {part for part in re.split(r"[:\s]+", secret) if len(part) >= self.MIN_PART}
        if forms <= self._secrets:
            return
        self._secrets |= forms
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE)

    def __call__(self, text: object) -> str:
        out = str(text)
        return self._pattern.sub("***", out) if self._pattern is not None else out
