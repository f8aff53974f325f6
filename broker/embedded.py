"""The embedded amqtt broker: TCP listener, WebSocket hand-off, retained store and in-process delivery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.adapters import WebSocketsReader, WebSocketsWriter
from amqtt.broker import Broker
from amqtt.errors import BrokerError

from broker import limits, patches
from broker.auth import AuthPolicy, review_sessions
from broker.fastpath import FastPath
from broker.limits import Limits, LimitSettings, Violation
from broker.retained import RetainedStore

logger = logging.getLogger(__name__)

WS_LISTENER = "ws"
TLS_LISTENER = "tls"


@dataclass(frozen=True)
class InboundMessage:
    """A PUBLISH from a network client, as the broker accepted it."""

    topic: str
    payload: bytes
    retain: bool
    client_id: str | None


@dataclass
class BrokerSettings:
    """What the embedded broker needs to know; filled from the node's configuration."""

    retained_path: Path
    host: str = "0.0.0.0"
    port: int = 1883  # 0 picks a free port; see EmbeddedBroker.port
    max_packet: int = 1024 * 1024
    flush_delay: float = 1.0
    # Seconds past a client's keep-alive before it is dropped and its will is sent.
    keepalive_grace: int = 2
    force_retained: dict[str, str] = field(default_factory=dict)
    # Who may connect and do what (broker/auth.py); None: anyone, anything (tests of the broker).
    policy: AuthPolicy | None = None
    # MQTT over TLS on a listener of its own, besides the plain one: (port, cert file, key file).
    tls_port: int | None = None
    tls_host: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    limits: LimitSettings = field(default_factory=LimitSettings)
    # (code, client id, topic, message) for every client refused or cut off by a limit.
    on_violation: Violation | None = None


class EmbeddedBroker:
    """One amqtt broker in the node's own event loop."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._broker: Broker | None = None
        self._fast: FastPath | None = None
        self.limits: Limits | None = None
        self._store: RetainedStore | None = None

    def _config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{s.host}:{s.port}"},
                # WebSocket connections arrive through the node's HTTP server (same origin as the UI).
                WS_LISTENER: {"type": "external"},
                **self._tls_listener(),
            },
            "timeout_disconnect_delay": s.keepalive_grace,
            # Listing plugins explicitly keeps out amqtt's defaults ($SYS, packet logger: 35-40 % slower).
            "plugins": {
                "broker.admit.Admit": {},
                "broker.retained.RetainedStore": {
                    "path": str(s.retained_path),
                    "flush_delay": s.flush_delay,
                    "force": dict(s.force_retained),
                },
            },
        }

    def _tls_listener(self) -> dict[str, Any]:
        s = self.settings
        if s.tls_port is None or s.certfile is None or s.keyfile is None:
            return {}
        bind = f"{s.tls_host or s.host}:{s.tls_port}"
        return {TLS_LISTENER: {"type": "tcp", "bind": bind, "ssl": True,
                               "certfile": str(s.certfile), "keyfile": str(s.keyfile)}}  # fmt: skip

    async def start(self) -> None:
        patches.apply(self.settings.max_packet)
        self._broker = Broker(self._config())
        self._fast = FastPath(self._broker)
        if self.settings.policy is not None:
            self._broker.plugins_manager.milo_policy = self.settings.policy
            self._fast.policy = self.settings.policy
        limits.apply()
        self.limits = Limits(self._broker, self.settings.limits)
        self.limits.on_violation = self.settings.on_violation
        for plugin in self._broker.plugins_manager.plugins:
            if isinstance(plugin, RetainedStore):
                self._store = plugin
                self._fast.on_retained = plugin.changed
        try:
            await self._broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                # The usual case: another broker (a system mosquitto) already has the port.
                raise OSError(
                    cause.errno, f"MQTT port {self.settings.host}:{self.settings.port}: {cause}"
                ) from exc
            raise

    @property
    def _b(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("broker not started")
        return self._broker

    @property
    def port(self) -> int:
        """The TCP port actually bound (differs from settings.port when that was 0)."""
        server = self._b._servers["default"].instance
        return int(server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port, when there is one."""
        server = self._b._servers.get(TLS_LISTENER)
        return int(server.instance.sockets[0].getsockname()[1]) if server is not None else None

    def set_listener(self, listener: Callable[[InboundMessage], None]) -> None:
        """Every message a network client published (after the ACL), handed over in-process."""
        if self._fast is None:
            raise RuntimeError("broker not started")

        def relay(client_id: str | None, message: Any) -> None:
            listener(InboundMessage(message.topic, bytes(message.data), bool(message.retain), client_id))

        self._fast.listener = relay

    async def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        """Publish as the broker itself: no network hop (shared/reference/amqtt.md §11)."""
        if retain:
            await self._b.retain_message(None, topic, payload, qos)
        # An empty retained payload clears the topic and, as on mosquitto, still reaches subscribers.
        await self._b.internal_message_broadcast(topic, payload, qos)

    def retained(self) -> Iterator[tuple[str, bytes]]:
        for topic, message in list(self._b.retained_messages.items()):
            if message.data:
                yield topic, bytes(message.data)

    async def ws_connected(self, websocket: Any) -> None:
        """Serve one MQTT-over-WebSocket connection that the HTTP server accepted."""
        await self._b.external_connected(
            WebSocketsReader(websocket), WebSocketsWriter(websocket), WS_LISTENER
        )

    async def review_sessions(self) -> int:
        """Check every connected client against the policy again (users changed); how many were cut off."""
        return await review_sessions(self._b)

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait until queued messages went out (the last `offline` before a shutdown must reach clients)."""
        b = self._b
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            pending = [t for t in b._tasks_queue if not t.done()]
            if b._broadcast_queue.empty() and not pending:
                if self._fast is not None:  # WebSocket clients' flushes
                    left = max(0.0, deadline - asyncio.get_running_loop().time())
                    await asyncio.wait_for(self._fast.drain(), left)
                return
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            else:
                await asyncio.sleep(0.002)  # the broadcast loop picks the queue up on its next turn

    @property
    def problems(self) -> list[str]:
        """What was wrong with the retained store's file at start (set aside, reported by the node)."""
        return list(self._store.problems) if self._store is not None else []

    def flush(self) -> None:
        if self._store is not None:
            self._store.flush()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
