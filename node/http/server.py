"""The node's HTTP port: the static web UI, station logos, and MQTT over WebSocket at /mqtt."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http
import json
import logging
import mimetypes
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from node.http.logos import NAME_RE, LogoError, LogoInfo, store_logo

logger = logging.getLogger(__name__)
# websockets logs every opened and closed connection at INFO: one line per browser tab is noise here.
ws_logger = logging.getLogger(f"{__name__}.websocket")
ws_logger.setLevel(logging.WARNING)

MQTT_PATH = "/mqtt"
# Text worth compressing; PNG logos are compressed already.
COMPRESSIBLE = ("text/", "application/json", "application/manifest+json", "image/svg+xml")
LOGO_API = "/api/logos"
LOGO_PREFIX = "/logos/"

MAX_LINE = 8 * 1024
MAX_HEAD = 64 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
SEND_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0  # for the peer to finish a WebSocket or TCP closing handshake
LINGER_BYTES = 1024 * 1024
MAX_UPLOADS = 4  # bodies held in memory at once: each is up to max_logo_bytes
WS_READ = 65536
WS_QUEUE = 16  # received messages nobody took yet; beyond that the socket is not read (backpressure)

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}

LOGO_STATUS = {
    "not_an_image": http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    "unsupported_image": http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    "corrupt_image": http.HTTPStatus.UNPROCESSABLE_ENTITY,
    "too_many_pixels": http.HTTPStatus.UNPROCESSABLE_ENTITY,
    "too_many_logos": http.HTTPStatus.INSUFFICIENT_STORAGE,
}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")


class HttpError(Exception):
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


def _content_length(req: HttpRequest) -> int | None:
    values = set(req.headers.get_all("Content-Length"))
    if not values:
        return None
    value = values.pop()
    if values or not _DIGITS.fullmatch(value):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    return int(value)


class WebSocket:
    """One accepted WebSocket, framed by websockets' sans-I/O protocol over our asyncio streams.

    It offers the part of websockets' asyncio connection that amqtt's adapters and `tcp_proxy` use:
    recv/send/close, `async for`, `remote_address`, `transport` and `request`.
    """

    def __init__(
        self,
        protocol: ServerProtocol,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.protocol = protocol
        self.request = request
        self.transport = writer.transport
        self.remote_address: tuple[Any, ...] = writer.get_extra_info("peername")
        self._reader = reader
        self._writer = writer
        self._inbox: deque[bytes | str] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = asyncio.Event()
        self._parts: list[bytes] = []
        self._text = False
        self._closing = False
        self._failed = False
        # The only reader of the socket: it answers pings and closing handshakes even while the
        # application is busy, and ends the TCP connection once the WebSocket is closed either way.
        self._pump = asyncio.create_task(self._read_loop())

    @property
    def state(self) -> State:
        return self.protocol.state

    async def recv(self) -> bytes | str:
        while not self._inbox:
            if self._closed.is_set():
                raise self.protocol.close_exc
            self._arrived.clear()
            await self._arrived.wait()
        message = self._inbox.popleft()
        self._room.set()
        return message

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        # As websockets does: a normal close ends the loop, an abnormal one raises ConnectionClosedError.
        with contextlib.suppress(ConnectionClosedOK):
            while True:
                yield await self.recv()

    async def send(self, message: bytes | bytearray | memoryview | str) -> None:
        if self.protocol.state is not State.OPEN:
            await self._closed.wait()
            raise self.protocol.close_exc
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(bytes(message))
        self._flush()
        try:
            await self._writer.drain()
        except OSError as exc:
            self.transport.abort()
            await self._closed.wait()
            raise self.protocol.close_exc from exc

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame without waiting for the answer (the server's stop closes many at once)."""
        self._closing = True
        self._room.set()  # the reader must reach the peer's close frame behind unread messages
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.start_close(code, reason)
        # The reader itself gives the peer CLOSE_TIMEOUT once a close is under way; this is the backstop.
        done, _ = await asyncio.wait({self._pump}, timeout=CLOSE_TIMEOUT * 2)
        if not done:
            self._pump.cancel()
            await asyncio.wait({self._pump})

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self._writer.write(chunk)
            elif self._writer.can_write_eof():
                self._writer.write_eof()  # websockets' SEND_EOF: the server half-closes first

    async def _read_loop(self) -> None:
        protocol = self.protocol
        try:
            while protocol.state is not State.CLOSED:
                if protocol.close_expected():
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        data = await self._reader.read(WS_READ)
                else:
                    data = await self._reader.read(WS_READ)
                if not data:
                    break
                protocol.receive_data(data)
                self._flush()  # pongs, close echoes and protocol errors' close frames
                await self._writer.drain()
                for event in protocol.events_received():
                    self._take(event)
                while len(self._inbox) >= WS_QUEUE and not self._closing:
                    self._room.clear()
                    await self._room.wait()
        except (OSError, TimeoutError):
            pass  # a reset, or a peer that never finished closing: both just end the connection
        except Exception:
            logger.exception("WebSocket reader failed")
        finally:
            protocol.receive_eof()  # makes the state CLOSED, so close_exc is defined from here on
            protocol.data_to_send()
            self._closed.set()
            self._arrived.set()
            self._writer.close()

    def _take(self, frame: object) -> None:
        if not isinstance(frame, Frame) or self._failed:
            return
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._text = frame.opcode is Opcode.TEXT
            self._parts = []
        elif frame.opcode is not Opcode.CONT:
            return  # control frames: the protocol already answered them
        self._parts.append(bytes(frame.data))
        if not frame.fin:
            return
        data = b"".join(self._parts)
        self._parts = []
        if not self._text:
            self._deliver(data)
            return
        try:
            self._deliver(data.decode())
        except UnicodeDecodeError:
            self._failed = True  # nothing after a refused message reaches the application
            self.protocol.fail(1007, "invalid UTF-8 in a text message")
            self._flush()

    def _deliver(self, message: bytes | str) -> None:
        self._inbox.append(message)
        self._arrived.set()


MqttHandler = Callable[[WebSocket], Awaitable[None]]


class WebServer:
    """A small HTTP/1.1 server: one request per connection, or one WebSocket at /mqtt."""

    def __init__(
        self,
        root: Path,
        on_mqtt: MqttHandler,
        *,
        host: str,
        port: int,
        max_message: int,
        data_dir: Path | None = None,
        max_logo_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        self.root = root.resolve()
        self._gzip_cache: dict[Path, tuple[str, bytes]] = {}
        self.on_mqtt = on_mqtt
        self.host = host
        self.requested_port = port
        self.max_message = max_message
        self.logo_dir = data_dir / "logos" if data_dir is not None else None
        self.max_logo_bytes = max_logo_bytes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[WebSocket] = set()
        self._uploads = 0
        # One decode at a time: a large image takes tens of MB while it is decoded.
        self._decoding = asyncio.Lock()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.requested_port, limit=MAX_HEAD
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for ws in list(self._sockets):
            ws.start_close(1001, "server shutting down")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
        left = set(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=CLOSE_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._exchange(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            logger.debug("HTTP connection ended: %r", exc)
        except Exception:
            logger.exception("HTTP request failed")
        finally:
            writer.close()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                writer.transport.abort()  # a peer that reads nothing would keep the buffer forever
            finally:
                self._tasks.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # closed before a whole request: nobody to answer
        except asyncio.LimitOverrunError:
            await _error(reader, writer, HttpError(http.HTTPStatus.BAD_REQUEST, "request head too large"))
            return
        except TimeoutError:
            timeout = HttpError(http.HTTPStatus.REQUEST_TIMEOUT, "request head too slow", "timeout")
            await _error(reader, writer, timeout)
            return
        req: HttpRequest | None = None
        try:
            req = parse_head(raw)
            await self._route(req, reader, writer)
        except HttpError as exc:
            # The upload API answers in JSON, for the UI to show `error` and act on `code`.
            await _error(reader, writer, exc, as_json=req is not None and req.path == LOGO_API)

    async def _route(
        self, req: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = req.path
        # Checked before any answer: a bad Content-Length must not come after a 200 already sent.
        has_body = bool(_content_length(req) or req.headers.get_all("Transfer-Encoding"))
        if path == MQTT_PATH:
            if req.method != "GET":
                raise _not_allowed("GET")
            if "upgrade" not in req.tokens("Connection"):
                await _send(
                    writer,
                    http.HTTPStatus.UPGRADE_REQUIRED,
                    b"MQTT over WebSocket only\n",
                    "text/plain; charset=utf-8",
                    extra={"Upgrade": "websocket"},
                )
                return
            await self._websocket(req, reader, writer)
        elif path == LOGO_API:
            if self.logo_dir is None:
                raise HttpError(http.HTTPStatus.NOT_FOUND, "this node stores no logos", "not_found")
            if req.method != "POST":
                raise _not_allowed("POST")
            await self._upload(req, self.logo_dir, reader, writer)
        elif req.method not in ("GET", "HEAD"):
            raise _not_allowed("GET, HEAD")
        else:
            if path.startswith(LOGO_PREFIX) and self.logo_dir is not None:
                await self._logo(req, path.removeprefix(LOGO_PREFIX), self.logo_dir, writer)
            else:
                await self._static(req, writer)
            if has_body:
                await _linger(reader, writer)  # a GET with a body nobody reads

    async def _static(self, req: HttpRequest, writer: asyncio.StreamWriter) -> None:
        rel = req.path.lstrip("/") or "index.html"
        try:
            target = (self.root / rel).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(self.root) or not target.is_file():
                raise HttpError(http.HTTPStatus.NOT_FOUND, "not found", "not_found")
            stat = target.stat()
            # Validators let a browser keep the file, and its compiled script, across reloads.
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            ctype = (
                TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            )
            head = req.method == "HEAD"
            if etag in req.tokens("If-None-Match"):
                await _send(writer, http.HTTPStatus.NOT_MODIFIED, b"", ctype, cache="no-cache", head=True,
                            extra={"ETag": etag}, length=False)  # fmt: skip
                return
            extra = {"ETag": etag, "Vary": "Accept-Encoding"}
            if ctype.startswith(COMPRESSIBLE) and "gzip" in req.tokens("Accept-Encoding"):
                body = self._gzipped(target, etag)
                extra["Content-Encoding"] = "gzip"
            else:
                body = target.read_bytes()
        except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a file we may not read
            raise HttpError(http.HTTPStatus.NOT_FOUND, "not found", "not_found") from exc
        await _send(writer, http.HTTPStatus.OK, body, ctype, cache="no-cache", head=head, extra=extra)

    def _gzipped(self, target: Path, etag: str) -> bytes:
        """The file compressed once per version: the UI is ~550 KB, ~150 KB gzipped, over a Pi's Wi-Fi."""
        cached = self._gzip_cache.get(target)
        if cached is not None and cached[0] == etag:
            return cached[1]
        body = gzip.compress(target.read_bytes(), compresslevel=6, mtime=0)
        self._gzip_cache[target] = (etag, body)
        return body

    async def _logo(self, req: HttpRequest, name: str, directory: Path, writer: asyncio.StreamWriter) -> None:
        target = directory / name
        if not NAME_RE.fullmatch(name) or not target.is_file():
            raise HttpError(http.HTTPStatus.NOT_FOUND, "no such logo", "not_found")
        # The name is the content's hash: a given URL never changes, so browsers need not ask again.
        cache = "public, max-age=31536000, immutable"
        body = target.read_bytes()
        await _send(writer, http.HTTPStatus.OK, body, "image/png", cache=cache, head=req.method == "HEAD")

    async def _upload(
        self, req: HttpRequest, directory: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if req.headers.get_all("Transfer-Encoding"):
            if req.headers.get_all("Content-Length"):
                # Both framings at once is how requests get smuggled past proxies: never guess.
                raise HttpError(http.HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length")
            raise _length_required()
        length = _content_length(req)
        if length is None:
            raise _length_required()
        if length > self.max_logo_bytes:
            raise HttpError(
                http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the file is {length} bytes; logos up to {self.max_logo_bytes} bytes are accepted",
                "too_large",
            )
        if length == 0:
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "the upload is empty", "empty")
        if self._uploads >= MAX_UPLOADS:
            raise HttpError(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many uploads at once; retry", "busy")
        self._uploads += 1
        try:
            info = await self._receive_logo(req, length, directory, reader, writer)
        finally:
            self._uploads -= 1
        if info is None:
            return
        logger.info("logo stored: %s (%dx%d, %d bytes)", info.name, info.width, info.height, info.size)
        body = {"url": info.url, "width": info.width, "height": info.height, "bytes": info.size}
        await _send(
            writer,
            http.HTTPStatus.CREATED,
            json.dumps(body).encode(),
            "application/json",
            extra={"Location": info.url},
        )

    async def _receive_logo(
        self,
        req: HttpRequest,
        length: int,
        directory: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> LogoInfo | None:
        if "100-continue" in req.tokens("Expect"):
            # curl waits for this before sending a body over 1 MB (else it waits a second).
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                data = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            return None  # the client went away mid-upload
        except TimeoutError:
            raise HttpError(http.HTTPStatus.REQUEST_TIMEOUT, "the upload was too slow", "timeout") from None
        try:
            async with self._decoding:
                return await asyncio.to_thread(store_logo, data, directory)
        except LogoError as exc:
            logger.info("logo refused: %s", exc.message)
            status = LOGO_STATUS.get(exc.code, http.HTTPStatus.BAD_REQUEST)
            raise HttpError(status, exc.message, exc.code) from exc
        except OSError as exc:
            logger.warning("cannot store a logo in %s: %s", directory, exc)
            raise HttpError(
                http.HTTPStatus.INTERNAL_SERVER_ERROR, "the logo could not be stored", "internal_error"
            ) from exc
        except Exception as exc:
            logger.exception("storing a logo failed")
            raise HttpError(
                http.HTTPStatus.INTERNAL_SERVER_ERROR, "the logo could not be stored", "internal_error"
            ) from exc

    async def _websocket(
        self, req: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # One WS message carries one MQTT packet or less; the broker's own limit is checked later.
        protocol = ServerProtocol(
            subprotocols=[Subprotocol("mqtt")], max_size=self.max_message + 16, logger=ws_logger
        )
        protocol.receive_data(req.raw)
        events = protocol.events_received()
        if not events or not isinstance(events[0], Request):
            # websockets is stricter than parse_head (HTTP/1.1 only, no body): its reason is the useful one.
            raise HttpError(
                http.HTTPStatus.BAD_REQUEST, f"not a WebSocket handshake: {protocol.handshake_exc}"
            )
        request = events[0]
        response = protocol.accept(request)
        protocol.send_response(response)
        for chunk in protocol.data_to_send():
            writer.write(chunk)  # the b"" end marker only follows a refusal, which closes anyway
        async with asyncio.timeout(SEND_TIMEOUT):
            await writer.drain()
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            return
        ws = WebSocket(protocol, request, reader, writer)
        self._sockets.add(ws)
        try:
            await self.on_mqtt(ws)
        except ConnectionClosed as exc:  # a handler that lets a dropped client's error through
            logger.debug("MQTT over WebSocket ended: %s", exc)
        except Exception:
            logger.exception("MQTT over WebSocket failed")
        finally:
            self._sockets.discard(ws)
            await ws.close()


def _not_allowed(allow: str) -> HttpError:
    return HttpError(
        http.HTTPStatus.METHOD_NOT_ALLOWED,
        f"method not allowed; use {allow}",
        "method_not_allowed",
        allow=allow,
    )


def _length_required() -> HttpError:
    return HttpError(
        http.HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length header", "length_required"
    )


async def _error(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exc: HttpError, *, as_json: bool = False
) -> None:
    extra = {"Allow": exc.allow} if exc.allow else {}
    if as_json:
        body = json.dumps({"error": exc.message, "code": exc.code}).encode()
        await _send(writer, exc.status, body, "application/json", extra=extra)
    else:
        await _send(writer, exc.status, f"{exc.message}\n".encode(), "text/plain; charset=utf-8", extra=extra)
    # Whatever the client still sends (an unread body) would make our close a reset, and a reset can
    # destroy the response before the client reads it.
    await _linger(reader, writer)


async def _send(
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
    headers = {
        "Content-Type": ctype,
        **({"Content-Length": str(len(body))} if length else {}),
        "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff",
        "Connection": "close",
        **(extra or {}),
    }
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    async with asyncio.timeout(SEND_TIMEOUT):
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends until it closes (bounded)."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            dropped = 0
            while dropped < LINGER_BYTES and (chunk := await reader.read(65536)):
                dropped += len(chunk)


def tcp_proxy(host: str, port: int) -> MqttHandler:
    """With an external broker, /mqtt is piped to its TCP port, so the UI keeps one origin."""

    async def handler(ws: WebSocket) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            logger.warning("WebSocket proxy: cannot reach %s:%d: %s", host, port, exc)
            await ws.close(1011, "broker unreachable")
            return

        async def up() -> None:
            async for frame in ws:
                writer.write(frame if isinstance(frame, bytes) else frame.encode())
                await writer.drain()

        async def down() -> None:
            while data := await reader.read(65536):
                await ws.send(data)

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:  # noqa: S110 - either side closing ends the pipe
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            await ws.close()

    return handler
