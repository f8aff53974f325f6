"""amqtt 0.12.1's message path replaced: a PUBLISH fanned out at once, at min(publish, subscription) QoS."""

# Where amqtt 0.12.1 spent a round trip (py-spy on `info/get` -> `info`, README "Benchmark"): a task
# per received packet and per delivery, a broadcast queue with its own loop, a Future plus a 5 s
# timer per QoS 1/2 delivery, a plugin-event task per message, and every filter split into levels
# for every message. Here a PUBLISH is read, checked, retained and written to every matching
# subscriber in one step of the event loop, and an acknowledgement is a dict lookup.
#
# Why it is safe: connection handling, CONNECT, authentication, subscriptions, sessions, wills and
# redelivery after a reconnection stay amqtt's own; deliveries are kept in the session's
# `inflight_out` as amqtt keeps them, so its redelivery finds them; every patched method falls back
# to amqtt's when amqtt's own flow waits for that packet, or when a broker has no FastPath; topic
# plugins (ACLs) and message/retain events are still called; a plugin that wants packet events
# makes FastPath refuse to start rather than go without them. Tests: tests/broker/test_qos.py
# (against mosquitto) and test_broker.py. Private amqtt API: re-verify before any upgrade.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from amqtt.adapters import StreamWriterAdapter
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.errors import AMQTTError
from amqtt.events import BrokerEvents, MQTTEvents
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session

from broker.auth import AuthPolicy, Grant, grant_of

logger = logging.getLogger(__name__)

# Unacknowledged QoS 1/2 deliveries kept per client for redelivery after a reconnection (MQTT
# 3.1.1 §4.4); past this the oldest is forgotten, so a client that never acknowledges cannot grow
# the broker's memory (amqtt forgot each after 5 s, with a timer apiece).
MAX_INFLIGHT = 1024

PUBACK, PUBREC, PUBREL, PUBCOMP = 0x40, 0x50, 0x62, 0x70

Listener = Callable[[str | None, IncomingApplicationMessage], None]  # (client id, message)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ack(kind: int, packet_id: int) -> bytes:
    return bytes((kind, 2, packet_id >> 8, packet_id & 0xFF))


class FilterIndex(dict[str, list[tuple[Session, int]]]):
    """The broker's filter -> subscribers dict, counting changes to its set of filters.

    Which filters match a topic depends only on that set, so matches are cached per topic and the
    cache is dropped when the count moves; amqtt split every filter of every client for every
    message (`Broker._matches`).
    """

    version = 0

    def __setitem__(self, key: str, value: list[tuple[Session, int]]) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> tuple[str, list[tuple[Session, int]]]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)


class FastPath:
    """Per broker: the match cache, the in-process listener, and the WebSocket flushes under way."""

    MAX_CACHED_TOPICS = 4096

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.listener: Listener | None = None
        self.policy: AuthPolicy | None = None  # roles (broker/auth.py); None: every client may do all
        self.on_retained: Callable[[], None] | None = None  # the broker-wide retained store changed
        filters = FilterIndex(broker._subscriptions)
        broker._subscriptions = filters
        self.filters = filters
        self._matches: dict[str, tuple[str, ...]] = {}
        self._version = -1
        self._pending: dict[BrokerProtocolHandler, bytearray] = {}
        self._flush_soon: asyncio.Handle | None = None
        self._ws_pending: dict[BrokerProtocolHandler, bytearray] = {}
        self.flushing: set[asyncio.Task[None]] = set()
        manager = broker.plugins_manager
        # Plugins that want every packet or every message keep getting them, as events.
        # amqtt calls every topic plugin even when there is none (a config with `plugins` "enables"
        # filtering); with none, every check says yes.
        self.filtering = bool(getattr(manager, "_topic_plugins", True)) and bool(
            manager.is_topic_filtering_enabled()
        )
        hooked = getattr(manager, "_event_plugin_callbacks", {})
        wanted = (
            BrokerEvents.MESSAGE_RECEIVED,
            BrokerEvents.MESSAGE_BROADCAST,
            BrokerEvents.RETAINED_MESSAGE,
        )
        self.events = {e for e in wanted if e in hooked}
        packet_events = [e for e in (MQTTEvents.PACKET_SENT, MQTTEvents.PACKET_RECEIVED) if e in hooked]
        if packet_events:
            # Packets are written and read here without amqtt's packet objects.
            raise ValueError(f"the broker's fast path fires no {packet_events}: a plugin hooks them")
        manager.milo_fastpath = self

    def matching(self, topic: str) -> tuple[str, ...]:
        if self._version != self.filters.version or len(self._matches) > self.MAX_CACHED_TOPICS:
            self._matches.clear()
            self._version = self.filters.version
        found = self._matches.get(topic)
        if found is None:
            found = tuple(f for f in self.filters if self.broker._matches(topic, f))
            self._matches[topic] = found
        return found

    # Writing --------------------------------------------------------------------------------------
    def write(self, handler: BrokerProtocolHandler, data: bytes) -> None:
        """Queue bytes for a client, sent at the end of this turn of the event loop or sooner.

        So a command's echo and the state it causes, which the node publishes one step later, reach
        a `#` subscriber in one segment and wake it once (mosquitto sends them apart).
        """
        if self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self.flush)
        pending = self._pending.get(handler)
        if pending is None:
            self._pending[handler] = bytearray(data)
        else:
            pending += data

    def flush(self) -> None:
        """Send what is queued now (also the end of the loop turn's scheduled flush)."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        pending, self._pending = self._pending, {}
        for handler, data in pending.items():
            writer = handler.writer
            if writer is None:
                continue
            if isinstance(writer, StreamWriterAdapter):
                writer.write(data)  # a TCP transport sends at once or buffers
                continue
            # A WebSocket writer buffers until drain() and must not be written to while a drain
            # awaits (it replaces its buffer after the send): one flush at a time, under amqtt's lock.
            queued = self._ws_pending.get(handler)
            if queued is not None:
                queued += data
                continue
            self._ws_pending[handler] = data
            task = asyncio.ensure_future(self._flush_ws(handler))
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)

    async def _flush_ws(self, handler: BrokerProtocolHandler) -> None:
        try:
            async with handler._write_lock:
                while (data := self._ws_pending.get(handler)) and handler.writer is not None:
                    self._ws_pending[handler] = bytearray()
                    handler.writer.write(bytes(data))
                    await handler.writer.drain()
        except Exception as exc:  # websockets' ConnectionClosed as much as an OSError
            logger.debug("websocket write failed: %r", exc)
            await handler.handle_connection_closed()
        finally:
            self._ws_pending.pop(handler, None)

    def send(self, handler: BrokerProtocolHandler, topic: bytes, data: bytes, qos: int, retain: bool) -> None:
        """One PUBLISH to one client; a QoS 1/2 delivery is remembered until acknowledged."""
        session = handler.session
        if session is None:
            return
        flags = 0x30 | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            body = len(topic) + len(data)
            self.write(handler, b"".join((bytes((flags,)), _remaining_length(body), topic, data)))
            return
        inflight = session.inflight_out
        if len(inflight) >= MAX_INFLIGHT:
            forgotten = next(iter(inflight))
            del inflight[forgotten]
            logger.debug("%s: delivery %d never acknowledged, forgotten", session.client_id, forgotten)
        try:
            packet_id = session.next_packet_id
        except AMQTTError:
            logger.warning("%s: no free packet id, delivery on %r dropped", session.client_id, topic)
            return
        message = OutgoingApplicationMessage(packet_id, topic[2:].decode(), qos, data, retain)
        if not session.clean_session:
            # amqtt's redelivery after a reconnection resends it with DUP when this is set; a
            # clean session is never redelivered to.
            message.publish_packet = message.build_publish_packet()
        inflight[packet_id] = message
        body = len(topic) + 2 + len(data)
        pid = packet_id.to_bytes(2, "big")
        self.write(handler, b"".join((bytes((flags,)), _remaining_length(body), topic, pid, data)))

    # Fan-out ---------------------------------------------------------------------------------------
    async def fan_out(self, source: Session | None, topic: str, data: bytes, qos: int | None) -> None:
        """Deliver to every matching subscription: MQTT 3.1.1 §3.8.4, at min(publish, subscription) QoS.

        `qos` None (amqtt's internal broadcast without one) delivers at the subscription's QoS.
        """
        broker = self.broker
        encoded: bytes | None = None
        policy = self.policy
        # Replies go to the client that asked only; every other topic is read by every role.
        private = policy is not None and topic.startswith("milo/") and topic.split("/", 3)[2:3] == ["reply"]
        for topic_filter in self.matching(topic):
            for target, sub_qos in list(self.filters.get(topic_filter, ())):
                out_qos = sub_qos if qos is None else min(qos, sub_qos)
                if private and not AuthPolicy.may_receive(grant_of(target), target.client_id or "", topic):
                    continue
                if self.filtering and not await broker._topic_filtering(
                    target, topic=topic, action=Action.RECEIVE
                ):
                    continue
                if target.transitions.state != "connected":
                    # Kept for a persistent session, as amqtt does (MQTT 3.1.1 §3.1.2.4).
                    if not target.clean_session and out_qos and not target.is_anonymous:
                        broadcast = {"session": source, "topic": topic, "data": data}
                        await broker._retain_broadcast_message(broadcast, out_qos, target)
                    continue
                handler = broker._get_handler(target)
                if handler is None:
                    continue
                if encoded is None:
                    raw = topic.encode()
                    encoded = len(raw).to_bytes(2, "big") + raw
                self.send(handler, encoded, data, out_qos, False)

    async def replay_retained(self, topic_filter: str, session: Session) -> None:
        """The retained messages matching a filter, to the one session that holds it (B1), at min QoS."""
        holders = self.filters.get(topic_filter, ())
        granted = next((q for s, q in holders if s.client_id == session.client_id), None)
        handler = self.broker._get_handler(session)
        if granted is None or handler is None:
            return
        for topic, retained in list(self.broker._retained_messages.items()):
            if not self.broker._matches(topic, topic_filter):
                continue
            # amqtt took `retained.qos or qos`, so a QoS 0 retained message went out at the
            # subscription's QoS.
            stored = granted if retained.qos is None else retained.qos
            raw = topic.encode()
            encoded = len(raw).to_bytes(2, "big") + raw
            self.send(handler, encoded, bytes(retained.data), min(granted, stored), True)

    async def retain(self, source: Session | None, topic: str | None, data: Any, qos: int | None) -> None:
        """amqtt's `retain_message`, firing its plugin event only when a plugin wants it."""
        stored = self.broker._retained_messages
        if data and topic is not None:
            message = RetainedApplicationMessage(source, topic, data, qos)
            stored[topic] = message
        elif topic is not None and topic in stored:
            message = stored.pop(topic)  # MQTT-3.3.1-10: an empty payload clears the topic
            message.data = b""
        else:
            return
        if self.on_retained is not None:
            self.on_retained()
        if BrokerEvents.RETAINED_MESSAGE in self.events:
            await self.broker.plugins_manager.fire_event(
                BrokerEvents.RETAINED_MESSAGE, client_id=None, retained_message=message
            )

    # Receiving -------------------------------------------------------------------------------------
    async def accept(self, session: Session, message: IncomingApplicationMessage) -> bool:
        """A client's PUBLISH, once its QoS flow allows delivery; False: close the connection."""
        broker = self.broker
        if BrokerEvents.MESSAGE_RECEIVED in self.events:
            await broker.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id, message=message
            )
        topic = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            logger.warning("%s: PUBLISH to invalid topic %r, closing", session.client_id, topic)
            return False
        if self.policy is not None and not self._permitted(self.policy, session, message):
            return True  # 3.1.1 has no way to refuse a PUBLISH: dropped, and reported on `error`
        if self.filtering and not await broker._topic_filtering(session, topic=topic, action=Action.PUBLISH):
            logger.info("%s not allowed to publish to %s", session.client_id, topic)
            return True
        if BrokerEvents.MESSAGE_BROADCAST in self.events:
            await broker.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_BROADCAST, client_id=session.client_id, message=message
            )
        data = message.data if isinstance(message.data, bytes) else bytes(message.data)
        if message.retain:
            await self.retain(session, topic, data, message.qos)
        if self.listener is not None:
            self.listener(session.client_id, message)
        await self.fan_out(session, topic, data, message.qos)
        return True

    @staticmethod
    def _permitted(policy: AuthPolicy, session: Session, message: IncomingApplicationMessage) -> bool:
        client_id = session.client_id or ""
        grant = grant_of(session) or Grant("read", client_id)  # no grant: admitted before any policy
        data = message.data if isinstance(message.data, bytes) else bytes(message.data or b"")
        why = policy.may_publish(grant, client_id, message.topic, bool(message.retain), data)
        if why is None:
            return True
        logger.info("%s (%s) may not publish to %s: %s", client_id, grant.role, message.topic, why)
        policy.refused(grant, client_id, message.topic, data, why)
        return False

    async def drain(self) -> None:
        self.flush()
        if self.flushing:
            await asyncio.wait(list(self.flushing))


_original: dict[str, Any] = {}


# Patched broker methods ------------------------------------------------------------------------------
async def _broadcast_message(
    self: Broker, session: Session | None, topic: str | None, data: Any, force_qos: int | None = None
) -> None:
    # Wills and the node's own publishes: delivered now, not through amqtt's broadcast queue and
    # loop, and sent at once: a client's command echo waiting in the same buffers goes with it,
    # and nothing the publisher does next holds it back.
    path: FastPath | None = getattr(self.plugins_manager, "milo_fastpath", None)
    if path is None or topic is None:
        await _original["_broadcast_message"](self, session, topic, data, force_qos)
        return
    await path.fan_out(session, topic, bytes(data or b""), force_qos)
    path.flush()


async def retain_message(
    self: Broker, source_session: Session | None, topic_name: str | None, data: Any, qos: int | None = None
) -> None:
    path: FastPath | None = getattr(self.plugins_manager, "milo_fastpath", None)
    if path is None:
        await _original["retain_message"](self, source_session, topic_name, data, qos)
        return
    await path.retain(source_session, topic_name, data, qos)


async def _handle_message_delivery(
    self: Broker, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
) -> bool:
    # Messages still reaching amqtt's client loop (a QoS 2 PUBLISH redelivered after a
    # reconnection) keep their QoS; amqtt broadcast them at the subscribers' (B3).
    path: FastPath | None = getattr(self.plugins_manager, "milo_fastpath", None)
    message = wait_deliver.result()
    if path is None:
        return bool(await _original["_handle_message_delivery"](self, client_session, handler, wait_deliver))
    if message is None:
        return True
    return await path.accept(client_session, message)


async def _publish_retained_messages_for_subscription(
    self: Broker, subscription: tuple[str, int], session: Session
) -> None:
    path: FastPath | None = getattr(self.plugins_manager, "milo_fastpath", None)
    if path is None:
        await _original["_publish_retained_messages_for_subscription"](self, subscription, session)
        return
    await path.replay_retained(subscription[0], session)


def apply() -> None:
    """Install the patched broker methods (process-wide; a broker uses them once it has a FastPath)."""
    if _original:
        return
    for function in (
        _broadcast_message,
        _handle_message_delivery,
        _publish_retained_messages_for_subscription,
    ):
        _original[function.__name__] = getattr(Broker, function.__name__)
        setattr(Broker, function.__name__, function)


def of(handler: BrokerProtocolHandler) -> FastPath | None:
    """The fast path of the handler's broker (None: a broker made without one)."""
    path: FastPath | None = getattr(handler.plugins_manager, "milo_fastpath", None)
    return path


__all__ = ["MAX_INFLIGHT", "PUBACK", "PUBCOMP", "PUBREC", "PUBREL", "FastPath", "apply", "of"]
