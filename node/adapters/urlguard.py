"""SSRF guard for URLs from users or the directory: http(s) only, and only to public addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from node.framework.errors import MiloError

__all__ = [
    "Resolver",
    "SafeURL",
    "UnresolvableHostError",
    "UnsafeURLError",
    "check_address",
    "redirect_checker",
    "resolve_url",
    "validate_url",
]

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

# (host, port) -> the addresses the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURLError(MiloError, ValueError):
    """The URL may not be fetched; the message says why in words a user understands.

    Also a ValueError, as it was before the node had its own hierarchy: `except ValueError` still holds.
    """


class UnresolvableHostError(UnsafeURLError):
    """The host has no address (or resolving it failed or took too long): not unsafe, just unknown."""


@dataclass(frozen=True)
class SafeURL:
    """A URL that passed the checks, with the addresses it was checked against.

    DNS rebinding: a name can resolve to a public address now and to 127.0.0.1 a second later, so a
    check followed by a fresh lookup in the HTTP client proves nothing. Connect to `address` (the
    client's `connect_address`) so the address checked is the address used.
    """

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _parse_ip(text: str) -> IPAddress:
    # A scoped IPv6 address ("fe80::1%eth0") is still link-local: the zone does not change the check.
    return ipaddress.ip_address(text.split("%", 1)[0])


def check_address(address: str | IPAddress, *, allow_private: bool = False) -> None:
    """Raise UnsafeURLError unless a connection to `address` is acceptable.

    `allow_private` admits the local network (private, loopback, link-local, shared address space)
    for users who play streams from their own LAN; multicast, unspecified and reserved addresses are
    never a stream server.
    """
    if isinstance(address, str):
        try:
            ip = _parse_ip(address)
        except ValueError:
            raise UnsafeURLError(f"{address[:100]!r} is not an IP address") from None
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 reaches 127.0.0.1; judge the IPv4 address it stands for.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            check_address(mapped, allow_private=allow_private)
            return
    if ip.is_unspecified:
        raise UnsafeURLError(f"{ip} is not a server address")
    if ip.is_multicast:
        raise UnsafeURLError(f"{ip} is a multicast address")
    local = ip.is_loopback or ip.is_link_local or ip.is_private
    if local:
        if allow_private:
            return
        kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private"
        raise UnsafeURLError(f"{ip} is a {kind} address; only public servers are allowed")
    if ip.is_reserved:
        raise UnsafeURLError(f"{ip} is a reserved address")
    if not ip.is_global:
        # Shared address space (100.64/10), documentation ranges and the like.
        if allow_private and isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
            return
        raise UnsafeURLError(f"{ip} is not a public address")


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


async def resolve_url(
    url: str, *, allow_private: bool = False, resolver: Resolver | None = None, timeout: float = 5.0
) -> SafeURL:
    """Check the URL and every address its host resolves to; one bad address refuses the whole URL."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURLError("the URL is empty")
    url = url.strip()
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError:
        raise UnsafeURLError(f"{url!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme}://" if scheme else "a missing scheme"
        raise UnsafeURLError(f"{shown} is not allowed: only http:// and https:// URLs can be played")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURLError(f"{url!r} has no host")
    port = port_value or DEFAULT_PORTS[scheme]
    try:
        literal: IPAddress | None = _parse_ip(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow_private=allow_private)
        return SafeURL(url, scheme, host, port, (str(literal),))
    try:
        async with asyncio.timeout(timeout):
            found = await (resolver or _system_resolver)(host, port)
    except TimeoutError:  # before OSError, of which it is a subclass
        raise UnresolvableHostError(f"resolving the host {host!r} took longer than {timeout:g} s") from None
    except (OSError, UnicodeError):
        raise UnresolvableHostError(f"the host {host!r} cannot be resolved") from None
    addresses = tuple(dict.fromkeys(found))
    if not addresses:
        raise UnresolvableHostError(f"the host {host!r} has no address")
    for address in addresses:
        try:
            check_address(address, allow_private=allow_private)
        except UnsafeURLError as exc:
            raise UnsafeURLError(f"{host} resolves to {exc}") from None
    return SafeURL(url, scheme, host, port, addresses)


async def validate_url(url: str, *, allow_private: bool = False, resolver: Resolver | None = None) -> str:
    """The URL itself if it may be fetched; raises UnsafeURLError otherwise."""
    return (await resolve_url(url, allow_private=allow_private, resolver=resolver)).url


def redirect_checker(
    *, allow_private: bool = False, resolver: Resolver | None = None
) -> Callable[[str], Awaitable[str | None]]:
    """A `redirect_check` for http_client.http_request: every hop is validated like the first URL."""

    async def check(url: str) -> str | None:
        return (await resolve_url(url, allow_private=allow_private, resolver=resolver)).address

    return check
