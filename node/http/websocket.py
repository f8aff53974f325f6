"""MQTT over WebSocket: the opening handshake, a WebSocket over websockets' sans-I/O protocol, a TCP pipe."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from node.http.wire import CLOSE_TIMEOUT, SEND_TIMEOUT, HttpError, HttpRequest

__all__ = ["MqttHandler", "WebSocket", "accept", "tcp_proxy"]

logger = logging.getLogger(__name__)
# websockets logs every opened and closed connection at INFO: one line per browser tab is noise here.
protocol_logger = logging.getLogger(f"{__name__}.protocol")
protocol_logger.setLevel(logging.WARNING)

WS_READ = 65536
WS_QUEUE = 16  # received messages nobody took yet; beyond that the socket is not read (backpressure)


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


async def accept(
    req: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_message: int
) -> WebSocket | None:
    """Answer the opening handshake of `req`: the open WebSocket, or None if websockets refused it.

    A refusal has been answered already; a request that is no handshake at all raises HttpError(400).
    """
    # One WS message carries one MQTT packet or less; the broker's own limit is checked later.
    protocol = ServerProtocol(
        subprotocols=[Subprotocol("mqtt")], max_size=max_message + 16, logger=protocol_logger
    )
    protocol.receive_data(req.raw)
    events = protocol.events_received()
    if not events or not isinstance(events[0], Request):
        # websockets is stricter than parse_head (HTTP/1.1 only, no body): its reason is the useful one.
        raise HttpError(http.HTTPStatus.BAD_REQUEST, f"not a WebSocket handshake: {protocol.handshake_exc}")
    request = events[0]
    response = protocol.accept(request)
    protocol.send_response(response)
    for chunk in protocol.data_to_send():
        writer.write(chunk)  # the b"" end marker only follows a refusal, which closes anyway
    async with asyncio.timeout(SEND_TIMEOUT):
        await writer.drain()
    if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
        return None
    return WebSocket(protocol, request, reader, writer)


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
