"""`python -m bench.qos`: paho clients on `milo/<id>/#` at QoS 0, 1 and 2, embedded node against mosquitto."""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.__main__ import pct
from bench.pair import KINDS, NodePair, Row, node_pair, table

TRIPS = 2000  # per node and QoS in one run, alternating between the two nodes
WARMUP = 100
RUNS = 3
QOS_LEVELS = (0, 1, 2)
RATIO_TARGET = 0.8
P99_TARGET_MS = 1.0
# Commands go out at QoS 0, as Home Assistant, mqtt.js and Node-RED's mqtt-out send them by default;
# the subscription's QoS is what differs between those clients.
COMMAND_QOS = 0
STATE_QOS = 1  # what the node publishes its states at (README, "QoS")


class PahoClient:
    """A paho-mqtt client as applications run it, driven from this thread (no loop thread to hand over to).

    Nagle is off, as it must be for any client whose latency matters (shared/reference/amqtt.md §10).
    """

    def __init__(self, port: int, topic_filter: str, qos: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        self.got: list[tuple[str, int, bytes, bool, float]] = []
        self._subscribed = False
        self._sent = 0
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=60)
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not self.client.is_connected():
            self.client.loop(0.5)
        self.client.subscribe(topic_filter, qos)
        self.pump_until(lambda: self._subscribed)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        # Timed here, when the application has it: paho sends the PUBACK only after this returns.
        now = time.perf_counter()
        self.got.append((message.topic, message.qos, bytes(message.payload), bool(message.retain), now))

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed = True

    def pump_until(self, cond: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the node")
            self.client.loop(0.5)

    def round_trip(self, command: str, state: str, qos: int) -> tuple[float, int]:
        """Milliseconds from publishing `command` (at `qos`) to `state` arriving, and the QoS it came at.

        The command carries a sequence number (the node ignores it) and the state must come after
        its echo: a retained copy or a late answer to an earlier command cannot end this one early,
        which would shift every later measurement by one answer.
        """
        self._sent += 1
        marker = str(self._sent).encode()
        self.got.clear()

        def answered() -> tuple[int, float] | None:
            echoed = False
            for topic, delivered, payload, retained, at in self.got:
                if topic == command and payload == marker:
                    echoed = True
                elif echoed and topic == state and not retained:
                    return delivered, at
            return None

        t0 = time.perf_counter()
        self.client.publish(command, marker, qos=qos)
        self.pump_until(lambda: answered() is not None)
        answer = answered()
        assert answer is not None
        return (answer[1] - t0) * 1000, answer[0]

    def settle(self) -> None:
        """Finish the handshakes still under way (a QoS 2 PUBCOMP) before the other node's turn."""
        self.client.loop(0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(0.1)


@dataclass
class QosRun:
    qos: int
    times: dict[str, list[float]]

    def p(self, kind: str, q: float) -> float:
        return pct(self.times[kind], q)

    def ratio(self, q: float) -> float:
        return self.p("embedded", q) / self.p("mosquitto", q)


def measure(pair: NodePair, qos: int, trips: int = TRIPS) -> QosRun:
    clients = {kind: PahoClient(pair.ports[kind], f"{pair.bases[kind]}/#", qos) for kind in KINDS}
    times: dict[str, list[float]] = {kind: [] for kind in clients}
    try:
        for i in range(WARMUP + trips):
            for kind, client in clients.items():
                base = pair.bases[kind]
                elapsed, delivered = client.round_trip(f"{base}/info/get", f"{base}/info", COMMAND_QOS)
                client.settle()
                expected = min(qos, STATE_QOS)
                if delivered != expected:  # MQTT 3.1.1 §3.8.4: min(publish, subscription)
                    raise AssertionError(f"{kind}: info at QoS {delivered}, expected {expected}")
                if i >= WARMUP:
                    times[kind].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return QosRun(qos, times)


def bench(runs: int = RUNS, trips: int = TRIPS) -> list[list[QosRun]]:
    """`runs` runs, each a fresh pair of nodes measured at every QoS."""
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="milo-bench-qos-") as tmp, node_pair(Path(tmp)) as pair:
            out.append([measure(pair, qos, trips) for qos in QOS_LEVELS])
    return out


def rows(results: list[list[QosRun]]) -> list[Row]:
    """The median run's figures (by p99 ratio), with the ratio of every run in brackets."""
    out = []
    for i, qos in enumerate(QOS_LEVELS):
        runs = sorted((r[i] for r in results), key=lambda run: run.ratio(99))
        median = runs[len(runs) // 2]
        name = f"paho on `milo/<id>/#` at QoS {qos}: `info/get` -> `info`"
        for q in (50, 99):
            e, m = f"{median.p('embedded', q):.2f}", f"{median.p('mosquitto', q):.2f}"
            if q == 50:
                out.append((f"{name}, p50 (ms)", e, m, f"{median.ratio(50):.2f}", ""))
                continue
            each = ", ".join(f"{r[i].ratio(99):.2f}" for r in results)
            target = f"<= {RATIO_TARGET}" + (f", embedded <= {P99_TARGET_MS:g} ms" if qos == 0 else "")
            out.append((f"{name}, p99 (ms)", e, m, f"**{median.ratio(99):.2f}** ({each})", target))
    return out


def title(results: list[list[QosRun]]) -> str:
    trips = len(results[0][0].times["embedded"])
    return f"figure (the median of {len(results)} runs of {trips} round trips alternating between the nodes)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--trips", type=int, default=TRIPS)
    args = parser.parse_args()
    results = bench(args.runs, args.trips)
    print(table(rows(results), title(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
