"""How subsystems publish and subscribe through: in-process to the embedded broker, or aiomqtt."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from node.framework.errors import ConfigError
from node.framework.topics import matches

logger = logging.getLogger(__name__)

MAX_CACHED_TOPICS = 4096


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
        # Nearly every subscription is an exact topic: a dict lookup instead of matching them all
        # keeps delivery flat as subsystems are added.
        self._exact: dict[str, list[Handler]] = {}
        self._wild: list[tuple[str, Handler]] = []
        # The wildcard handlers of each topic seen, until a subscription changes: a topic's matches
        # are worked out once, not for every message (the node republishes the same topics).
        self._wild_of: dict[str, tuple[Handler, ...]] = {}
        self._on_connect: list[ConnectCallback] = []

    def on_connect(self, callback: ConnectCallback) -> None:
        """Called after every reconnection (not the first): republish what the broker may have lost."""
        self._on_connect.append(callback)

    def _dispatch(self, message: Message) -> None:
        """Hand a message to every handler whose filter matches, once per handler.

        A handler holding two matching filters (its own `source/set` and a watched `source/+`) gets
        the message once, as a broker delivers one message per client, not per subscription.
        """
        exact = self._exact.get(message.topic, ())
        wild = self._wild_of.get(message.topic)
        if wild is None:
            if len(self._wild_of) >= MAX_CACHED_TOPICS:
                self._wild_of.clear()
            wild = tuple(h for topic_filter, h in self._wild if matches(topic_filter, message.topic))
            self._wild_of[message.topic] = wild
        handlers = tuple(dict.fromkeys((*exact, *wild))) if wild else tuple(exact)
        for handler in handlers:
            handler(message)

    def _add(self, topic_filter: str, handler: Handler) -> None:
        if "+" in topic_filter or "#" in topic_filter:
            self._wild.append((topic_filter, handler))
            self._wild_of.clear()
        else:
            self._exact.setdefault(topic_filter, []).append(handler)

    def _subscriptions(self) -> list[tuple[str, Handler]]:
        """Every (filter, handler) pair held now."""
        exact = [(f, h) for f, handlers in self._exact.items() for h in handlers]
        return exact + list(self._wild)

    def filters(self) -> set[str]:
        """Every filter some handler holds."""
        return set(self._exact) | {f for f, _ in self._wild}

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
            if topic_filter in self._exact:
                self._exact[topic_filter].remove(handler)
                if not self._exact[topic_filter]:
                    del self._exact[topic_filter]
            else:
                self._wild.remove((topic_filter, handler))
                self._wild_of.clear()

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
        self._add(topic_filter, handler)
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

    def with_password_file(self, path: Path) -> BrokerURL:
        """This URL's user with the password `path` holds (its first line), or ConfigError saying why not.

        The password stays out of milo.toml (world-readable) and every command line: `milo install
        --satellite --broker-user` writes it to a file of the node's user, mode 0600.
        """
        if not self.username:
            raise ConfigError(
                f"broker_password_file {path}: the broker URL names no user (mqtt://USER@host:port)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"broker_password_file {path} is missing") from exc
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"broker_password_file {path}: {exc}") from exc
        password = text.split("\n", 1)[0].rstrip("\r")
        if not password:
            raise ConfigError(f"broker_password_file {path} is empty")
        return replace(self, password=password)

    def safe(self) -> str:
        """The URL without its password, for logs and `info`."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"
