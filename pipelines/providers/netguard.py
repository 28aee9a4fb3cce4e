"""Which media URLs may be fetched: http(s) to public addresses only.

A result URL comes from the provider's answer, so a compromised or confused provider (or a proxy
in between) could point it at the user's own network: a router page, a cloud metadata service
that hands out credentials. Every hop of a download (redirects included: httpx runs request
hooks once per hop) is resolved and checked *before* a connection is opened. Loopback is
allowed only when the configured provider base is itself on loopback (a local proxy, the tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from . import errors as E

# Metadata services that sit on otherwise-public-looking or special addresses (all are refused anyway as
# link-local or shared space; named here so the message says what was refused).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))


def is_loopback_url(url: str) -> bool:
    """True when `url`'s host is a loopback address or `localhost` (checked without DNS)."""
    host = httpx.URL(url).host
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why this resolved address must not be fetched from, or None when it is a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private or ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return f"{ip} is a private or reserved address"
    return None


async def check_url(url: httpx.URL, *, allow_loopback: bool, provider: str, request_id: str | None) -> None:
    """UnsafeUrl unless `url` is http(s) and every address its host resolves to is allowed."""
    suffix = f" [request id {request_id}]" if request_id else ""
    if url.scheme not in ("http", "https") or not url.host:
        raise E.UnsafeUrl(f"{provider}: refused to fetch the video from a {url.scheme or 'relative'}: URL; only http "
                          f"and https are fetched{suffix}", provider=provider, request_id=request_id)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {url.host}: {exc}") from None
    for info in infos:
        why = refusal(info[4][0], allow_loopback=allow_loopback)
        if why:
            raise E.UnsafeUrl(f"{provider}: refused to fetch the video from {url.host}: {why}; media is fetched only "
                              f"from public addresses{suffix}", provider=provider, request_id=request_id)


def media_client(*, timeout: httpx.Timeout, allow_loopback: bool, provider: str,
                 request_id: str | None) -> httpx.AsyncClient:
    """A client without any auth that checks every request (and every redirect hop) with `check_url`."""

    async def guard(request: httpx.Request) -> None:
        await check_url(request.url, allow_loopback=allow_loopback, provider=provider, request_id=request_id)

    return httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=5, event_hooks={"request": [guard]})
