"""API keys and base URLs: from the environment, else from a JSON config file on the server.

Keys never come from node widgets (they would end up in the workflow JSON, the PNG and MP4
metadata). The config file is `<ComfyUI user directory>/hunyuan_video_suite/api_keys.json`,
outside every user's own folder, so ComfyUI's /userdata API does not serve it:

    {"WAVESPEED_API_KEY": "...", "FAL_KEY": "...", "SEGMIND_API_KEY": "..."}

The same file may also carry the base-URL variables (`WAVESPEED_BASE_URL`, ...) and the
`HYVS_API_*` settings (see `service.config_from_env`). The
environment wins over the file. Every key that is loaded is registered with the log
redactor, so it is replaced by '***' in any log line of the pack or of httpx.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import MissingKey, ProviderError, Redactor

CONFIG_FILE_NAME = "api_keys.json"

KEY_VARIABLES = {"wavespeed": "WAVESPEED_API_KEY", "fal": "FAL_KEY", "segmind": "SEGMIND_API_KEY"}
BASE_URL_VARIABLES = {"wavespeed": "WAVESPEED_BASE_URL", "fal": "FAL_QUEUE_BASE_URL", "segmind": "SEGMIND_BASE_URL"}
DEFAULT_BASE_URLS = {
    "wavespeed": "https://api.wavespeed.ai",
    "fal": "https://queue.fal.run",
    "segmind": "https://api.segmind.com",
}
PROVIDER_NAMES = {"wavespeed": "WaveSpeedAI", "fal": "fal.ai", "segmind": "Segmind"}

REDACT = Redactor()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = REDACT(record.msg)
        return True


# A logger's filters see only records logged on that very logger, not those of its children.
_LOGGERS = ("hunyuan_video_suite", "hunyuan_video_suite.providers", "httpx", "httpcore", "httpcore.connection",
            "httpcore.http11", "httpcore.http2", "httpcore.proxy")


def install_log_redaction(*logger_names: str) -> None:
    """Scrub known keys from the pack's and httpx's log records (idempotent)."""
    for name in logger_names or _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
            logger.addFilter(_RedactingFilter())


def read_config(config_dir: Path | None) -> dict[str, str]:
    """The JSON config file's string entries; {} when there is none."""
    if config_dir is None:
        return {}
    path = Path(config_dir) / CONFIG_FILE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        # The message names the file and the problem, never the content (it holds keys).
        raise ProviderError(f"cannot read the API config file {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ProviderError(f"the API config file {path} must hold a JSON object of names to strings")
    return {k: v.strip() for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def setting(name: str, config_dir: Path | None) -> str | None:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    return read_config(config_dir).get(name) or None


def api_key(provider: str, config_dir: Path | None) -> str:
    """The key for `provider` ('wavespeed', 'fal', 'segmind'), or MissingKey saying where to put one."""
    variable = KEY_VARIABLES[provider]
    key = setting(variable, config_dir)
    if not key:
        where = f", or put it in {Path(config_dir) / CONFIG_FILE_NAME}" if config_dir is not None else ""
        raise MissingKey(
            f"{PROVIDER_NAMES[provider]}: no API key. Set the environment variable {variable}{where} "
            f'(JSON: {{"{variable}": "<your key>"}}). Keys are never taken from node inputs.',
            provider=PROVIDER_NAMES[provider],
        )
    REDACT.add(key)
    install_log_redaction()
    return key


def base_url(provider: str, config_dir: Path | None) -> str:
    """The provider's base URL (may carry a path prefix), without a trailing slash."""
    value = setting(BASE_URL_VARIABLES[provider], config_dir) or DEFAULT_BASE_URLS[provider]
    if not value.startswith(("http://", "https://")):
        raise ProviderError(f"{BASE_URL_VARIABLES[provider]} must start with http:// or https://, got {value!r}")
    return value.rstrip("/")
