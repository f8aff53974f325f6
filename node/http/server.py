"""The node's HTTP port: the static web UI, station logos, and MQTT over WebSocket at /mqtt."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import http
import ipaddress
import json
import logging
import mimetypes
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from node.http.logos import NAME_RE, LogoError, LogoInfo, store_logo
from node.http.websocket import MqttHandler, WebSocket, accept, tcp_proxy
from node.http.wire import (
    CLOSE_TIMEOUT,
    HttpError,
    HttpRequest,
    content_length,
    linger,
    parse_head,
    send,
    send_error,
)

__all__ = ["Authorizer", "MqttHandler", "WebServer", "WebSocket", "tcp_proxy"]

# (client address, (user, password) from HTTP Basic or None) -> its role, None: not allowed.
Authorizer = Callable[[str | None, tuple[str, str] | None], Awaitable[str | None]]


async def _everyone(_address: str | None, _credentials: tuple[str, str] | None) -> str | None:
    return "control"


logger = logging.getLogger(__name__)

MQTT_PATH = "/mqtt"
# Text worth compressing; PNG logos are compressed already.
COMPRESSIBLE = ("text/", "application/json", "application/manifest+json", "image/svg+xml")
# index.html's placeholder for the id of the node serving it: the page asks for that node's state in
# its first flight of SUBSCRIBEs instead of waiting for the retained `info` messages to find it.
NODE_META = b'<meta name="milo-node" content="">'
LOGO_API = "/api/logos"
AUTH_API = "/api/auth"
WRITE_ROLES = ("control", "node")
LOGO_PREFIX = "/logos/"

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
MAX_UPLOADS = 4  # bodies held in memory at once: each is up to max_logo_bytes

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
        allowed_origins: tuple[str, ...] = (),
        authorize: Authorizer = _everyone,
        tls: tuple[str, int, Path, Path] | None = None,  # HTTPS too: (host, port, cert, key)
        node_id: str = "",
    ) -> None:
        self.root = root.resolve()
        self.node_id = node_id  # a valid node id ([a-z0-9_-]), safe in HTML as it is
        # Besides the node's own origin (the Host the browser asked for), e.g. "http://milo.local:8080".
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._gzip_cache: dict[Path, tuple[str, bytes]] = {}
        self.on_mqtt = on_mqtt
        self.host = host
        self.requested_port = port
        self.max_message = max_message
        self.logo_dir = data_dir / "logos" if data_dir is not None else None
        self.max_logo_bytes = max_logo_bytes
        self.authorize = authorize
        self.tls = tls
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[WebSocket] = set()
        self._uploads = 0
        # One decode at a time: a large image takes tens of MB while it is decoded.
        self._decoding = asyncio.Lock()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.requested_port, limit=MAX_HEAD
        )
        if self.tls is not None:
            host, port, cert, key = self.tls
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self._tls_server = await asyncio.start_server(
                self._connection, host, port, limit=MAX_HEAD, ssl=context
            )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        if self._tls_server is None:
            return None
        return int(self._tls_server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
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
        self._server = self._tls_server = None

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
            await send_error(reader, writer, HttpError(http.HTTPStatus.BAD_REQUEST, "request head too large"))
            return
        except TimeoutError:
            timeout = HttpError(http.HTTPStatus.REQUEST_TIMEOUT, "request head too slow", "timeout")
            await send_error(reader, writer, timeout)
            return
        req: HttpRequest | None = None
        try:
            req = parse_head(raw)
            await self._route(req, reader, writer)
        except HttpError as exc:
            # The upload API answers in JSON, for the UI to show `error` and act on `code`.
            api = req is not None and req.path in (LOGO_API, AUTH_API)
            await send_error(reader, writer, exc, as_json=api)

    async def _route(
        self, req: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = req.path
        # Checked before any answer: a bad Content-Length must not come after a 200 already sent.
        has_body = bool(content_length(req) or req.headers.get_all("Transfer-Encoding"))
        if path == MQTT_PATH:
            if req.method != "GET":
                raise _not_allowed("GET")
            if "upgrade" not in req.tokens("Connection"):
                await send(
                    writer,
                    http.HTTPStatus.UPGRADE_REQUIRED,
                    b"MQTT over WebSocket only\n",
                    "text/plain; charset=utf-8",
                    extra={"Upgrade": "websocket"},
                )
                return
            self._check_origin(req)
            await self._websocket(req, reader, writer)
        elif path in (LOGO_API, AUTH_API):
            await self._api(req, reader, writer)
        elif req.method not in ("GET", "HEAD"):
            raise _not_allowed("GET, HEAD")
        else:
            if path.startswith(LOGO_PREFIX) and self.logo_dir is not None:
                await self._logo(req, path.removeprefix(LOGO_PREFIX), self.logo_dir, writer)
            else:
                await self._static(req, writer)
            if has_body:
                await linger(reader, writer)  # a GET with a body nobody reads

    async def _api(
        self, req: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Logo uploads (a control credential when the node asks for one) and the page's login check."""
        if req.path == LOGO_API:
            if self.logo_dir is None:
                raise HttpError(http.HTTPStatus.NOT_FOUND, "this node stores no logos", "not_found")
            if req.method != "POST":
                raise _not_allowed("POST")
            self._check_origin(req)
            role = await self._role(req, writer)
            if role not in WRITE_ROLES:
                raise HttpError(http.HTTPStatus.FORBIDDEN, f"role {role} may not upload logos", "forbidden")
            await self._upload(req, self.logo_dir, reader, writer)
        else:
            if req.method != "GET":
                raise _not_allowed("GET")
            self._check_origin(req)
            role = await self._role(req, writer)
            body = json.dumps({"role": role, "write": role in WRITE_ROLES}).encode()
            await send(writer, http.HTTPStatus.OK, body, "application/json")

    async def _role(self, req: HttpRequest, writer: asyncio.StreamWriter) -> str:
        """The client's role from HTTP Basic credentials or its address; 401 when it has none.

        No WWW-Authenticate challenge: the page has its own login form, and a browser's dialog
        would come up over it.
        """
        credentials = None
        values = req.headers.get_all("Authorization")
        if values:
            scheme, _, token = values[0].partition(" ")
            try:
                user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if scheme.lower() != "basic" or not sep:
                raise HttpError(http.HTTPStatus.BAD_REQUEST, "Authorization: Basic only", "bad_credentials")
            credentials = (user, password)
        peer = writer.get_extra_info("peername")
        role = await self.authorize(peer[0] if peer else None, credentials)
        if role is None:
            if credentials is not None:
                raise HttpError(
                    http.HTTPStatus.UNAUTHORIZED, "wrong user name or password", "bad_credentials"
                )
            raise HttpError(http.HTTPStatus.UNAUTHORIZED, "log in first", "login_required")
        return role

    def _check_origin(self, req: HttpRequest) -> None:
        """Refuse a browser page from another site driving the speaker (cross-site WebSocket, upload).

        Browsers send Origin on every WebSocket upgrade and cross-origin POST, and a page cannot
        forge it; clients that are not browsers (aiomqtt, curl, Node-RED) send none and are let in.
        The node's own page comes from the origin the browser asked for: scheme://Host.
        """
        origins = req.headers.get_all("Origin")
        if not origins:
            return
        origin = origins[0]
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins:
            return
        hosts = req.headers.get_all("Host")
        own = {f"{scheme}://{host}".lower() for host in hosts for scheme in ("http", "https")}
        # Same origin is not enough under DNS rebinding (evil.example resolving to the node): the
        # name the browser used must be the node's own, or an address, which cannot be rebound.
        if origin in own and all(_own_host(host) for host in hosts):
            return
        message = f"origin {origin[:100]!r} is not this node"
        raise HttpError(http.HTTPStatus.FORBIDDEN, message, "foreign_origin")

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
            if self._names_node(target):
                etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}-{self.node_id}"'
            ctype = (
                TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            )
            head = req.method == "HEAD"
            if etag in req.tokens("If-None-Match"):
                await send(writer, http.HTTPStatus.NOT_MODIFIED, b"", ctype, cache="no-cache", head=True,
                           extra={"ETag": etag}, length=False)  # fmt: skip
                return
            extra = {"ETag": etag, "Vary": "Accept-Encoding"}
            if ctype.startswith(COMPRESSIBLE) and "gzip" in req.tokens("Accept-Encoding"):
                body = self._gzipped(target, etag)
                extra["Content-Encoding"] = "gzip"
            else:
                body = self._read(target)
        except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a file we may not read
            raise HttpError(http.HTTPStatus.NOT_FOUND, "not found", "not_found") from exc
        await send(writer, http.HTTPStatus.OK, body, ctype, cache="no-cache", head=head, extra=extra)

    def _gzipped(self, target: Path, etag: str) -> bytes:
        """The file compressed once per version: the UI is ~550 KB, ~150 KB gzipped, over a Pi's Wi-Fi."""
        cached = self._gzip_cache.get(target)
        if cached is not None and cached[0] == etag:
            return cached[1]
        body = gzip.compress(self._read(target), compresslevel=6, mtime=0)
        self._gzip_cache[target] = (etag, body)
        return body

    def _names_node(self, target: Path) -> bool:
        return bool(self.node_id) and target == self.root / "index.html"

    def _read(self, target: Path) -> bytes:
        data = target.read_bytes()
        if self._names_node(target):
            data = data.replace(NODE_META, NODE_META.replace(b'""', f'"{self.node_id}"'.encode()), 1)
        return data

    async def _logo(self, req: HttpRequest, name: str, directory: Path, writer: asyncio.StreamWriter) -> None:
        target = directory / name
        if not NAME_RE.fullmatch(name) or not target.is_file():
            raise HttpError(http.HTTPStatus.NOT_FOUND, "no such logo", "not_found")
        # The name is the content's hash: a given URL never changes, so browsers need not ask again.
        cache = "public, max-age=31536000, immutable"
        body = target.read_bytes()
        await send(writer, http.HTTPStatus.OK, body, "image/png", cache=cache, head=req.method == "HEAD")

    async def _upload(
        self, req: HttpRequest, directory: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if req.headers.get_all("Transfer-Encoding"):
            if req.headers.get_all("Content-Length"):
                # Both framings at once is how requests get smuggled past proxies: never guess.
                raise HttpError(http.HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length")
            raise _length_required()
        length = content_length(req)
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
        await send(
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
        ws = await accept(req, reader, writer, max_message=self.max_message)
        if ws is None:
            return
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


def _own_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]").lower() if not host.endswith("]") else host.strip("[]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    here = socket.gethostname().split(".")[0].lower()
    return name in ("localhost", here, f"{here}.local", socket.getfqdn().lower())


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
