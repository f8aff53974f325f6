"""Monkeypatches for amqtt 0.12.1 bugs (shared/reference/amqtt.md §7-8); re-verify before any upgrade."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol import handler as protocol_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

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


_applied = False


def apply(max_packet: int = DEFAULT_MAX_PACKET) -> None:
    """Install the patches (idempotent) and set the largest packet a client may send."""
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
    # The transitions state machine logs every session state change at INFO.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    _applied = True
