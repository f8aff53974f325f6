"""The embedded broker's per-client limits: CONNECT deadline, connections, PUBLISH rate, subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from harness.rawmqtt import (
    connect_packet,
    parse_packets,
    publish_packet,
    subscribe_packet,
    unsubscribe_packet,
)
from node.config import MqttOptions
from tests.conftest import NodeFactory
from tests.helpers import Probe, probe

SUBACK = 0x90


async def _eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the broker sent until it closed the socket."""
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:  # closed with our unread writes still in flight: a reset
        pass
    return b"".join(chunks)


async def _ws_closed(ws: Any) -> None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        return


async def _connect(port: int, client_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A raw client; returns the CONNACK's return code too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect_packet(client_id, 60))
    await writer.drain()
    connack = await asyncio.wait_for(reader.readexactly(4), 5)
    assert connack[0] == 0x20, connack
    return reader, writer, connack[3]


async def _error(p: Probe, base: str, code: str, after: int, timeout: float = 10.0) -> dict[str, Any]:
    got: dict[str, Any] = (
        await p.wait_for(f"{base}/error", lambda g: g.json()["code"] == code, after=after, timeout=timeout)
    ).json()
    return got


async def test_sockets_that_send_no_connect_are_closed_by_the_deadline(run_node: NodeFactory) -> None:
    async with run_node(mqtt=MqttOptions(connect_timeout_s=1.0)) as r, probe(r.port) as p:
        assert r.node.http_port is not None
        tcp = [await asyncio.open_connection("127.0.0.1", r.port) for _ in range(200)]
        ws = [
            await websockets.connect(f"ws://127.0.0.1:{r.node.http_port}/mqtt", subprotocols=["mqtt"])  # type: ignore[list-item]
            for _ in range(10)
        ]
        # The deadline is 1 s; the broker must have closed every one of them well within 10 s.
        async with asyncio.timeout(10):
            closed = await asyncio.gather(*(_eof(reader) for reader, _ in tcp))
            await asyncio.gather(*(_ws_closed(w) for w in ws))
        assert closed == [b""] * 200  # nothing sent, only closed
        for _, writer in tcp:
            writer.close()
        # A client that does send its CONNECT is served as ever.
        await p.subscribe("alive/x")
        await p.publish("alive/x", "yes")
        assert (await p.wait_for("alive/x")).text == "yes"


async def test_a_flooding_client_is_throttled_then_cut_off_and_named(run_node: NodeFactory) -> None:
    options = MqttOptions(rate=50.0, burst=50, rate_grace_s=1.0)
    async with run_node(mqtt=options) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error", "flood/#", "calm/#")
        mark = p.mark()
        reader, writer, rc = await _connect(r.port, "flooder-1")
        assert rc == 0
        # A burst within the limit passes whole.
        writer.write(b"".join(publish_packet("flood/x", b"%d" % i) for i in range(40)))
        await writer.drain()
        await p.wait_for("flood/x", lambda g: g.payload == b"39", after=mark)

        async def flood() -> None:
            chunk = b"".join(publish_packet("flood/x", b"f") for _ in range(200))
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(chunk)
                    await writer.drain()  # blocks while the broker's reads are paused

        flooding = asyncio.create_task(flood())
        try:
            # Throttled, the others are still served: a round trip of a calm client goes through.
            await p.publish("calm/x", "hello")
            await p.wait_for("calm/x", lambda g: g.text == "hello", after=mark)
            err = await _error(p, r.base, "rate_limited", mark)
            assert "flooder-1" in err["error"]
            assert err["topic"] == "flood/x"
            async with asyncio.timeout(10):
                await _eof(reader)
        finally:
            flooding.cancel()
            writer.close()
        # At most burst + rate x (grace + a little) of the flood went through before the cut.
        delivered = len(p.on("flood/x", mark))
        assert delivered < 40 + 50 + 50 * 3, delivered


async def test_subscriptions_past_the_limit_are_refused_then_the_client_is_cut_off(
    run_node: NodeFactory,
) -> None:
    async with run_node(mqtt=MqttOptions(max_subscriptions=5)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        mark = p.mark()
        reader, writer, _ = await _connect(r.port, "greedy-1")
        buf = b""

        async def suback(packet_id: int, topic: str, unsubscribe: bool = False) -> int:
            nonlocal buf
            packet = unsubscribe_packet if unsubscribe else subscribe_packet
            writer.write(packet(packet_id, topic))
            await writer.drain()
            while True:
                packets, buf = parse_packets(buf)
                for first, body in packets:
                    if first in (SUBACK, 0xB0):
                        return body[2] if first == SUBACK else 0
                buf += await asyncio.wait_for(reader.read(4096), 5)

        assert [await suback(i, f"g/{i}") for i in range(1, 6)] == [0] * 5
        assert await suback(6, "g/1") == 0  # the same filter again is no new subscription
        assert await suback(7, "g/6") == 0x80
        err = await _error(p, r.base, "too_many_subscriptions", mark)
        assert "greedy-1" in err["error"] and err["topic"] == "g/6"
        await suback(8, "g/1", unsubscribe=True)
        assert await suback(9, "g/6") == 0  # room again
        # Asking on and on: cut off after ten refusals.
        for i in range(10, 19):
            assert await suback(i, f"h/{i}") == 0x80
        writer.write(subscribe_packet(19, "h/19"))
        await writer.drain()
        async with asyncio.timeout(10):
            await _eof(reader)
        writer.close()


async def test_connections_past_the_limit_are_refused_and_named(run_node: NodeFactory) -> None:
    async with run_node(mqtt=MqttOptions(max_connections=3)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        mark = p.mark()
        first = await _connect(r.port, "conn-1")
        second = await _connect(r.port, "conn-2")
        assert (first[2], second[2]) == (0, 0)
        reader, writer, rc = await _connect(r.port, "conn-3")
        assert rc == 3  # server unavailable
        async with asyncio.timeout(5):
            await _eof(reader)
        writer.close()
        err = await _error(p, r.base, "too_many_connections", mark)
        assert "conn-3" in err["error"]
        # The same client id taking its own connection over is no extra client.
        again = await _connect(r.port, "conn-2")
        assert again[2] == 0
        first[1].close()
        async with asyncio.timeout(5):
            await _eof(first[0])
        # One left: room for one more (retried, the broker notices the close on its next read).
        for _ in range(50):
            reader, writer, rc = await _connect(r.port, "conn-4")
            if rc == 0:
                break
            writer.close()
            await asyncio.sleep(0.05)
        assert rc == 0
        writer.close()
        for w in (second[1], again[1]):
            w.close()


async def test_a_client_that_waits_for_each_answer_is_never_throttled(run_node: NodeFactory) -> None:
    # Request, reply, request...: it goes no faster than the broker answers it, so its rate alone
    # is no reason to pause it (the benchmarks make thousands of round trips a second).
    options = MqttOptions(rate=50.0, burst=10, rate_grace_s=0.5)
    async with run_node(mqtt=options) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        mark = p.mark()
        reader, writer, _ = await _connect(r.port, "asker-1")
        writer.write(subscribe_packet(1, "rt/x"))
        await writer.drain()
        buf = b""
        loop = asyncio.get_running_loop()
        start = loop.time()
        trips = 0
        while loop.time() - start < 2.0 or trips < 200:  # well past burst, rate and grace
            writer.write(publish_packet("rt/x", b"%d" % trips))
            await writer.drain()
            while True:
                packets, buf = parse_packets(buf)
                if any(first >> 4 == 3 for first, _ in packets):
                    break
                buf += await asyncio.wait_for(reader.read(4096), 5)
            trips += 1
        assert trips / (loop.time() - start) > 50 * 2, trips  # faster than the rate, not paused
        await p.quiet(f"{r.base}/error", after=mark, probe_topic="test/flush")
        writer.close()


async def test_a_client_id_taken_over_closes_the_first_connection_and_is_reported(
    run_node: NodeFactory,
) -> None:
    async with run_node() as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        mark = p.mark()
        first_reader, first_writer, rc = await _connect(r.port, "kitchen-tablet")
        assert rc == 0
        second_reader, second_writer, rc = await _connect(r.port, "kitchen-tablet")
        assert rc == 0
        # MQTT 3.1.1 §3.1.4: the server disconnects the existing client; it is never left deafened.
        async with asyncio.timeout(10):
            await _eof(first_reader)
        err = await _error(p, r.base, "client_taken_over", mark)
        assert "kitchen-tablet" in err["error"]
        # The new connection is served: its subscription gets what is published.
        second_writer.write(subscribe_packet(1, "takeover/x"))
        await second_writer.drain()
        await p.publish("takeover/x", "hello")
        buf = b""
        async with asyncio.timeout(10):
            while b"hello" not in buf:
                buf += await second_reader.read(65536)
        first_writer.close()
        second_writer.close()
