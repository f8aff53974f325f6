"""`python -m bench.fanout`: 20 subscribers to `milo/#` while a knob sends 100 volume steps in a second."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.__main__ import pct
from bench.pair import KINDS, NodePair, Row, node_pair, table
from harness.pulse import Pulse, start_pulse, stop_pulse
from harness.rawmqtt import connect_packet, publish_packet

SUBSCRIBERS = 20
STEPS = 100
SPAN_S = 1.0
ROUNDS = 3
# A house: browsers (mqtt.js, QoS 0), Home Assistant and most libraries (QoS 1), Node-RED (QoS 2).
SUBSCRIBER_QOS = (0, 1, 2)
CONFIG = '[volume]\ndevice = "pulse"\ncontrol = "Master"\n'


class House:
    """SUBSCRIBERS paho clients on one broker, driven by one selector in this thread."""

    def __init__(self, port: int, base: str) -> None:
        self.topic = f"{base}/volume"
        self.clients: list[paho.Client] = []
        # Per subscriber: (arrival time, percent) of every live `volume` state.
        self.states: list[list[tuple[float, int]]] = [[] for _ in range(SUBSCRIBERS)]
        self.selector = selectors.DefaultSelector()
        subscribed = 0
        for i in range(SUBSCRIBERS):
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"house-{i}-{uuid.uuid4().hex[:4]}")
            client.on_message = self._recorder(i)

            def on_subscribe(*_args: Any) -> None:
                nonlocal subscribed
                subscribed += 1

            client.on_subscribe = on_subscribe
            client.connect("127.0.0.1", port, keepalive=60)
            sock = client.socket()
            assert isinstance(sock, socket.socket)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(sock, selectors.EVENT_READ, client)
            self.clients.append(client)
        self.pump(lambda: all(c.is_connected() for c in self.clients), 10)
        for i, client in enumerate(self.clients):
            client.subscribe("milo/#", SUBSCRIBER_QOS[i % len(SUBSCRIBER_QOS)])
        self.pump(lambda: subscribed == SUBSCRIBERS, 10)

    def _recorder(self, i: int) -> Any:
        def on_message(_client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
            if message.topic == self.topic and not message.retain:
                self.states[i].append((time.perf_counter(), int(json.loads(message.payload)["percent"])))

        return on_message

    def pump(self, until: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("the house did not get what it waited for")
            self.poll(0.05)

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            key.data.loop_read()
        for client in self.clients:
            if client.want_write():
                client.loop_write()
            client.loop_misc()

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
        self.selector.close()


@dataclass
class Burst:
    kind: str
    complete: bool  # every subscriber got the same states, ending at the last step's value
    published: int  # states each subscriber got
    latencies: list[float] = field(default_factory=list)  # ms, knob step -> state at a subscriber


class Knob:
    """The knob as an MQTT client: raw QoS 0 `+1` commands on a plain socket."""

    def __init__(self, port: int, base: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"knob-{uuid.uuid4().hex[:6]}", 60))
        assert self.sock.recv(4)[:1] == b"\x20"
        self.step = publish_packet(f"{base}/volume/set", b"+1")
        self.zero = publish_packet(f"{base}/volume/set", b"0")

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def burst(kind: str, house: House, knob: Knob) -> Burst:
    knob.sock.sendall(knob.zero)
    house.pump(lambda: all(s and s[-1][1] == 0 for s in house.states), 5)
    for states in house.states:
        states.clear()
    sent: list[float] = []
    t0 = time.perf_counter()
    while len(sent) < STEPS:
        due = t0 + len(sent) * SPAN_S / STEPS
        now = time.perf_counter()
        if now >= due:
            knob.sock.sendall(knob.step)
            sent.append(time.perf_counter())
        else:
            house.poll(due - now)
    house.pump(lambda: all(s and s[-1][1] == STEPS for s in house.states), 10)
    values = [[p for _, p in s] for s in house.states]
    complete = all(v == values[0] for v in values) and values[0][-1] == STEPS
    # A state showing `p` percent answers the p-th step (from 0, one percent a step).
    latencies = [(t - sent[p - 1]) * 1000 for s in house.states for t, p in s if p >= 1]
    return Burst(kind, complete, len(values[0]), latencies)


@contextmanager
def two_mixers() -> Iterator[dict[str, Pulse]]:
    """A PulseAudio of its own for each node, so both can run at once."""
    with ExitStack() as stack:
        pulses = {}
        for kind in KINDS:
            pulses[kind] = start_pulse()
            stack.callback(stop_pulse, pulses[kind])
        yield pulses


def bench(rounds: int = ROUNDS) -> list[Burst]:
    out = []
    with tempfile.TemporaryDirectory(prefix="milo-bench-fanout-") as tmp, two_mixers() as pulses:
        env = {kind: {"PULSE_SERVER": p.server} for kind, p in pulses.items()}
        with node_pair(Path(tmp), CONFIG, env) as pair:
            houses, knobs = _connect(pair)
            try:
                for _ in range(rounds):  # alternating, so both share the machine's noise
                    out += [burst(kind, houses[kind], knobs[kind]) for kind in KINDS]
            finally:
                for kind in KINDS:
                    houses[kind].close()
                    knobs[kind].close()
    return out


def _connect(pair: NodePair) -> tuple[dict[str, House], dict[str, Knob]]:
    houses = {kind: House(pair.ports[kind], pair.bases[kind]) for kind in KINDS}
    knobs = {kind: Knob(pair.ports[kind], pair.bases[kind]) for kind in KINDS}
    return houses, knobs


def rows(bursts: list[Burst]) -> list[Row]:
    """Medians over the rounds."""
    mine = {kind: [b for b in bursts if b.kind == kind] for kind in KINDS}
    name = f"fan-out to {SUBSCRIBERS} on `milo/#`, {STEPS} knob steps in {SPAN_S:g} s"
    ok = {k: "yes" if all(b.complete for b in mine[k]) else "**no**" for k in KINDS}
    published = {k: f"{statistics.median(b.published for b in mine[k]):.0f}" for k in KINDS}
    out = [
        (f"{name}: every subscriber got every state", ok["embedded"], ok["mosquitto"], "", "yes"),
        (f"{name}: states published", published["embedded"], published["mosquitto"], "", ""),
    ]
    for q in (50, 99):
        med = {k: statistics.median(pct(b.latencies, q) for b in mine[k]) for k in KINDS}
        ratio = f"{med['embedded'] / med['mosquitto']:.2f}" if med["mosquitto"] else ""
        e, m = f"{med['embedded']:.1f}", f"{med['mosquitto']:.1f}"
        out.append((f"{name}: knob step -> state at each subscriber, p{q} (ms)", e, m, ratio, ""))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    bursts = bench(args.rounds)
    print(table(rows(bursts), f"figure (median of {args.rounds} alternating rounds)"))
    print(f"\n{os.cpu_count()} cores; subscribers at QoS 0, 1, 2 in turn; PulseAudio null sink `Master`.")
    return 0 if all(b.complete for b in bursts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
