"""Waiting on MQTT messages with timeouts: the suite never sleeps a fixed time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt

from node.framework.payloads import echo

TIMEOUT = 5.0
# Nagle off, as `set_tcp_nodelay` on the test mosquitto: a small publish otherwise waits for the
# broker's delayed ACK of the previous packet, ~40 ms a round trip.
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

Payload = TypeVar("Payload", bound=str | bytes)


@dataclass
class Got:
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


class Probe:
    """An aiomqtt client that records everything it receives and waits for what a test expects."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[Got] = []
        self._new = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
            async with self._new:
                self.seen.append(Got(m.topic.value, bytes(payload), bool(m.retain)))
                self._new.notify_all()

    async def subscribe(self, *filters: str) -> None:
        for f in filters:
            await self.client.subscribe(f, qos=1)

    async def publish(
        self, topic: str, payload: str | bytes | dict[str, Any], *, retain: bool = False
    ) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        await self.client.publish(topic, data, qos=1, retain=retain)

    async def wait_for(
        self,
        topic: str,
        where: Callable[[Got], bool] = lambda g: True,
        *,
        after: int = 0,
        timeout: float = TIMEOUT,
    ) -> Got:
        """The first message on `topic` (index >= after) that satisfies `where`."""

        def find() -> Got | None:
            for g in self.seen[after:]:
                if g.topic == topic and where(g):
                    return g
            return None

        async with self._new:
            try:
                await asyncio.wait_for(self._new.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                seen = [(g.topic, g.payload[:120]) for g in self.seen[after:]]
                last = next((g.payload[:2000] for g in reversed(self.seen) if g.topic == topic), None)
                raise AssertionError(
                    f"nothing on {topic} within {timeout} s; seen: {seen}; the last on it: {last!r}"
                ) from None
            found = find()
            assert found is not None
            return found

    def mark(self) -> int:
        return len(self.seen)

    def on(self, topic: str, after: int = 0) -> list[Got]:
        return [g for g in self.seen[after:] if g.topic == topic]

    async def request(self, topic: str, body: dict[str, Any], timeout: float = TIMEOUT) -> Any:
        reply_to = f"test/reply/{uuid.uuid4().hex}"
        await self.subscribe(reply_to)
        mark = self.mark()
        await self.publish(topic, {**body, "reply_to": reply_to})
        return (await self.wait_for(reply_to, after=mark, timeout=timeout)).json()

    async def quiet(self, topic: str, *, after: int, probe_topic: str) -> None:
        """Prove nothing more arrived on `topic`: a round trip on `probe_topic` flushes the pipe first."""
        mark = self.mark()
        token = uuid.uuid4().hex
        await self.subscribe(probe_topic)
        await self.publish(probe_topic, token)
        await self.wait_for(probe_topic, lambda g: g.text == token, after=mark)
        assert self.on(topic, after) == [], f"unexpected on {topic}: {self.on(topic, after)}"


@contextlib.asynccontextmanager
async def probe(port: int, *, transport: str = "tcp", **kw: Any) -> AsyncIterator[Probe]:
    extra: dict[str, Any] = {"socket_options": [NODELAY]}
    if transport == "websockets":
        extra.update(transport="websockets", websocket_path="/mqtt")
    client = aiomqtt.Client("127.0.0.1", port, identifier=f"probe-{uuid.uuid4().hex[:8]}", **extra, **kw)
    async with client:
        p = Probe(client)
        p._task = asyncio.create_task(p._pump())
        try:
            yield p
        finally:
            p._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await p._task


async def expect_errors(
    p: Probe, base: str, topic: str, cases: Mapping[Payload, str], *, retain: bool = False
) -> list[dict[str, Any]]:
    """Publish each payload on `topic`; the next `<base>/error` must carry its code, the topic and payload.

    Returns the error payloads in the order of `cases`, for the checks a caller adds.
    """
    errors = []
    for payload, code in cases.items():
        mark = p.mark()
        await p.publish(topic, payload, retain=retain)
        err: dict[str, Any] = (await p.wait_for(f"{base}/error", after=mark)).json()
        assert err["code"] == code, (payload, err)
        assert set(err) == {"topic", "payload", "error", "code"}, err
        assert err["topic"] == topic, (payload, err)
        raw = payload.encode() if isinstance(payload, str) else payload
        assert err["payload"] == echo(raw), (payload, err)
        assert err["error"], err
        errors.append(err)
    return errors
