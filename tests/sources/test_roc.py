"""The `roc` source on a real node: real UDP from a test sender, the node's relay, the fake roc-recv."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harness import roc_recv
from harness.alsa_sinks import sink_config, sinks_dir
from harness.audio import level_dbfs, peak_hz, read_wav
from harness.icy_server import IcyServer
from harness.roc_relay_cost import measure
from harness.roc_send import RocSender
from harness.waits import until
from node.adapters.roc import RocPorts, free_udp_ports, mdns_name, ptr_answer, recv_argv, udp_bound
from node.framework.subsystem import Subsystem
from node.sources.radio import Radio
from node.sources.roc import Roc
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, probe

pytestmark = pytest.mark.timeout(60)


def state_is(name: str, extra: Callable[[dict[str, Any]], bool] = lambda s: True) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and g.json()["state"] == name and extra(g.json())


def device_is(pcm: str) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and g.json()["device"] == pcm


def section(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A roc section on loopback ports of its own, with the fake roc-recv, and short timeouts."""
    source, repair, control, mdns = free_udp_ports(4)
    return {
        "binary": str(roc_recv.install(tmp_path / "bin")),
        "bind": "127.0.0.1",
        "source_port": source,
        "repair_port": repair,
        "control_port": control,
        "mdns_port": mdns,  # nothing answers there: the name comes from reverse DNS
        "sender_timeout_s": 0.5,
        "handover_s": 0.3,
        **extra,
    }


def ports_of(roc: dict[str, Any]) -> tuple[int, int, int]:
    return roc["source_port"], roc["repair_port"], roc["control_port"]


@contextlib.asynccontextmanager
async def roc_node(
    run_node: NodeFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str = "embedded",
    *,
    subsystems: tuple[type[Subsystem[Any, Any]], ...] = (Info, Routing, Roc),
    sections: dict[str, dict[str, Any]] | None = None,
    roc: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Running, Probe, Path]]:
    log = tmp_path / "roc-recv.log"
    monkeypatch.setenv("FAKE_ROC_LOG", str(log))  # the fake roc-recvs the node starts inherit it
    merged = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "roc": roc or section(tmp_path),
        **(sections or {}),
    }
    async with run_node(kind, subsystems=subsystems, sections=merged) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        yield r, p, log


def starts(log: Path) -> list[dict[str, Any]]:
    return [e for e in roc_recv.read_log(log) if e["event"] == "start"]


def audio_into(log: Path, pcm: str, after: int) -> bool:
    """A receiver started after the `after`-th start plays into `pcm` and has written audio."""
    new = [s["pid"] for s in starts(log)[after:] if s["output"] == f"alsa://{pcm}"]
    return bool(new) and any(
        e["event"] == "first_audio" and e["pid"] == new[0] for e in roc_recv.read_log(log)
    )


def stops(log: Path) -> dict[int, dict[str, Any]]:
    return {e["pid"]: e for e in roc_recv.read_log(log) if e["event"] == "stop"}


# Pure parts ------------------------------------------------------------------------------------------
def test_the_command_line_is_roc_recv_s() -> None:
    argv = recv_argv("/usr/local/bin/roc-recv", RocPorts(20001, 20002, 20003), "milo_roc_direct")
    assert argv == [
        "/usr/local/bin/roc-recv",
        "-s", "rtp+rs8m://127.0.0.1:20001",
        "-r", "rs8m://127.0.0.1:20002",
        "-c", "rtcp://127.0.0.1:20003",
        "-o", "alsa://milo_roc_direct",
    ]  # fmt: skip
    args = roc_recv.parse_args(argv[1:])  # the fake takes exactly what roc-recv takes
    assert args.source == ["rtp+rs8m://127.0.0.1:20001"]


def test_bound_ports_are_read_from_proc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert udp_bound([port])
    assert not udp_bound([port])


def test_a_ptr_answer_is_read_through_name_compression() -> None:
    name = "1.0.0.127.in-addr.arpa"
    answer = mdns_answer(0x1234, name, "Studio-Mac.local")
    assert ptr_answer(answer, 0x1234, name) == "Studio-Mac.local"
    assert ptr_answer(answer, 0x9999, name) is None


def encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def mdns_answer(query_id: int, name: str, target: str) -> bytes:
    """A DNS response: the question, then one PTR answer whose owner points back at it (compression)."""
    header = struct.pack("!HHHHHH", query_id, 0x8400, 1, 1, 0, 0)
    question = encode(name) + struct.pack("!HH", 12, 1)
    rdata = encode(target)
    answer = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", 12, 1, 120, len(rdata)) + rdata
    return header + question + answer


class MdnsResponder(asyncio.DatagramProtocol):
    """Answers every PTR query with `target`, as a Mac's mDNSResponder answers a one-shot query."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.transport: Any = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queries += 1
        query_id = struct.unpack_from("!H", data)[0]
        end = data.index(b"\x00", 12)
        name = ".".join(p.decode() for p in _labels(data[12:end]))
        assert self.transport is not None
        self.transport.sendto(mdns_answer(query_id, name, self.target), addr)


def _labels(raw: bytes) -> list[bytes]:
    labels, i = [], 0
    while i < len(raw):
        labels.append(raw[i + 1 : i + 1 + raw[i]])
        i += 1 + raw[i]
    return labels


async def test_mdns_name_asks_the_host_itself() -> None:
    loop = asyncio.get_running_loop()
    (port,) = free_udp_ports(1)
    transport, responder = await loop.create_datagram_endpoint(
        lambda: MdnsResponder("Studio-Mac.local"), local_addr=("127.0.0.1", port)
    )
    try:
        assert await mdns_name("127.0.0.1", port=port) == "Studio-Mac.local"
        assert responder.queries == 1
    finally:
        transport.close()
    assert await mdns_name("127.0.0.1", port=port, timeout=0.2) is None  # nobody there now


# The source ------------------------------------------------------------------------------------------
async def test_a_missing_binary_is_unavailable(run_node: NodeFactory, tmp_path: Path) -> None:
    roc = {**section(tmp_path), "binary": str(tmp_path / "none" / "roc-recv")}
    async with run_node(subsystems=(Info, Roc), sections={"roc": roc}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/source/roc")
        got = await p.wait_for(f"{r.base}/source/roc", state_is("unavailable"))
        assert "roc-recv not found" in got.json()["error"]
        assert "README" in got.json()["error"]


async def test_a_sender_is_played_into_the_pcm_with_its_address_and_name(
    run_node: NodeFactory, broker_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roc = section(tmp_path)
    async with roc_node(run_node, tmp_path, monkeypatch, broker_kind, roc=roc) as (r, p, log):
        topic = f"{r.base}/source/roc"
        idle = await p.wait_for(topic, state_is("idle"))
        assert (idle.json()["sender"], idle.json()["commands"], idle.json()["device"]) == (
            None,
            [],
            "milo_roc_direct",
        )
        sender = await RocSender("127.0.0.1", ports_of(roc)).start()
        try:
            got = await p.wait_for(topic, state_is("playing", lambda s: s["sender_name"] is not None))
            state = got.json()
            assert state["sender"] == "127.0.0.1"
            assert state["sender_name"] == "localhost"  # reverse DNS (nothing answered mDNS)
            assert state["title"] == "localhost"
            assert state["commands"] == ["pause"]
            assert [s["address"] for s in state["senders"]] == ["127.0.0.1"]
            # RTCP goes both ways through the relay: roc-recv's reports reach the sender.
            await until(lambda: sender.replies > 0, what="an RTCP answer")
            sent = sender.sent
            await until(lambda: sender.sent >= sent + 100, what="a second of audio into the sink")
        finally:
            await sender.stop()
        mark = p.mark()
        await p.wait_for(topic, state_is("idle", lambda s: s["sender"] is None), after=mark)
        assert starts(log)[-1]["output"] == "alsa://milo_roc_direct"
    stopped = stops(log)
    written = [s for s in stopped.values() if s["written"]]
    assert len(written) == 1 and written[0]["first_seq"] is not None
    samples, rate = read_wav(sinks_dir(tmp_path) / "direct.wav")
    assert len(samples) >= rate // 2
    assert abs(peak_hz(samples, rate) - 400) < 5
    assert abs(level_dbfs(samples[len(samples) // 4 :]) + 20) < 1.5


async def test_a_sender_streaming_before_the_node_started_is_detected(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roc = section(tmp_path)
    sender = await RocSender("127.0.0.1", ports_of(roc)).start()
    try:
        async with roc_node(run_node, tmp_path, monkeypatch, roc=roc) as (r, p, _):
            await p.wait_for(
                f"{r.base}/source/roc", state_is("playing", lambda s: s["sender"] == "127.0.0.1")
            )
    finally:
        await sender.stop()


async def test_routing_moves_hand_the_stream_over_without_losing_a_packet(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roc = section(tmp_path)
    async with roc_node(run_node, tmp_path, monkeypatch, roc=roc) as (r, p, log):
        base, topic = r.base, f"{r.base}/source/roc"
        await p.wait_for(topic, state_is("idle"))
        sender = await RocSender("127.0.0.1", ports_of(roc)).start()
        moves = [
            ({"equalizer": True}, "milo_roc_direct_eq"),
            ({"multiroom": True}, "milo_roc_multiroom_eq"),
            ({"equalizer": False}, "milo_roc_multiroom"),
            ({"multiroom": False}, "milo_roc_direct"),
        ]
        try:
            await p.wait_for(topic, state_is("playing"))
            for command, pcm in moves:
                before = len(starts(log))
                await p.publish(f"{base}/routing/set", json.dumps(command))
                await p.wait_for(topic, device_is(pcm))
                # The new receiver writes audio: the stream reached it (it starts before the old stops).
                await until(functools.partial(audio_into, log, pcm, before), what=f"audio into {pcm}")
            sent = sender.sent
            await until(lambda: sender.sent >= sent + 50, what="half a second more on the last PCM")
        finally:
            await sender.stop()
        await p.wait_for(topic, state_is("idle"))
    outputs = [s["output"] for s in starts(log)]
    assert outputs[-5:] == [f"alsa://{pcm}" for pcm in ("milo_roc_direct", *(pcm for _, pcm in moves))]
    stopped = stops(log)
    chain = [stopped[s["pid"]] for s in starts(log) if stopped[s["pid"]]["written"]]
    assert len(chain) == 5
    gaps = []
    for old, new in itertools.pairwise(chain):
        # Consecutive RTP sequence numbers: not one packet of the stream was lost in a move.
        assert new["first_seq"] == (old["last_seq"] + 1) & 0xFFFF, (old, new)
        gaps.append((new["first_audio"] - old["last_audio"]) / 1e6)
    print(
        "roc routing moves, last packet of the old receiver -> first of the new (ms):",
        [round(g, 1) for g in gaps],
    )
    # Packets come every 10 ms: a hand-over costs about one of them, plus this loaded machine's stalls
    # (sender, relay and node share one event loop here).
    assert max(gaps) < 1000


async def test_pause_drops_the_stream_and_play_takes_it_again(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, icy: IcyServer
) -> None:
    roc = section(tmp_path)
    radio = {"ao": "null", "audio_device": "auto", "allow_private_urls": True, "index_first_delay_s": 3600}
    subsystems = (Info, Routing, Roc, Radio, Player)
    async with roc_node(
        run_node, tmp_path, monkeypatch, subsystems=subsystems, sections={"radio": radio}, roc=roc
    ) as (r, p, _):
        base, topic = r.base, f"{r.base}/source/roc"
        await p.wait_for(topic, state_is("idle"))
        mark = p.mark()
        await p.publish(f"{base}/source/radio/set", icy.url())
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        # A Mac starts streaming: roc becomes the active source, the radio is paused.
        sender = await RocSender("127.0.0.1", ports_of(roc)).start()
        try:
            await p.wait_for(f"{base}/player", lambda g: g.json()["active"] == "roc", after=mark)
            await p.wait_for(f"{base}/source/radio", state_is("paused"), after=mark)
            relay = next(run.instance for run in r.node.runners if run.name == "roc").relay  # type: ignore[union-attr]
            # Back to the radio: roc is paused; the Mac streams on, and its packets go nowhere.
            mark = p.mark()
            await p.publish(f"{base}/source/set", "radio")
            paused = await p.wait_for(topic, state_is("paused"), after=mark)
            assert paused.json()["commands"] == ["play"]
            dropped = relay.dropped
            await until(lambda: relay.dropped > dropped + 10, what="packets dropped while paused")
            mark = p.mark()
            await p.publish(f"{base}/source/set", "roc")
            await p.wait_for(topic, state_is("playing"), after=mark)
            relayed = relay.relayed
            await until(lambda: relay.relayed > relayed + 10, what="packets relayed again")
        finally:
            await sender.stop()
        await p.wait_for(topic, state_is("idle"))


async def test_a_dead_receiver_is_started_again(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roc = section(tmp_path)
    async with roc_node(run_node, tmp_path, monkeypatch, roc=roc) as (r, p, log):
        topic = f"{r.base}/source/roc"
        await p.wait_for(
            topic, lambda g: g.json()["device"] == "milo_roc_direct" and g.json()["state"] == "idle"
        )
        live = await until(
            lambda: [s["pid"] for s in starts(log) if s["pid"] not in stops(log)], what="roc-recv"
        )
        assert len(live) == 1
        mark = p.mark()
        os.kill(live[0], signal.SIGKILL)
        down = await p.wait_for(topic, state_is("error"), after=mark)
        assert "SIGKILL" in down.json()["error"]
        await p.wait_for(topic, state_is("idle", lambda s: s["restarts"] == 1), after=mark)
        sender = await RocSender("127.0.0.1", ports_of(roc)).start()
        try:
            await p.wait_for(topic, state_is("playing"), after=mark)
        finally:
            await sender.stop()


async def test_a_taken_port_is_unavailable_with_the_reason(run_node: NodeFactory, tmp_path: Path) -> None:
    roc = section(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", roc["source_port"]))
        async with run_node(subsystems=(Info, Roc), sections={"roc": roc}) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/source/roc")
            got = await p.wait_for(f"{r.base}/source/roc", state_is("unavailable"))
            assert "cannot receive" in got.json()["error"]


async def test_what_the_relay_costs_is_measured() -> None:
    """A short run of `python -m harness.roc_relay_cost` (the README's figures come from longer ones)."""
    figures = await measure(1.0)
    print("roc relay:", {k: round(v, 2) for k, v in figures.items()})
    assert figures["relayed_fraction"] > 0.95
    assert figures["relay_cpu_percent"] < 50
