"""The embedded broker's delivery path against mosquitto's: QoS, the QoS 1/2 handshakes, matching, order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from broker.fastpath import MAX_INFLIGHT
from harness.rawmqtt import (
    ack_packet,
    connect_packet,
    parse_packets,
    parse_publish,
    publish_packet,
    subscribe_packet,
    unsubscribe_packet,
)
from tests.conftest import NodeFactory
from tests.helpers import NODELAY, TIMEOUT, probe

LEVELS = (0, 1, 2)
PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 3, 4, 5, 6, 7, 9, 11, 13


class Raw:
    """A hand-driven MQTT 3.1.1 client: the test decides every acknowledgement."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""
        self.packets: deque[tuple[int, bytes]] = deque()

    async def packet(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        while not self.packets:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                raise ConnectionError("closed by the broker")
            packets, self.buf = parse_packets(self.buf + chunk)
            self.packets.extend(packets)
        return self.packets.popleft()

    async def expect(self, kind: int) -> tuple[int, bytes]:
        first, body = await self.packet()
        assert first >> 4 == kind, f"expected packet type {kind}, got {first >> 4}: {body!r}"
        return first, body

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        self.send(subscribe_packet(1, topic_filter, qos))
        _, body = await self.expect(SUBACK)
        assert body[2] == qos, body


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(*NODELAY)
    client = Raw(reader, writer)
    client.send(connect_packet(f"raw-{uuid.uuid4().hex[:8]}", 60))
    _, body = await client.expect(2)
    assert body[1] == 0, f"refused: {body!r}"
    try:
        yield client
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def client(port: int) -> AsyncIterator[aiomqtt.Client]:
    c = aiomqtt.Client("127.0.0.1", port, identifier=f"q-{uuid.uuid4().hex[:8]}", socket_options=[NODELAY])
    async with c:
        yield c


async def next_message(c: aiomqtt.Client, timeout: float = TIMEOUT) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(aiter(c.messages)), timeout)


async def delivered_qos(port: int, base: str) -> dict[str, int]:
    """The QoS each kind of message arrives at, for every publish and subscription QoS."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    seen: dict[str, int] = {}
    subscribers = {}
    async with contextlib.AsyncExitStack() as stack:
        for sub in LEVELS:
            subscribers[sub] = await stack.enter_async_context(client(port))
            await subscribers[sub].subscribe(f"{prefix}/live/+/{sub}", qos=sub)
        async with client(port) as pub:
            for p in LEVELS:
                for sub in LEVELS:
                    await pub.publish(f"{prefix}/live/{p}/{sub}", b"x", qos=p)
                    m = await next_message(subscribers[sub])
                    seen[f"live pub {p} sub {sub}"] = m.qos
            for p in LEVELS:
                await pub.publish(f"{prefix}/kept/{p}", b"x", qos=p, retain=True)
            for sub in LEVELS:
                async with client(port) as late:
                    await late.subscribe(f"{prefix}/kept/+", qos=sub)
                    for _ in LEVELS:
                        m = await next_message(late)
                        seen[f"retained pub {m.topic.value[-1]} sub {sub}"] = m.qos
            for p in LEVELS:  # leave the shared mosquitto clean
                await pub.publish(f"{prefix}/kept/{p}", b"", qos=1, retain=True)
            # The node's own messages: a state (retained, QoS 1) and an error event (QoS 0).
            for sub in LEVELS:
                async with client(port) as ui:
                    await ui.subscribe(f"{base}/counter", qos=sub)
                    await ui.subscribe(f"{base}/error", qos=sub)
                    seen[f"node state sub {sub}"] = (await next_message(ui)).qos
                    await pub.publish(f"{base}/counter/set", b"not a number", qos=1)
                    seen[f"node error sub {sub}"] = (await next_message(ui)).qos
    return seen


async def test_delivered_qos_is_the_lower_of_publish_and_subscription_as_on_mosquitto(
    run_node: NodeFactory,
) -> None:
    # MQTT 3.1.1 §3.8.4; amqtt 0.12.1 delivered at the subscription's QoS (B3).
    seen = {}
    for kind in ("embedded", "mosquitto"):
        async with run_node(kind) as r:
            seen[kind] = await delivered_qos(r.port, r.base)
    expected = {f"live pub {p} sub {s}": min(p, s) for p in LEVELS for s in LEVELS}
    expected |= {f"retained pub {p} sub {s}": min(p, s) for p in LEVELS for s in LEVELS}
    expected |= {f"node state sub {s}": min(1, s) for s in LEVELS}
    expected |= {f"node error sub {s}": 0 for s in LEVELS}
    assert seen["mosquitto"] == expected
    assert seen["embedded"] == seen["mosquitto"]


async def test_a_will_goes_out_at_the_lower_qos(run_node: NodeFactory) -> None:
    async with run_node() as r, client(r.port) as watcher:
        await watcher.subscribe("wills/#", qos=1)
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(connect_packet("leaving", 60, will=("wills/leaving", b"gone")))  # will QoS 1
        await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
        writer.transport.abort()  # no DISCONNECT: the will goes out
        will = await next_message(watcher)
        assert (will.topic.value, will.payload, will.qos) == ("wills/leaving", b"gone", 1)


async def test_qos2_publish_is_delivered_once_through_a_resend(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind) as r, client(r.port) as watcher, raw(r.port) as sender:
        topic = f"test/{uuid.uuid4().hex[:8]}"
        await watcher.subscribe(f"{topic}/#", qos=2)
        sender.send(publish_packet(f"{topic}/once", b"1", qos=2, packet_id=7))
        _, body = await sender.expect(PUBREC)
        assert body == b"\x00\x07"
        # Our PUBREC "lost": the client resends the PUBLISH (DUP) before releasing it.
        sender.send(publish_packet(f"{topic}/once", b"1", qos=2, packet_id=7, dup=True))
        await sender.expect(PUBREC)
        sender.send(ack_packet("pubrel", 7))
        _, body = await sender.expect(PUBCOMP)
        assert body == b"\x00\x07"
        sender.send(publish_packet(f"{topic}/after", b"2", qos=0))
        got = [await next_message(watcher), await next_message(watcher)]
        assert [(m.topic.value, m.qos) for m in got] == [(f"{topic}/once", 2), (f"{topic}/after", 0)]


async def test_qos2_delivery_handshake(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, raw(r.port) as sub, client(r.port) as pub:
        topic = f"test/{uuid.uuid4().hex[:8]}"
        await sub.subscribe(topic, 2)
        await pub.publish(topic, b"exactly once", qos=2)
        first, body = await sub.expect(PUBLISH)
        name, qos, packet_id, payload, _ = parse_publish(first, body)
        assert (name, qos, payload) == (topic, 2, b"exactly once")
        assert packet_id is not None
        sub.send(ack_packet("pubrec", packet_id))
        _, body = await sub.expect(PUBREL)
        assert int.from_bytes(body, "big") == packet_id
        sub.send(ack_packet("pubcomp", packet_id))
        if broker_kind == "embedded":
            # Acknowledged all the way: nothing is kept for redelivery.
            await pub.publish(topic, b"flush", qos=0)
            await sub.expect(PUBLISH)
            assert r.node.broker is not None
            assert all(not s.inflight_out for s, _ in r.node.broker._b.sessions.values())


async def test_qos1_deliveries_are_kept_until_acknowledged_and_bounded(run_node: NodeFactory) -> None:
    async with run_node() as r, raw(r.port) as sub, client(r.port) as pub:
        assert r.node.broker is not None
        topic = f"test/{uuid.uuid4().hex[:8]}"
        await sub.subscribe(topic, 1)
        ids = []
        for i in range(MAX_INFLIGHT + 20):
            await pub.publish(topic, str(i).encode(), qos=1)
        for i in range(MAX_INFLIGHT + 20):
            first, body = await sub.expect(PUBLISH)
            _, qos, packet_id, payload, _ = parse_publish(first, body)
            assert (qos, payload) == (1, str(i).encode())  # every one delivered, in order
            ids.append(packet_id)
        sessions = {cid: s for cid, (s, _) in r.node.broker._b.sessions.items()}
        inflight = next(s.inflight_out for s in sessions.values() if s.inflight_out)
        # A client that never acknowledges cannot grow the broker: the oldest are forgotten.
        assert len(inflight) == MAX_INFLIGHT
        assert list(inflight) == ids[-MAX_INFLIGHT:]
        for packet_id in ids[-10:]:
            assert packet_id is not None
            sub.send(ack_packet("puback", packet_id))
        sub.send(b"\xc0\x00")  # PINGREQ: answered once the acks before it were handled
        await sub.expect(PINGRESP)
        assert len(inflight) == MAX_INFLIGHT - 10


async def test_wildcard_matches_follow_subscription_changes(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, client(r.port) as pub, client(r.port) as a:
        topic = f"test/{uuid.uuid4().hex[:8]}"
        await a.subscribe(f"{topic}/+/x", qos=0)
        await pub.publish(f"{topic}/1/x", b"1")
        assert (await next_message(a)).payload == b"1"
        async with client(r.port) as b:
            await b.subscribe(f"{topic}/#", qos=0)
            await pub.publish(f"{topic}/1/x", b"2")
            assert (await next_message(a)).payload == b"2"
            assert (await next_message(b)).payload == b"2"
            await a.unsubscribe(f"{topic}/+/x")
            await pub.publish(f"{topic}/1/x", b"3")
            assert (await next_message(b)).payload == b"3"
        async with client(r.port) as c:
            await c.subscribe(f"{topic}/1/x", qos=0)
            await a.subscribe(f"{topic}/flush", qos=0)
            await pub.publish(f"{topic}/1/x", b"4")
            await pub.publish(f"{topic}/flush", b"")
            assert (await next_message(c)).payload == b"4"
            assert (await next_message(a)).topic.value == f"{topic}/flush"  # and not "3" or "4"


async def test_a_publish_right_behind_a_subscribe_finds_the_subscription(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind) as r, raw(r.port) as c:
        topic = f"test/{uuid.uuid4().hex[:8]}"
        # One segment: the broker must handle the SUBSCRIBE before the PUBLISH behind it.
        c.send(subscribe_packet(1, f"{topic}/#", 1) + publish_packet(f"{topic}/mine", b"back"))
        await c.expect(SUBACK)
        first, body = await c.expect(PUBLISH)
        assert parse_publish(first, body)[3] == b"back"
        c.send(unsubscribe_packet(2, f"{topic}/#") + publish_packet(f"{topic}/gone", b"x"))
        await c.expect(UNSUBACK)  # and nothing more for this client
        c.send(b"\xc0\x00")
        await c.expect(PINGRESP)
        assert not c.packets


@pytest.mark.parametrize(
    "packet",
    [
        publish_packet("", b"x"),
        publish_packet("test/+/nope", b"x"),
        publish_packet("test/#", b"x", qos=1, packet_id=1),
        bytes([0x36]) + publish_packet("test/qos3", b"x")[1:],  # QoS 3
    ],
    ids=["empty topic", "wildcard", "wildcard qos1", "qos 3"],
)
async def test_a_malformed_publish_closes_the_connection(
    run_node: NodeFactory, broker_kind: str, packet: bytes
) -> None:
    async with run_node(broker_kind) as r, raw(r.port) as bad:
        bad.send(packet)
        # amqtt 0.12.1 stopped reading but left the socket open, or read on out of step (B4);
        # mosquitto closes it.
        with pytest.raises(ConnectionError):
            await bad.packet()


@pytest.mark.parametrize("qos", LEVELS)
async def test_a_burst_arrives_whole_and_in_order(run_node: NodeFactory, broker_kind: str, qos: int) -> None:
    async with run_node(broker_kind) as r, client(r.port) as sub, client(r.port) as pub:
        topic = f"test/{uuid.uuid4().hex[:8]}"
        await sub.subscribe(f"{topic}/#", qos=qos)
        for i in range(200):
            await pub.publish(f"{topic}/{i % 3}", str(i).encode(), qos=qos)
        got = [int((await next_message(sub)).payload) for _ in range(200)]
        assert got == list(range(200))


async def test_a_burst_reaches_a_websocket_client_in_order(run_node: NodeFactory) -> None:
    async with run_node() as r, client(r.port) as pub:
        assert r.node.http_port is not None
        topic = f"test/{uuid.uuid4().hex[:8]}"
        async with probe(r.node.http_port, transport="websockets") as ws:
            await ws.subscribe(f"{topic}/#")
            for i in range(200):
                await pub.publish(f"{topic}/{i % 3}", str(i).encode(), qos=i % 3)
            await ws.wait_for(f"{topic}/{199 % 3}", lambda g: g.text == "199")
            assert [int(g.text) for g in ws.seen] == list(range(200))
