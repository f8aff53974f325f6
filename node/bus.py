"""How subsystems publish and subscribe through: in-process to the embedded broker, or aiomqtt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.errors import ConfigError
from node.topics import matches

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber sees it."""

    topic: str
    payload: bytes
    retain: bool


# Handlers run on the bus's delivery path: they must not block (subsystems enqueue and return).
Handler = Callable[[Message], None]
ConnectCallback = Callable[[], Awaitable[None]]


class Bus(ABC):
    """Publish, subscribe, and get told when the connection to the broker is (re)made."""

    def __init__(self) -> None:
        self._subs: list[tuple[str, Handler]] = []
        self._on_connect: list[ConnectCallback] = []

    def on_connect(self, callback: ConnectCallback) -> None:
        """Called after every reconnection (not the first): republish what the broker may have lost."""
        self._on_connect.append(callback)

    def _dispatch(self, message: Message) -> None:
        for topic_filter, handler in list(self._subs):
            if matches(topic_filter, message.topic):
                handler(message)

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1
    ) -> None: ...

    @abstractmethod
    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Start delivering matching messages to `handler`, retained ones first (with `retain=True`)."""

    async def unsubscribe(self, topic_filter: str, handler: Handler) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove((topic_filter, handler))

    @property
    @abstractmethod
    def description(self) -> str: ...


class InProcessBroker(Protocol):
    """What LocalBus needs of the embedded broker (broker.EmbeddedBroker)."""

    async def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None: ...

    def retained(self) -> Iterator[tuple[str, bytes]]: ...


class LocalBus(Bus):
    """Subsystems in the broker's own process: no socket, no encoding, no TCP hop."""

    def __init__(self, broker: InProcessBroker, description: str = "embedded") -> None:
        super().__init__()
        self._broker = broker
        self._description = description

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def deliver(self, topic: str, payload: bytes, retain: bool) -> None:
        """Entry point for messages from network clients (the broker's relay plugin)."""
        self._dispatch(Message(topic, payload, retain))

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        await self._broker.publish(topic, data, retain=retain, qos=qos)
        # A live message is delivered with retain=0, as MQTT 3.1.1 does for established subscriptions.
        self._dispatch(Message(topic, data, False))

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self._subs.append((topic_filter, handler))
        for topic, data in self._broker.retained():
            if matches(topic_filter, topic):
                handler(Message(topic, data, True))

    @property
    def description(self) -> str:
        return self._description


@dataclass(frozen=True)
class BrokerURL:
    """`mqtt://[user:pass@]host:port`, parsed."""

    host: str
    port: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// (got {parts.scheme or 'none'})")
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r} has no host")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: {exc}") from exc
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, user, password)

    def safe(self) -> str:
        """The URL without its password, for logs and `info`."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


class MqttBus(Bus):
    """An aiomqtt client to an external broker (mosquitto, EMQX), reconnecting with backoff."""

    def __init__(self, url: BrokerURL, *, will_topic: str, client_prefix: str = "milo") -> None:
        super().__init__()
        self.url = url
        self._will_topic = will_topic
        self._client_id = f"{client_prefix}-{secrets.token_hex(4)}"
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first = True
        # MQTT 5 first: its retain-as-published option shows the node that a live command was
        # published retained, so it can refuse it as the embedded bus does. 3.1.1 brokers fall back.
        self.protocol = aiomqtt.ProtocolVersion.V5

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
                will=aiomqtt.Will(self._will_topic, b"offline", qos=1, retain=True),
                keepalive=30,
                protocol=self.protocol,
            )
            try:
                async with client:
                    self._client = client
                    delay = 0.5
                    for topic_filter in {f for f, _ in self._subs}:
                        await self._subscribe(client, topic_filter)
                    self._connected.set()
                    if not self._first:
                        logger.info("reconnected to %s", self.url.safe())
                        for callback in self._on_connect:
                            await callback()
                    self._first = False
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes | bytearray) else b""
                        self._dispatch(Message(m.topic.value, bytes(payload), bool(m.retain)))
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
        known = any(f == topic_filter for f, _ in self._subs)
        self._subs.append((topic_filter, handler))
        client = self._client
        if client is not None:
            # Subscribing again to a known filter makes the broker resend its retained messages,
            # which the new handler needs.
            await self._subscribe(client, topic_filter)
        elif known:
            logger.debug("subscription %s will be made on connection", topic_filter)

    async def _subscribe(self, client: aiomqtt.Client, topic_filter: str) -> None:
        if self.protocol is aiomqtt.ProtocolVersion.V5:
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            await client.subscribe(topic_filter, options=options)
        else:
            await client.subscribe(topic_filter, qos=1)

    async def unsubscribe(self, topic_filter: str, handler: Handler) -> None:
        await super().unsubscribe(topic_filter, handler)
        client = self._client
        if client is not None and all(f != topic_filter for f, _ in self._subs):
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(topic_filter)


def _log_publish_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and isinstance(task.exception(), aiomqtt.MqttError):
        logger.warning("publish failed: %s", task.exception())
