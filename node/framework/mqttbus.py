"""The bus to an external broker (mosquitto, EMQX): one aiomqtt client, reconnecting; imported only then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.framework.bus import BrokerURL, Bus, Handler, Message
from node.framework.errors import ConfigError
from node.framework.topics import matches

logger = logging.getLogger(__name__)


class MqttBus(Bus):
    """An aiomqtt client to an external broker (mosquitto, EMQX), reconnecting with backoff."""

    def __init__(
        self,
        url: BrokerURL,
        *,
        will_topic: str,
        will_payload: bytes = b"offline",
        client_prefix: str = "milo",
    ) -> None:
        super().__init__()
        self.url = url
        self._will_topic, self._will_payload = will_topic, will_payload
        self._client_id = f"{client_prefix}-{secrets.token_hex(4)}"
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first = True
        # MQTT 5 first: its retain-as-published option shows the node that a live command was
        # published retained, so it can refuse it as the embedded bus does. 3.1.1 brokers fall back.
        self.protocol = aiomqtt.ProtocolVersion.V5
        # MQTT 5 subscription identifiers: a broker sends one copy of a message per matching
        # subscription (mosquitto does), each naming its own; see _dispatch_copy.
        self._sub_ids: dict[str, int] = {}

    @property
    def description(self) -> str:
        return self.url.safe()

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-bus")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError as exc:
            raise ConfigError(f"cannot reach the broker at {self.url.safe()} within {timeout:.0f} s") from exc

    async def _run(self) -> None:
        delay = 0.5
        while True:
            client = aiomqtt.Client(
                self.url.host,
                self.url.port,
                identifier=self._client_id,
                username=self.url.username,
                password=self.url.password,
                will=aiomqtt.Will(self._will_topic, self._will_payload, qos=1, retain=True),
                keepalive=30,
                protocol=self.protocol,
                # paho leaves Nagle on: a state answering a QoS 1/2 command then waits for the broker's
                # delayed ACK, ~40 ms on Linux (bench.qos showed it on mosquitto).
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            )
            try:
                async with client:
                    self._client = client
                    delay = 0.5
                    for topic_filter in self.filters():
                        await self._subscribe(client, topic_filter)
                    self._connected.set()
                    if not self._first:
                        logger.info("reconnected to %s", self.url.safe())
                        for callback in self._on_connect:
                            await callback()
                    self._first = False
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes | bytearray) else b""
                        message = Message(m.topic.value, bytes(payload), bool(m.retain))
                        ids = getattr(m.properties, "SubscriptionIdentifier", None) if m.properties else None
                        if ids:
                            self._dispatch_copy(message, set(ids))
                        else:
                            self._dispatch(message)
            except MqttConnectError as exc:
                if self.protocol is aiomqtt.ProtocolVersion.V5 and exc.rc in (1, 132):
                    logger.info("broker %s speaks MQTT 3.1.1 only", self.url.safe())
                    self.protocol = aiomqtt.ProtocolVersion.V311
                    continue
                logger.warning("broker %s: %s; retrying in %.1f s", self.url.safe(), exc, delay)
            except aiomqtt.MqttError as exc:
                logger.warning("broker %s: %s; retrying in %.1f s", self.url.safe(), exc, delay)
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(delay)  # reconnection backoff
            delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1) -> None:
        client = self._client
        if client is None:
            # States are republished on reconnection; a command answer lost here was for a gone client.
            logger.debug("not connected: dropped %s", topic)
            return
        # Shielded: aiomqtt waits for the PUBACK with asyncio.wait_for, which on 3.11 swallows a
        # cancellation that arrives with the PUBACK, and the cancelled subsystem would run on.
        pending = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        pending.add_done_callback(_log_publish_failure)
        with contextlib.suppress(aiomqtt.MqttError):  # logged by the callback, cancelled or not
            await asyncio.shield(pending)

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        known = topic_filter in self.filters()
        self._add(topic_filter, handler)
        client = self._client
        if client is not None:
            # Subscribing again to a known filter makes the broker resend its retained messages,
            # which the new handler needs.
            await self._subscribe(client, topic_filter)
        elif known:
            logger.debug("subscription %s will be made on connection", topic_filter)

    def _dispatch_copy(self, message: Message, ids: set[int]) -> None:
        """One copy per matching subscription arrives: a handler takes only its first filter's copy.

        So a handler with overlapping filters (a runner's `source/set` and its watched `source/+`)
        acts once, as on the embedded broker; with a broker that sends one copy naming every
        subscription, the first filter is among the ids all the same.
        """
        first: dict[Handler, int] = {}
        for topic_filter, handler in self._subscriptions():
            if matches(topic_filter, message.topic):
                sub_id = self._sub_ids.get(topic_filter, 0)
                first[handler] = min(first.get(handler, sub_id), sub_id)
        for handler, sub_id in first.items():
            if sub_id in ids:
                handler(message)

    async def _subscribe(self, client: aiomqtt.Client, topic_filter: str) -> None:
        if self.protocol is aiomqtt.ProtocolVersion.V5:
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            sub_id = self._sub_ids.setdefault(topic_filter, len(self._sub_ids) + 1)
            properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            properties.SubscriptionIdentifier = sub_id
            await client.subscribe(topic_filter, options=options, properties=properties)
        else:
            await client.subscribe(topic_filter, qos=1)

    async def unsubscribe(self, topic_filter: str, handler: Handler) -> None:
        await super().unsubscribe(topic_filter, handler)
        client = self._client
        if client is not None and topic_filter not in self.filters():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(topic_filter)


def _log_publish_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and isinstance(task.exception(), aiomqtt.MqttError):
        logger.warning("publish failed: %s", task.exception())
