"""Limits that keep one client from starving the others: CONNECT deadline, connections, rate, subs."""

# amqtt 0.12.1 has none of these: a socket that never sends CONNECT is held forever, a client may
# open any number of connections and subscriptions, and a flood of PUBLISH is read as fast as it
# arrives, so every other client's messages queue behind it (issue #16: p99 2.5 s at 10 k msg/s).
#
# How: the CONNECT read and the subscription bookkeeping are wrapped here (patched Broker methods
# that fall back to amqtt's own when a broker has no Limits); the PUBLISH rate is checked by the
# patched reader loop (broker/handler.py) through `throttle`. A client over its rate is throttled
# first: its reads pause, so TCP (or the WebSocket's flow control) pushes back on the sender and
# the broker spends nothing on it. Only a client that pipelines is throttled: one that waits for
# each answer before its next request cannot outrun the node and is left alone (benchmarks do
# thousands of round trips a second). One throttled for `rate_grace_s` without letting its bucket
# refill to half (a pause of burst / 2 / rate seconds) is disconnected: a paused reader hands a
# flooder one token per read, so "over the rate right now" alone would miss it whenever the
# event loop is slower than the pause.
# Every refusal or disconnection is handed to `on_violation`, which the node turns into an error
# record on `<base>/error`. Private amqtt API: re-verify before any upgrade.

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import AMQTTError
from amqtt.mqtt.connack import SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

logger = logging.getLogger(__name__)

REFUSED = 0x80  # SUBACK return code: failure


@dataclass(frozen=True)
class LimitSettings:
    """Per-client limits of the embedded broker (`[mqtt]` in the node's config; 0 switches one off)."""

    connect_timeout_s: float = 5.0
    max_connections: int = 256
    max_subscriptions: int = 200
    rate: float = 200.0  # PUBLISH per second, sustained
    burst: int = 400  # PUBLISH in a burst above the rate
    rate_grace_s: float = 5.0  # throttled this long without a pause: disconnected
    # SUBSCRIBE packets refused for the subscription limit before the client is disconnected.
    subscription_strikes: int = 10


class ClientLimitError(Exception):
    """A client went past a limit it was warned about; its connection is closed."""


Violation = Callable[[str, str, str, str], None]  # (code, client id, topic, message)


@dataclass
class _Bucket:
    """A token bucket per connection; `since`: when it ran dry, until it refills to half."""

    tokens: float
    stamp: float
    since: float | None = None


class Limits:
    """One broker's limits and the per-client counts they need."""

    def __init__(self, broker: Broker, settings: LimitSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.on_violation: Violation | None = None
        self.pending = 0  # sockets that have not sent their CONNECT yet
        self._subscriptions: dict[str, int] = {}
        self._strikes: dict[str, int] = {}
        # Per connection, gone with its handler.
        self._buckets: weakref.WeakKeyDictionary[BrokerProtocolHandler, _Bucket] = weakref.WeakKeyDictionary()
        broker.milo_limits = self

    def report(self, code: str, client_id: str, topic: str, message: str) -> None:
        logger.warning("%s: %s (%s)", client_id, message, code)
        if self.on_violation is not None:
            try:
                self.on_violation(code, client_id, topic, message)
            except Exception:  # the report must never take the connection handling down
                logger.exception("limit violation report failed")

    # PUBLISH rate ----------------------------------------------------------------------------------
    async def throttle(self, handler: BrokerProtocolHandler, topic: str) -> None:
        """Before a PUBLISH is handled: wait while the client is over its rate; raise past the grace."""
        s = self.settings
        if s.rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(handler)
        if bucket is None:
            bucket = self._buckets[handler] = _Bucket(float(s.burst), now)
        bucket.tokens = min(float(s.burst), bucket.tokens + (now - bucket.stamp) * s.rate)
        bucket.stamp = now
        if bucket.tokens >= s.burst / 2:
            # Refilled to half: the client paused (about a second at the defaults), not a flooder.
            bucket.since = None
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        if not _backlogged(handler):
            # Over the rate but waiting for each answer (request, reply, request): such a client
            # goes no faster than the node answers it and leaves others their turn; a flooder
            # always has its next packets read and waiting.
            bucket.tokens = 0.0
            return
        client_id = handler.session.client_id if handler.session else "?"
        if bucket.since is None:
            bucket.since = now
            logger.info("%s: over %g msg/s, reads paused", client_id, s.rate)
        elif now - bucket.since > s.rate_grace_s:
            self._buckets.pop(handler, None)
            message = (
                f"client {client_id} kept publishing over {s.rate:g} msg/s (burst {s.burst}) "
                f"for {s.rate_grace_s:g} s: disconnected"
            )
            self.report("rate_limited", client_id, topic, message)
            raise ClientLimitError(message)
        # Reads pause for the time one token takes: the socket's buffers fill and the sender waits.
        await asyncio.sleep((1.0 - bucket.tokens) / s.rate)
        bucket.tokens = 0.0
        bucket.stamp = time.monotonic()

    # Subscriptions -----------------------------------------------------------------------------------
    def may_subscribe(self, session: Session, topic_filter: str) -> bool:
        limit = self.settings.max_subscriptions
        client_id = session.client_id or "?"
        if limit <= 0 or self._subscriptions.get(client_id, 0) < limit:
            return True
        holders = self.broker._subscriptions.get(topic_filter, ())
        if any(s.client_id == client_id for s, _ in holders):
            return True  # a re-subscription adds nothing
        strikes = self._strikes[client_id] = self._strikes.get(client_id, 0) + 1
        self.report(
            "too_many_subscriptions",
            client_id,
            topic_filter,
            f"client {client_id} holds {limit} subscriptions, the most allowed: {topic_filter!r} refused",
        )
        if strikes >= self.settings.subscription_strikes:
            self._strikes.pop(client_id, None)
            handler = self.broker._get_handler(session)
            if handler is not None:
                _closing_task(handler.handle_connection_closed())
        return False

    def subscribed(self, client_id: str, delta: int) -> None:
        count = self._subscriptions.get(client_id, 0) + delta
        if count > 0:
            self._subscriptions[client_id] = count
        else:
            self._subscriptions.pop(client_id, None)
            self._strikes.pop(client_id, None)

    # Connections -----------------------------------------------------------------------------------
    def connected(self, except_id: str | None) -> int:
        return sum(
            1
            for cid, (session, _) in self.broker._sessions.items()
            if cid != except_id and session.transitions.is_connected()
        )


def _backlogged(handler: BrokerProtocolHandler) -> bool:
    """Whether the client's next bytes are already read and waiting (it sends faster than it is read).

    Known for TCP (asyncio's StreamReader buffer); a WebSocket reader's queue is not looked into,
    so there the rate alone decides.
    """
    buffer = getattr(getattr(handler.reader, "_reader", None), "_buffer", None)
    return buffer is None or len(buffer) > 0


_closing: set[asyncio.Future[Any]] = set()


def _closing_task(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def of(broker: Any) -> Limits | None:
    limits: Limits | None = getattr(broker, "milo_limits", None)
    return limits


def of_handler(handler: BrokerProtocolHandler) -> Limits | None:
    """The limits of a handler's broker, found through the fast path's link to it."""
    path = getattr(handler.plugins_manager, "milo_fastpath", None)
    return of(path.broker) if path is not None else None


# Patched broker methods ------------------------------------------------------------------------------
_original: dict[str, Any] = {}


async def _initialize_client_session(
    self: Broker, reader: Any, writer: Any, remote_address: str, remote_port: int
) -> tuple[BrokerProtocolHandler, Session]:
    limits = of(self)
    original = _original["_initialize_client_session"]
    if limits is None:
        return await original(self, reader, writer, remote_address, remote_port)  # type: ignore[no-any-return]
    s = limits.settings
    if s.max_connections > 0 and limits.pending >= s.max_connections:
        # More half-open sockets than clients allowed: not a client, a flood of sockets.
        logger.warning(
            "%s:%s: %d sockets without CONNECT, closed", remote_address, remote_port, limits.pending
        )
        await writer.close()
        raise AMQTTError("too many sockets waiting for their CONNECT")
    limits.pending += 1
    # Connected clients by id, to see a takeover: with a clean session amqtt 0.12.1 deletes the old
    # session (its subscriptions) and leaves its connection open, deaf; MQTT 3.1.1 §3.1.4 says close it.
    before = {cid: pair for cid, pair in self._sessions.items() if pair[0].transitions.is_connected()}
    try:
        async with asyncio.timeout(s.connect_timeout_s if s.connect_timeout_s > 0 else None):
            handler, session = await original(self, reader, writer, remote_address, remote_port)
    except TimeoutError:
        logger.info(
            "%s:%s sent no CONNECT within %g s, closed", remote_address, remote_port, s.connect_timeout_s
        )
        await writer.close()
        raise AMQTTError("no CONNECT in time") from None
    finally:
        limits.pending -= 1
    if s.max_connections > 0 and limits.connected(session.client_id) >= s.max_connections:
        client_id = session.client_id or "?"
        limits.report(
            "too_many_connections",
            client_id,
            "",
            f"client {client_id} refused: {s.max_connections} clients are connected, the most allowed",
        )
        writer.write(ConnackPacket.build(0, SERVER_UNAVAILABLE).to_bytes())
        await writer.drain()
        await writer.close()
        raise AMQTTError("too many connections")
    if session.client_id in before:
        await _take_over(self, limits, before[session.client_id], session, f"{remote_address}:{remote_port}")
    return handler, session


async def _take_over(
    broker: Broker, limits: Limits, old: tuple[Session, BrokerProtocolHandler], new: Session, peer: str
) -> None:
    """A client id connected again: the previous connection is closed, and that is said on `error`."""
    client_id = new.client_id or "?"
    limits.report(
        "client_taken_over",
        client_id,
        "",
        f"client id {client_id} connected again from {peer}: its previous connection is closed",
    )
    current = broker._sessions.get(client_id)
    if current is not None and current[0] is old[0]:
        return  # the same (persistent) session: amqtt's own take-over closes the old connection
    with contextlib.suppress(Exception):
        await old[1].handle_connection_closed()
        await old[1].stop()


async def add_subscription(self: Broker, subscription: tuple[str, int], session: Session) -> int:
    limits = of(self)
    original = _original["add_subscription"]
    if limits is None:
        return await original(self, subscription, session)  # type: ignore[no-any-return]
    if not limits.may_subscribe(session, subscription[0]):
        return REFUSED
    holders = self._subscriptions.get(subscription[0], ())
    held = any(s.client_id == session.client_id for s, _ in holders)
    code: int = await original(self, subscription, session)
    if code != REFUSED and not held:
        limits.subscribed(session.client_id or "?", 1)
    return code


def _del_subscription(self: Broker, a_filter: str, session: Session) -> int:
    deleted: int = _original["_del_subscription"](self, a_filter, session)
    limits = of(self)
    if deleted and limits is not None:
        limits.subscribed(session.client_id or "?", -deleted)
    return deleted


def apply() -> None:
    """Install the patched broker methods (process-wide; a broker uses them once it has Limits)."""
    if _original:
        return
    for function in (_initialize_client_session, add_subscription, _del_subscription):
        _original[function.__name__] = getattr(Broker, function.__name__)
        setattr(Broker, function.__name__, function)


async def throttle(handler: BrokerProtocolHandler, topic: str) -> None:
    """The reader loop's hook (broker/handler.py), before a PUBLISH is handled."""
    limits = of_handler(handler)
    if limits is not None:
        await limits.throttle(handler, topic)


__all__ = ["ClientLimitError", "LimitSettings", "Limits", "apply", "throttle"]
