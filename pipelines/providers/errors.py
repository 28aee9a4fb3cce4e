"""Typed errors of the provider clients. Nodes show `str(error)` to the user as it is.

Every message names the provider and, once one exists, the request id; none ever holds a key
(`Redactor` scrubs provider-supplied text before it becomes part of a message).
"""

from __future__ import annotations


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


class Redactor:
    """Replaces every known secret in a text by '***' (for logs and provider-supplied messages)."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()):
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out
