"""HTTP/1.1 on the wire for the node's port: strict request heads, whole answers, graceful closes."""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

from websockets.datastructures import Headers

from node.framework.errors import MiloError

__all__ = [
    "CLOSE_TIMEOUT",
    "SEND_TIMEOUT",
    "HttpError",
    "HttpRequest",
    "content_length",
    "linger",
    "parse_head",
    "send",
    "send_error",
]

MAX_LINE = 8 * 1024
MAX_HEADERS = 100
SEND_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0  # for the peer to finish a WebSocket or TCP closing handshake
LINGER_BYTES = 1024 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")


class HttpError(MiloError):
    """A request we answer with an error status and close."""

    def __init__(
        self, status: http.HTTPStatus, message: str, code: str = "bad_request", *, allow: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.allow = allow  # the Allow header of a 405


@dataclass
class HttpRequest:
    """A parsed request head; `raw` is kept for the WebSocket handshake, which parses it again."""

    method: str
    target: str
    path: str  # percent-decoded, without the query
    headers: Headers
    raw: bytes

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for v in self.headers.get_all(name) for t in v.split(",") if t.strip()}


def parse_head(raw: bytes) -> HttpRequest:
    """Parse a request line and headers ending in CRLFCRLF; HttpError(400) for anything malformed."""
    lines = raw.removesuffix(b"\r\n\r\n").split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "too many headers")
    if any(len(line) > MAX_LINE for line in lines):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "request line or header too long")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed request line")
    # Origin-form only: proxies' absolute-form and OPTIONS' * have no use on this port.
    if not _TARGET.fullmatch(target):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed request target")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # A token cannot start with a space, so obsolete line folding is refused here too.
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed header")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "control character in a header")
        headers[name.decode("ascii")] = value.decode("latin-1")
    text = target.decode("ascii")
    return HttpRequest(method.decode("ascii"), text, unquote(text.split("?", 1)[0]), headers, raw)


def content_length(req: HttpRequest) -> int | None:
    """The request's Content-Length, None without one; HttpError(400) for a bad or ambiguous one."""
    values = set(req.headers.get_all("Content-Length"))
    if not values:
        return None
    value = values.pop()
    if values or not _DIGITS.fullmatch(value):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    return int(value)


async def send_error(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exc: HttpError, *, as_json: bool = False
) -> None:
    """Answer with the error's status and message (as JSON for the APIs), then close gracefully."""
    extra = {"Allow": exc.allow} if exc.allow else {}
    if as_json:
        body = json.dumps({"error": exc.message, "code": exc.code}).encode()
        await send(writer, exc.status, body, "application/json", extra=extra)
    else:
        await send(writer, exc.status, f"{exc.message}\n".encode(), "text/plain; charset=utf-8", extra=extra)
    # Whatever the client still sends (an unread body) would make our close a reset, and a reset can
    # destroy the response before the client reads it.
    await linger(reader, writer)


async def send(
    writer: asyncio.StreamWriter,
    status: http.HTTPStatus,
    body: bytes,
    ctype: str,
    *,
    cache: str = "no-store",
    head: bool = False,
    extra: dict[str, str] | None = None,
    length: bool = True,
) -> None:
    """Write a whole answer (the connection closes after it) and wait until it is on its way."""
    headers = {
        "Content-Type": ctype,
        **({"Content-Length": str(len(body))} if length else {}),
        "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff",
        "Connection": "close",
        **(extra or {}),
    }
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    # One write, so one send(): head and body apart were two system calls and two loopback packets
    # (TCP_NODELAY), the largest part of the node's time per file while a page loads.
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
    async with asyncio.timeout(SEND_TIMEOUT):
        await writer.drain()


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends until it closes (bounded)."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            dropped = 0
            while dropped < LINGER_BYTES and (chunk := await reader.read(65536)):
                dropped += len(chunk)
