"""Monkeypatches for amqtt 0.12.1 bugs (shared/reference/amqtt.md §7-8); re-verify before any upgrade."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol import handler as protocol_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from broker import auth, fastpath, handler

logger = logging.getLogger(__name__)

AMQTT_VERSION = "0.12.1"
DEFAULT_MAX_PACKET = 1024 * 1024


class PacketTooLargeError(Exception):
    """A client announced a packet bigger than the configured maximum; its connection is closed."""


class _LimitedFixedHeader(MQTTFixedHeader):  # type: ignore[misc]
    # Checked on the announced remaining length, before amqtt reads the body into memory (B5).
    max_packet: int = DEFAULT_MAX_PACKET

    @classmethod
    async def from_stream(cls, reader: Any) -> Any:
        header = await super().from_stream(reader)
        if header is not None and header.remaining_length > cls.max_packet:
            # Not an MQTTError: amqtt swallows those and would then read the body as the next packet.
            raise PacketTooLargeError(f"packet of {header.remaining_length} bytes over {cls.max_packet}")
        return header


_closing: set[asyncio.Future[Any]] = set()  # keeps the close tasks referenced until done


def _close_on_keepalive_timeout(self: BrokerProtocolHandler) -> None:
    # B2: amqtt's handler ignores the keep-alive timeout, so a vanished client never gets its will sent.
    task = asyncio.ensure_future(self.handle_connection_closed())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_original_replay = Broker._publish_retained_messages_for_subscription


async def _replay_own_filters_only(self: Broker, subscription: tuple[str, int], session: Any) -> None:
    # B1: on CONNECT amqtt replays retained messages for every filter any client holds, to every client.
    holders = self._subscriptions.get(subscription[0], [])
    if any(s.client_id == session.client_id for s, _ in holders):
        await _original_replay(self, subscription, session)


_original_connect_payload = ConnectPayload.from_stream.__func__
MQTT_311 = 4
CONNECT_VARIABLE_HEADER = 10  # protocol name, level, flags, keep-alive


async def _payload_or_refusal(cls: Any, reader: Any, fixed_header: Any, variable_header: Any) -> Any:
    # An MQTT 5 CONNECT has properties where 3.1.1 has the client id: amqtt misparsed it and never
    # answered, leaking a connection slot (B6). Skip the rest of the packet and let amqtt's own check
    # send CONNACK "unacceptable protocol version", so clients (aiomqtt, mqtt.js) fall back at once.
    if variable_header is None or fixed_header is None or variable_header.proto_level == MQTT_311:
        return await _original_connect_payload(cls, reader, fixed_header, variable_header)
    left = fixed_header.remaining_length - CONNECT_VARIABLE_HEADER
    while left > 0:
        chunk = await reader.read(left)
        if not chunk:
            break
        left -= len(chunk)
    payload = cls()
    payload.client_id = "refused-protocol"
    payload.will_topic, payload.will_message = "", b""
    return payload


_applied = False


def apply(max_packet: int = DEFAULT_MAX_PACKET) -> None:
    """Install the patches (idempotent) and set the largest packet a client may send.

    Besides the bug fixes here: broker/fastpath.py (delivery, B3) and broker/handler.py (reading).
    """
    global _applied  # noqa: PLW0603 - patches are process-wide by nature
    _LimitedFixedHeader.max_packet = max_packet
    if _applied:
        return
    import amqtt  # noqa: PLC0415 - checked once, at patch time

    version = getattr(amqtt, "__version__", AMQTT_VERSION)
    if version != AMQTT_VERSION:
        logger.warning("amqtt %s is not the verified %s: the patches may not fit", version, AMQTT_VERSION)
    BrokerProtocolHandler.handle_read_timeout = _close_on_keepalive_timeout
    Broker._publish_retained_messages_for_subscription = _replay_own_filters_only
    protocol_handler.MQTTFixedHeader = _LimitedFixedHeader
    ConnectPacket.FIXED_HEADER = _LimitedFixedHeader  # the CONNECT is read outside the handler loop
    ConnectPayload.from_stream = classmethod(_payload_or_refusal)
    # After B1's replay filter, which stays the fallback of the fast path's own replay.
    fastpath.apply()
    handler.apply()
    auth.apply()
    # The transitions state machine logs every session state change at INFO.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    _applied = True
