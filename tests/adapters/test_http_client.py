"""The HTTP/1.1 client alone, over real local sockets: framing, caps, redirects, and its own errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator

import pytest

from harness.net import free_port
from harness.radio_browser import FakeRadioBrowser, station
from node.adapters.http_client import (
    HttpClientConnectionError,
    HttpClientError,
    HttpClientJSONError,
    HttpClientResponseError,
    HttpClientStatusError,
    HttpClientTimeoutError,
    HttpClientTooLargeError,
    HTTPResponse,
    http_request,
)
from node.adapters.urlguard import UnsafeURLError, redirect_checker
from node.framework.errors import DaemonError


@contextlib.asynccontextmanager
async def answering(answer: bytes) -> AsyncIterator[str]:
    """A server on 127.0.0.1 giving `answer` to every request; yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_errors_are_the_nodes_daemon_errors() -> None:
    for error in (HttpClientConnectionError, HttpClientStatusError, HttpClientResponseError):
        assert issubclass(error, HttpClientError)
    assert issubclass(HttpClientError, DaemonError)
    assert issubclass(HttpClientTimeoutError, HttpClientConnectionError)
    assert issubclass(HttpClientTooLargeError, HttpClientResponseError)
    assert issubclass(HttpClientJSONError, HttpClientResponseError)
    assert HttpClientStatusError(418, "teapot").status == 418


async def test_gzip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    assert len(bomb) < 10_000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        writer.write(head.encode() + bomb)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(HttpClientTooLargeError):
            await http_request("GET", f"http://127.0.0.1:{port}/", max_bytes=1_000_000, timeout=2.0)


async def test_connect_address_overrides_dns_and_keeps_host_header() -> None:
    stations = [station(name="Jazz FM", tags="jazz"), station(name="Rock Antenne", tags="rock")]
    async with FakeRadioBrowser(stations) as fake:
        response = await http_request(
            "GET",
            f"http://radio.invalid:{fake.port}/json/stations/search?name=jazz&limit=5",
            connect_address="127.0.0.1",
            timeout=2.0,
        )
    assert response.status == 200
    assert fake.requests[0].headers["host"] == f"radio.invalid:{fake.port}"
    assert [s["name"] for s in response.json()] == ["Jazz FM"]


async def test_redirects_are_not_followed_blindly() -> None:
    hops: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readuntil(b"\r\n\r\n")).decode().split(" ")[1]
        hops.append(line)
        if line == "/start":
            answer = "HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
        elif line == "/away":
            answer = (
                "HTTP/1.1 301 Moved\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n"
            )
        else:
            answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"
        writer.write(answer.encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        assert (await http_request("GET", base + "/start", timeout=2.0)).status == 302
        followed = await http_request("GET", base + "/start", timeout=2.0, max_redirects=3)
        assert followed.status == 200 and followed.url == base + "/next"
        with pytest.raises(HttpClientStatusError, match="another site"):
            await http_request("GET", base + "/away", timeout=2.0, max_redirects=3)
    assert hops == ["/start", "/start", "/next", "/away"]


async def test_non_http_answer_is_a_response_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        with pytest.raises(HttpClientResponseError):
            await http_request("GET", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", timeout=2.0)


async def test_only_http_urls() -> None:
    with pytest.raises(HttpClientError, match="not an http"):
        await http_request("GET", "file:///etc/passwd")


async def test_malformed_urls_are_client_errors() -> None:
    with pytest.raises(HttpClientError, match="not a valid URL"):
        await http_request("GET", "http://[::1/", timeout=2.0)
    with pytest.raises(HttpClientError, match="bad port"):
        await http_request("GET", "http://127.0.0.1:99999/", timeout=2.0)


async def test_a_request_head_that_cannot_be_sent_is_refused_before_connecting() -> None:
    connected = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/€.m3u"
        with pytest.raises(HttpClientError, match="cannot be sent"):
            await http_request("GET", url, timeout=2.0)
        with pytest.raises(HttpClientError, match="line breaks"):
            await http_request("GET", url.replace("€", "x"), headers={"X": "a\r\nB: c"}, timeout=2.0)
    assert not connected.is_set()


async def test_a_host_name_idna_cannot_encode_is_a_connection_error() -> None:
    # Refused while the name is encoded for the resolver: no DNS query is sent.
    with pytest.raises(HttpClientConnectionError, match="cannot connect"):
        await http_request("GET", f"http://{'a' * 64}.invalid/", timeout=2.0)


async def test_connection_refused_is_a_connection_error() -> None:
    with pytest.raises(HttpClientConnectionError, match="cannot connect"):
        await http_request("GET", f"http://127.0.0.1:{free_port()}/", timeout=2.0)


@pytest.mark.parametrize("location", ["http://[::1/x", "http://127.0.0.1:99999/x"])
async def test_a_malformed_redirect_is_a_response_error(location: str) -> None:
    answer = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    checked: list[str] = []

    async def check(url: str) -> str | None:
        checked.append(url)
        return None

    async with answering(answer) as base:
        with pytest.raises(HttpClientResponseError, match="malformed URL"):
            await http_request("GET", base + "/", timeout=2.0, max_redirects=2)
        with pytest.raises(HttpClientResponseError, match="malformed URL"):
            await http_request("GET", base + "/", timeout=2.0, max_redirects=2, redirect_check=check)
    assert checked == []


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ],
)
async def test_bad_body_framing_is_a_response_error(answer: bytes) -> None:
    async with answering(answer) as base:
        with pytest.raises(HttpClientResponseError, match=r"bad (Content-Length|chunk size)"):
            await http_request("GET", base + "/", timeout=2.0)


async def test_deeply_nested_json_is_a_json_error() -> None:
    response = HTTPResponse(200, "OK", {}, b"[" * 100_000, "http://example.test/")
    with pytest.raises(HttpClientJSONError, match="not JSON"):
        response.json()


async def test_errors_of_a_request_and_a_redirect_check() -> None:
    with pytest.raises(HttpClientConnectionError, match="cannot connect"):
        await http_request("GET", f"http://127.0.0.1:{free_port()}/", timeout=2.0)
    with pytest.raises(HttpClientError, match="not an http"):
        await http_request("GET", "file:///etc/passwd")

    moved = b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n"
    async with answering(moved) as base:
        with pytest.raises(HttpClientStatusError, match="another site") as info:
            await http_request("GET", base + "/", timeout=2.0, max_redirects=2)
        assert info.value.status == 301
        # What the redirect check raises is not the server's failure: it passes through as it is.
        with pytest.raises(UnsafeURLError, match="loopback"):
            await http_request(
                "GET", base + "/", timeout=2.0, max_redirects=2, redirect_check=redirect_checker()
            )
