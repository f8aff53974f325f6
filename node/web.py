"""The node's HTTP port: the static web UI, and MQTT over WebSocket at /mqtt on the same origin."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

logger = logging.getLogger(__name__)

MQTT_PATH = "/mqtt"
MqttHandler = Callable[[ServerConnection], Awaitable[None]]

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


class WebServer:
    """websockets' server answers plain GETs through `process_request`, so one port serves both."""

    def __init__(self, root: Path, on_mqtt: MqttHandler, *, host: str, port: int, max_message: int) -> None:
        self.root = root.resolve()
        self.on_mqtt = on_mqtt
        self.host = host
        self.requested_port = port
        self.max_message = max_message
        self._server: Server | None = None

    async def start(self) -> None:
        # One WS message carries one MQTT packet or less; the broker's own limit is checked later.
        self._server = await websockets.serve(
            self._ws,
            self.host,
            self.requested_port,
            process_request=self._http,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=self.max_message + 16,
            compression=None,
        )
        logging.getLogger("websockets").setLevel(logging.WARNING)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == MQTT_PATH:
            if "upgrade" not in request.headers.get("Connection", "").lower():
                return _response(
                    http.HTTPStatus.UPGRADE_REQUIRED, b"MQTT over WebSocket only\n", "text/plain"
                )
            return None
        return self._static(path)

    def _static(self, path: str) -> Response:
        rel = path.lstrip("/") or "index.html"
        target = (self.root / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.root) or not target.is_file():
            return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        ctype = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _response(http.HTTPStatus.OK, target.read_bytes(), ctype, cache="no-cache")

    async def _ws(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path.split("?", 1)[0] != MQTT_PATH:
            await ws.close(1008, "MQTT lives at /mqtt")
            return
        await self.on_mqtt(ws)


def _response(status: http.HTTPStatus, body: bytes, ctype: str, cache: str = "no-store") -> Response:
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def tcp_proxy(host: str, port: int) -> MqttHandler:
    """With an external broker, /mqtt is piped to its TCP port, so the UI keeps one origin."""

    async def handler(ws: ServerConnection) -> None:
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
