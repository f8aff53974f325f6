"""A small asyncio HTTP/1.1 client: one request per connection, a total timeout, capped bodies."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from node.framework.errors import DaemonError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "HTTPResponse",
    "HttpClientConnectionError",
    "HttpClientError",
    "HttpClientJSONError",
    "HttpClientResponseError",
    "HttpClientStatusError",
    "HttpClientTimeoutError",
    "HttpClientTooLargeError",
    "RedirectCheck",
    "follow_redirects",
    "http_request",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class HttpClientError(DaemonError):
    """Anything that kept a request from giving a usable answer."""


class HttpClientConnectionError(HttpClientError):
    """No connection, or the connection broke before the answer was complete."""


class HttpClientTimeoutError(HttpClientConnectionError):
    """The request as a whole (connect, send, read) took longer than its timeout."""


class HttpClientStatusError(HttpClientError):
    """The server answered with a status other than 2xx (or a redirect we would not follow)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpClientResponseError(HttpClientError):
    """The answer was not valid HTTP or not what was asked for."""


class HttpClientTooLargeError(HttpClientResponseError):
    """The answer (after decompression) exceeded the size cap."""


class HttpClientJSONError(HttpClientResponseError):
    """The body was not JSON, or not JSON of the expected shape."""


@dataclass(frozen=True)
class HTTPResponse:
    """A complete, decoded answer; header names are lower-case."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        # ValueError includes UnicodeDecodeError; deeply nested arrays exhaust the parser's recursion.
        except (ValueError, RecursionError) as exc:
            raise HttpClientJSONError(f"{self.url}: the answer is not JSON ({exc})") from None


# Given the URL a redirect points to, return the address to connect to (or raise to refuse it).
RedirectCheck = Callable[[str], Awaitable[str | None]]


async def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    connect_address: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = 0,
    redirect_check: RedirectCheck | None = None,
) -> HTTPResponse:
    """One HTTP/1.1 request on a fresh connection, with a total timeout and a cap on the body size.

    `connect_address` is the IP to connect to instead of resolving the URL's host again: urlguard
    validates an address and this connects to that very address (the Host header and the TLS
    certificate check still use the name). Redirects are followed only if `max_redirects` > 0, and
    then only to the same origin unless `redirect_check` vets (and resolves) the new URL; what
    `redirect_check` raises reaches the caller as it is.
    """
    try:
        async with asyncio.timeout(timeout):
            for _ in range(max_redirects + 1):
                response = await _exchange(
                    method,
                    url=url,
                    headers=headers or {},
                    body=body,
                    max_bytes=max_bytes,
                    connect_address=connect_address,
                    ssl_context=ssl_context,
                )
                location = response.headers.get("location")
                if response.status not in REDIRECT_STATUSES or not location or max_redirects == 0:
                    return response
                target = _redirect_target(url, location)
                if redirect_check is not None:
                    connect_address = await redirect_check(target)
                elif _origin(target) != _origin(url):
                    raise HttpClientStatusError(
                        response.status, f"{url} redirects to another site ({target}); not followed"
                    )
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                url = target
            raise HttpClientStatusError(response.status, f"{url}: more than {max_redirects} redirects")
    except TimeoutError:
        raise HttpClientTimeoutError(f"{method} {url}: no complete answer within {timeout:g} s") from None


# Answers of servers that do not take HEAD (some SHOUTcast servers): asked again with a GET.
_NO_HEAD = frozenset({400, 403, 404, 405, 501})


async def follow_redirects(
    url: str,
    *,
    redirect_check: RedirectCheck,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    connect_address: str | None = None,
    max_redirects: int = 5,
) -> str:
    """Where `url` ends up after its redirects, each hop vetted by `redirect_check`; no body is read.

    For a player that must not follow redirects itself (mpv would connect wherever a station's
    server points it, past the SSRF guard). HEAD first, so a stream server does not start a stream
    for it; a server that refuses HEAD is asked with a GET whose answer is read only to the headers.
    A server that cannot be asked at all is the player's to report: the URL comes back unchanged.
    What `redirect_check` raises reaches the caller.
    """
    try:
        async with asyncio.timeout(timeout):
            for _ in range(max_redirects + 1):
                ask = functools.partial(
                    _exchange,
                    url=url,
                    headers=headers or {},
                    body=None,
                    max_bytes=0,
                    connect_address=connect_address,
                    ssl_context=None,
                )
                response = await ask("HEAD")
                if response.status in _NO_HEAD:
                    response = await ask("GET", head_only=True)
                location = response.headers.get("location")
                if response.status not in REDIRECT_STATUSES or not location:
                    return url
                url = _redirect_target(url, location)
                connect_address = await redirect_check(url)
    except (TimeoutError, HttpClientConnectionError, HttpClientResponseError):
        return url
    raise HttpClientStatusError(301, f"{url}: more than {max_redirects} redirects")


def _redirect_target(url: str, location: str) -> str:
    try:
        target = urljoin(url, location)
        _origin(target)  # parses the port, which urljoin leaves unchecked
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        raise HttpClientResponseError(f"{url}: redirect to a malformed URL {location[:200]!r}") from None
    return target


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


async def _exchange(
    method: str,
    *,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    max_bytes: int,
    connect_address: str | None,
    ssl_context: ssl.SSLContext | None,
    head_only: bool = False,
) -> HTTPResponse:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise HttpClientError(f"not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpClientError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HttpClientError(f"bad port in {url!r}") from None
    request = _request_bytes(method, parts, host, port, headers=headers, body=body)
    try:
        context = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            connect_address or host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
            limit=MAX_HEADER_BYTES,
        )
    # ValueError: a name IDNA cannot encode (a label over 63 characters, an empty one) never connects.
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise HttpClientConnectionError(f"cannot connect to {host}:{port}: {exc}") from None
    try:
        writer.write(request)
        await writer.drain()
        return await _read_response(reader, "HEAD" if head_only else method, url, max_bytes)
    except asyncio.IncompleteReadError:
        raise HttpClientConnectionError(f"{url}: connection closed before the end of the answer") from None
    except (OSError, ssl.SSLError) as exc:
        raise HttpClientConnectionError(f"{url}: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _request_bytes(
    method: str, parts: SplitResult, host: str, port: int, *, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if parts.scheme == "https" else 80):
        host_header += f":{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    lowered = {k.lower() for k in headers}
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "accept-encoding" not in lowered:
        lines.append("Accept-Encoding: gzip")
    # One request per connection: simpler than keep-alive, and the node's requests are rare enough.
    lines.append("Connection: close")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise HttpClientError("line breaks in a request header")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:  # a URL with raw non-ASCII characters, not percent-encoded
        raise HttpClientError(f"a request header cannot be sent as it is: {exc}") from None
    return head + (body or b"")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpClientResponseError("a header or chunk line is too long") from None


async def _read_headers(reader: asyncio.StreamReader, url: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    header_bytes = 0
    while True:
        line = await _read_line(reader)
        header_bytes += len(line)
        if header_bytes > MAX_HEADER_BYTES:
            raise HttpClientResponseError(f"{url}: headers larger than {MAX_HEADER_BYTES} bytes")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep:
            raise HttpClientResponseError(f"{url}: malformed header line {text[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def _read_response(reader: asyncio.StreamReader, method: str, url: str, max_bytes: int) -> HTTPResponse:
    status_line = (await _read_line(reader)).decode("latin-1").rstrip("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", status_line)
    if match is None:
        raise HttpClientResponseError(f"{url}: not an HTTP answer ({status_line[:80]!r})")
    status, reason = int(match.group(1)), match.group(2) or ""
    headers = await _read_headers(reader, url)
    if method == "HEAD" or status in (204, 304) or status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, url, max_bytes)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            length = -1
        if length < 0:
            raise HttpClientResponseError(f"{url}: bad Content-Length")
        if length > max_bytes:
            raise HttpClientTooLargeError(f"{url}: answer of {length} bytes exceeds the cap of {max_bytes}")
        body = await reader.readexactly(length)
    else:
        body = await _read_to_eof(reader, url, max_bytes)

    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip" and body:
        body = _gunzip(body, url, max_bytes)
    elif encoding not in ("identity", "gzip"):
        raise HttpClientResponseError(f"{url}: unsupported Content-Encoding {encoding!r}")
    return HTTPResponse(status, reason, headers, body, url)


async def _read_chunked(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_text = (await _read_line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0:
            raise HttpClientResponseError(f"{url}: bad chunk size {size_text[:20]!r}")
        if size == 0:
            break
        total += size
        if total > max_bytes:
            raise HttpClientTooLargeError(f"{url}: answer exceeds the cap of {max_bytes} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpClientResponseError(f"{url}: chunk not followed by CRLF")
    while (await _read_line(reader)).strip():  # trailers, ignored
        pass
    return b"".join(parts)


async def _read_to_eof(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > max_bytes:
            raise HttpClientTooLargeError(f"{url}: answer exceeds the cap of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _gunzip(data: bytes, url: str, max_bytes: int) -> bytes:
    # Capped decompression: a small gzip body can expand to gigabytes.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decoder.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise HttpClientResponseError(f"{url}: bad gzip body ({exc})") from None
    if len(out) > max_bytes or decoder.unconsumed_tail:
        raise HttpClientTooLargeError(f"{url}: decompressed answer exceeds the cap of {max_bytes} bytes")
    if not decoder.eof:
        raise HttpClientResponseError(f"{url}: truncated gzip body")
    return out
