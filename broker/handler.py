"""The broker's connection handler, patched: one reader loop that handles PUBLISH and acks in line."""

# amqtt 0.12.1's reader loop wraps every header read in `asyncio.wait_for` (a task per packet),
# builds packet objects field by field with an await per field, then starts a task to handle
# each packet. Here PUBLISH and the four acknowledgements are read whole and handled in the loop;
# every other packet goes through amqtt's own parser and handler as before.
#
# Why it is safe: the keep-alive timeout (B2's close), the size limit on the header (B5) and the
# end of the loop are amqtt's; an acknowledgement amqtt's own flow waits for goes to amqtt's
# handler; only the broker's handler is patched, amqtt's client keeps its loop; a broker without
# a FastPath runs amqtt's loop. Handling a PUBLISH in line keeps each client's messages in order.
# Tests: tests/broker. Private amqtt API: re-verify before any upgrade.

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from amqtt.codecs_amqtt import read_or_raise
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
)
from amqtt.mqtt.protocol import handler as protocol_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler, Subscription, UnSubscription
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import IncomingApplicationMessage

from broker import fastpath, limits
from broker.fastpath import FastPath

logger = logging.getLogger(__name__)

# amqtt's handler method for each packet type it reads in its own way.
_HANDLERS = {
    CONNACK: "handle_connack",
    SUBSCRIBE: "handle_subscribe",
    UNSUBSCRIBE: "handle_unsubscribe",
    SUBACK: "handle_suback",
    UNSUBACK: "handle_unsuback",
    PINGREQ: "handle_pingreq",
    PINGRESP: "handle_pingresp",
    DISCONNECT: "handle_disconnect",
}


class MalformedPacketError(Exception):
    """A PUBLISH the broker cannot parse or must refuse; its connection is closed."""


def parse_publish(flags: int, body: bytes) -> IncomingApplicationMessage:
    qos = (flags >> 1) & 3
    if qos == 3 or len(body) < 2:
        raise MalformedPacketError("QoS 3 or no topic")
    end = 2 + int.from_bytes(body[:2], "big")
    if len(body) < end + (2 if qos else 0):
        raise MalformedPacketError("topic longer than the packet")
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacketError("topic is not UTF-8") from exc
    if "#" in topic or "+" in topic:
        # MQTT-3.3.2-2. amqtt raised while parsing, and read the rest as the next packet (B4).
        raise MalformedPacketError(f"wildcard in topic {topic!r}")
    packet_id = int.from_bytes(body[end : end + 2], "big") if qos else None
    data = body[end + 2 :] if qos else body[end:]
    return IncomingApplicationMessage(packet_id, topic, qos, data, bool(flags & 0x01))


async def on_publish(
    handler: BrokerProtocolHandler, path: FastPath, message: IncomingApplicationMessage
) -> None:
    session = handler.session
    if session is None:
        return
    packet_id = message.packet_id
    if message.qos == 2 and packet_id is not None:
        # Held until PUBREL (amqtt's flow too): a resent PUBLISH with the same id is delivered once.
        session.inflight_in.setdefault(packet_id, message)
        path.write(handler, fastpath.ack(fastpath.PUBREC, packet_id))
        return
    if message.qos == 1 and packet_id is not None:
        path.write(handler, fastpath.ack(fastpath.PUBACK, packet_id))
    if not await path.accept(session, message):
        await handler.handle_connection_closed()


async def on_ack(handler: BrokerProtocolHandler, path: FastPath, kind: int, packet_id: int) -> None:
    """PUBACK, PUBREC, PUBREL or PUBCOMP for a message of the fast path."""
    session = handler.session
    if session is None:
        return
    if kind == PUBREL:
        message = session.inflight_in.pop(packet_id, None)
        # Also for an id already released: the client resent PUBREL, our PUBCOMP was lost.
        path.write(handler, fastpath.ack(fastpath.PUBCOMP, packet_id))
        if message is not None and not await path.accept(session, message):
            await handler.handle_connection_closed()
        return
    sent = session.inflight_out.get(packet_id)
    if sent is None or sent.qos != (1 if kind == PUBACK else 2):
        logger.debug("%s: acknowledgement %d for no delivery %d", session.client_id, kind, packet_id)
    elif kind == PUBREC:
        sent.pubrec_packet = PubrecPacket.build(packet_id)
        sent.pubrel_packet = PubrelPacket.build(packet_id)  # a redelivery now resends PUBREL
        path.write(handler, fastpath.ack(fastpath.PUBREL, packet_id))
    else:
        del session.inflight_out[packet_id]


# amqtt's own flows (redelivery after a reconnection, `ProtocolHandler._retry_deliveries`) wait
# on these futures; an ack they wait for goes to amqtt's handler method.
_WAITERS = {
    PUBACK: ("_puback_waiters", "handle_puback", PubackPacket),
    PUBREC: ("_pubrec_waiters", "handle_pubrec", PubrecPacket),
    PUBREL: ("_pubrel_waiters", "handle_pubrel", PubrelPacket),
    PUBCOMP: ("_pubcomp_waiters", "handle_pubcomp", PubcompPacket),
}


async def _ack(handler: BrokerProtocolHandler, path: FastPath, kind: int, packet_id: int) -> None:
    waiters, method, cls = _WAITERS[kind]
    if packet_id in getattr(handler, waiters):
        await getattr(handler, method)(cls.build(packet_id))
    else:
        await on_ack(handler, path, kind, packet_id)


async def _subscription(handler: BrokerProtocolHandler, path: FastPath, kind: int, packet: Any) -> None:
    """A SUBSCRIBE or UNSUBSCRIBE, done before the client's next packet is read.

    amqtt queued it for its client loop, as it queued PUBLISH, so the two kept their order; a
    PUBLISH handled here in line would overtake it, and a client that subscribes and publishes at
    once would miss its own message. amqtt's own handling otherwise (ACL, SUBACK, events, retained).
    """
    if handler.session is None or packet.variable_header is None or packet.payload is None:
        raise MQTTError("SUBSCRIBE/UNSUBSCRIBE packet: header or payload missing")
    path.flush()  # what was queued for this client goes before the SUBACK
    request = (Subscription if kind == SUBSCRIBE else UnSubscription)(
        packet.variable_header.packet_id, packet.payload.topics
    )
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done.set_result(request)
    if kind == SUBSCRIBE:
        await path.broker._handle_subscription(handler.session, handler, done)
    else:
        await path.broker._handle_unsubscription(handler.session, handler, done)


async def _handle_one(
    self: BrokerProtocolHandler, path: FastPath, reader: Any, running: collections.deque[asyncio.Task[Any]]
) -> bool:
    """Read and handle one packet; False at EOF."""
    keepalive = self.session.keep_alive if self.session and self.session.keep_alive > 0 else None
    # asyncio.timeout, not wait_for: no task per packet. The header class carries B5's size limit.
    async with asyncio.timeout(keepalive):
        header = await protocol_handler.MQTTFixedHeader.from_stream(reader)
    if header is None:
        return False
    kind, length = header.packet_type, header.remaining_length
    if kind == PUBLISH:
        message = parse_publish(header.flags, await read_or_raise(reader, length) if length else b"")
        await limits.throttle(self, message.topic)  # reads pause while the client is over its rate
        if message.qos == 0 and header.flags & 0x08:
            logger.warning("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH: ignored")
        else:
            if path.events:  # plugins that see messages may read the packet
                message.publish_packet = PublishPacket.build(
                    message.topic, message.data, message.packet_id, False, message.qos, message.retain
                )
            await on_publish(self, path, message)
    elif kind in _WAITERS and length == 2:
        await _ack(self, path, kind, int.from_bytes(await read_or_raise(reader, 2), "big"))
    elif kind in (RESERVED_0, RESERVED_15):
        logger.warning("reserved packet type, closing")
        await self.handle_connection_closed()
    else:
        packet = await packet_class(header).from_stream(reader, fixed_header=header)
        if kind in (SUBSCRIBE, UNSUBSCRIBE):
            await _subscription(self, path, kind, packet)
        elif kind == CONNECT:
            await self.handle_connect(packet)  # amqtt's rule: a second CONNECT closes
        elif kind in _HANDLERS:
            running.append(asyncio.create_task(getattr(self, _HANDLERS[kind])(packet)))
        else:
            logger.warning("unhandled packet type %d", kind)
    return True


async def _reader_loop(self: BrokerProtocolHandler) -> None:
    path = fastpath.of(self)
    if path is None or self._reader_ready is None:
        await _original_reader_loop(self)
        return
    running: collections.deque[asyncio.Task[Any]] = collections.deque()
    self._reader_ready.set()
    while self.reader is not None:
        while running and running[0].done():
            running.popleft()
        try:
            if not await _handle_one(self, path, self.reader, running):
                break
        except MalformedPacketError as exc:
            logger.warning("%s, closing", exc)
            break
        except limits.ClientLimitError:
            break  # reported by broker/limits.py
        except MQTTError:
            logger.debug("message discarded")
        except asyncio.CancelledError:
            break
        except TimeoutError:
            self.handle_read_timeout()
        except NoDataError:
            logger.debug("no data")
        except Exception as exc:
            logger.warning("unhandled exception in reader: %r", exc)
            break
    # As amqtt's loop ends.
    while running:
        running.popleft().cancel()
    await self.handle_connection_closed()
    self._reader_stopped.set()
    await self.stop()


_original_reader_loop: Any = None


def apply() -> None:
    """Install the reader loop on the broker's handler only (amqtt's client handler keeps its own)."""
    global _original_reader_loop  # noqa: PLW0603 - patches are process-wide by nature
    if _original_reader_loop is not None:
        return
    _original_reader_loop = BrokerProtocolHandler._reader_loop
    BrokerProtocolHandler._reader_loop = _reader_loop


__all__ = ["apply", "on_ack", "on_publish", "parse_publish"]
