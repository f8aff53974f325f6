"""SSRF guard: schemes, literal and resolved addresses, IPv4-mapped IPv6, allow_private, redirects."""

from __future__ import annotations

import asyncio

import pytest

from harness.icy_server import IcyServer
from node.adapters.http_client import HttpClientStatusError, follow_redirects, http_request
from node.adapters.urlguard import (
    Resolver,
    UnresolvableHostError,
    UnsafeURLError,
    check_address,
    redirect_checker,
    resolve_url,
    validate_url,
)
from node.framework.errors import MiloError


def fixed(mapping: dict[str, list[str]]) -> Resolver:
    async def resolver(host: str, port: int) -> list[str]:
        if host not in mapping:
            raise OSError("no such host")
        return mapping[host]

    return resolver


DNS = fixed(
    {
        "radio.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "rebind.example": ["93.184.216.34", "10.0.0.7"],
        "inside.example": ["192.168.1.20"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/stream",
        "http://127.1.2.3:8000/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",
        "http://100.64.0.1/",
    ],
)
async def test_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        await validate_url(url, resolver=DNS)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://radio.example/", "ftp://radio.example/", "radio.example/x", ""]
)
async def test_refuses_other_schemes(url: str) -> None:
    with pytest.raises(UnsafeURLError) as info:
        await validate_url(url, resolver=DNS)
    assert str(info.value)


async def test_accepts_public_hosts_and_returns_the_url() -> None:
    assert await validate_url(" https://radio.example/live.mp3 ", resolver=DNS) == (
        "https://radio.example/live.mp3"
    )
    safe = await resolve_url("http://radio.example:8000/x", resolver=DNS)
    assert (safe.host, safe.port, safe.address) == ("radio.example", 8000, "93.184.216.34")
    assert await validate_url("http://93.184.216.34/") == "http://93.184.216.34/"


async def test_one_private_address_refuses_the_host() -> None:
    with pytest.raises(UnsafeURLError, match=r"rebind\.example resolves to 10\.0\.0\.7 is a private address"):
        await validate_url("http://rebind.example/", resolver=DNS)


async def test_names_resolving_to_loopback_are_refused() -> None:
    # The real resolver: "localhost" and the inet_aton spelling of 127.0.0.1 both reach loopback.
    for url in ("http://localhost:8000/", "http://2130706433/"):
        with pytest.raises(UnsafeURLError):
            await validate_url(url)


async def test_unresolvable_host() -> None:
    # Its own kind (answered `unresolvable_host`, not `unsafe_url`), still an UnsafeURLError to callers.
    with pytest.raises(UnresolvableHostError, match="cannot be resolved"):
        await validate_url("http://nowhere.example/", resolver=DNS)


async def test_slow_resolver_is_bounded() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    with pytest.raises(UnsafeURLError, match="longer than"):
        await resolve_url("http://slow.example/", resolver=slow, timeout=0.05)


async def test_allow_private() -> None:
    for url in ("http://127.0.0.1:6600/", "http://[::1]/", "http://192.168.1.5/", "http://[fe80::1]/"):
        assert await validate_url(url, allow_private=True) == url
    assert await validate_url("http://inside.example/", allow_private=True, resolver=DNS)
    for url in ("http://0.0.0.0/", "http://224.0.0.1/", "file:///etc/passwd"):
        with pytest.raises(UnsafeURLError):
            await validate_url(url, allow_private=True)


def test_check_address_messages() -> None:
    with pytest.raises(UnsafeURLError, match="loopback"):
        check_address("::ffff:127.0.0.1")
    with pytest.raises(UnsafeURLError, match="link-local"):
        check_address("fe80::1%eth0")
    check_address("8.8.8.8")
    check_address("2001:4860:4860::8888")


def test_refusals_are_milo_errors_and_still_value_errors() -> None:
    assert issubclass(UnsafeURLError, MiloError)
    with pytest.raises(ValueError, match="loopback"):  # what callers from before the hierarchy catch
        check_address("127.0.0.1")


async def test_what_is_not_an_address_is_refused_as_unsafe() -> None:
    # ipaddress' own ValueError would otherwise leave the guard: a dotted name that is no IPv4 address.
    with pytest.raises(UnsafeURLError, match="not an IP address"):
        check_address("999.1.1.1")
    garbage = fixed({"garbage.example": ["not-an-ip"]})
    with pytest.raises(UnsafeURLError, match=r"garbage\.example resolves to 'not-an-ip' is not an IP"):
        await validate_url("http://garbage.example/", resolver=garbage)


async def test_redirects_are_checked_hop_by_hop() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/admin\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://stream.test:{server.sockets[0].getsockname()[1]}/"
    async with server:
        # The first hop is our own local server (allowed here); the hop it points to is not.
        with pytest.raises(UnsafeURLError, match="loopback"):
            await http_request(
                "GET",
                url,
                connect_address="127.0.0.1",
                timeout=2.0,
                max_redirects=2,
                redirect_check=redirect_checker(),
            )
        with pytest.raises(HttpClientStatusError):
            await http_request("GET", url, connect_address="127.0.0.1", timeout=2.0, max_redirects=2)


async def test_redirects_are_followed_by_the_node_each_hop_checked(icy: IcyServer) -> None:
    icy.redirects = {"/a": icy.url("/b"), "/b": icy.url()}
    allowed = redirect_checker(allow_private=True)
    assert await follow_redirects(icy.url("/a"), redirect_check=allowed) == icy.url()
    # HEAD only: the stream server started no stream for the look-up.
    assert icy.requests == [("HEAD", "/a"), ("HEAD", "/b"), ("HEAD", "/stream")]
    assert icy.connections == 0
    # A redirect to 127.0.0.1 is refused without allow_private_urls.
    with pytest.raises(UnsafeURLError, match=r"127\.0\.0\.1 is a loopback address"):
        await follow_redirects(icy.url("/a"), redirect_check=redirect_checker(allow_private=False))
    # A server that refuses HEAD is asked with a GET read to its headers only.
    icy.head_allowed, icy.requests = False, []
    assert await follow_redirects(icy.url("/a"), redirect_check=allowed) == icy.url()
    assert icy.requests[-2:] == [("HEAD", "/stream"), ("GET", "/stream")]
    # A loop ends.
    icy.redirects = {"/loop": icy.url("/loop")}
    with pytest.raises(HttpClientStatusError, match="redirects"):
        await follow_redirects(icy.url("/loop"), redirect_check=allowed)
    # Nobody there: the URL as it is, for the player to report.
    gone = "http://127.0.0.1:9/x"
    assert await follow_redirects(gone, redirect_check=allowed) == gone
