"""`python -m bench`: the node on its embedded broker vs the same node on a real mosquitto, as a table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.net import free_port
from harness.rawmqtt import connect_packet, publish_packet, subscribe_packet

ROUND_TRIPS = 2000
WARMUP = 200
CONFIG_TRIPS = 200


class Client:
    """A bare MQTT 3.1.1 client on a blocking socket: QoS 0, pre-encoded packets, no library in the timing.

    paho's own overhead (p99 1.4 ms for a self-echo through mosquitto here) would hide the node's.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.got: list[tuple[str, bytes, bool]] = []
        self.sock.sendall(connect_packet(f"bench-{uuid.uuid4().hex[:6]}", 60))
        kind, _ = self._packet()
        assert kind == 0x20
        self._mid = 0

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _packet(self) -> tuple[int, bytes]:
        first = self._read(1)[0]
        length, mult = 0, 1
        while True:
            b = self._read(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, self._read(length)

    def _pump_one(self) -> None:
        first, body = self._packet()
        if first >> 4 == 3:  # PUBLISH
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + tlen].decode()
            start = 2 + tlen + (2 if (first >> 1) & 3 else 0)
            self.got.append((topic, body[start:], bool(first & 1)))

    def pump_until(self, cond: Callable[[], bool], timeout: float) -> None:
        self.sock.settimeout(timeout)
        while not cond():
            self._pump_one()

    def subscribe(self, topic: str) -> None:
        self._mid += 1
        self.sock.sendall(subscribe_packet(self._mid, topic))

    def packet(self, topic: str, payload: bytes) -> bytes:
        return publish_packet(topic, payload)

    def publish(self, topic: str, payload: bytes) -> None:
        self.sock.sendall(publish_packet(topic, payload))

    def wait_topic(self, topic: str, timeout: float = 5) -> bytes:
        start = len(self.got)

        def seen() -> bool:
            return any(t == topic for t, _, _ in self.got[start:])

        self.pump_until(seen, timeout)
        return next(p for t, p, _ in self.got[start:] if t == topic)

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


@dataclass
class NodeProcess:
    """A node started as its own process on a fresh embedded broker, as `milo run` would be."""

    base: str
    port: int
    proc: subprocess.Popen[bytes]


def start_node(
    workdir: Path, config: str, *, only: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> NodeProcess:
    """`milo run` with `config` (TOML text) in `workdir`, loopback only, quiet."""
    path = workdir / "milo.toml"
    path.write_text(config)
    node_id = f"bench{uuid.uuid4().hex[:6]}"
    port = free_port()
    args = [sys.executable, "-m", "node", "run", "--config", str(path), "--node-id", node_id]
    args += ["--data-dir", str(workdir / "data"), "--bind", "127.0.0.1", "--mqtt-port", str(port)]
    args += ["--http-port", "0", "--log-level", "warning"]
    if only:
        args += ["--only", *only]
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})})
    return NodeProcess(f"milo/{node_id}", port, proc)


def round_trips(client: Client, command: str, payload: bytes, state: str, n: int) -> list[float]:
    client.subscribe(state)
    client.wait_topic(state)  # retained copy
    times = []
    packet = client.packet(command, payload)
    for _ in range(n):
        client.got.clear()
        t0 = time.perf_counter()
        client.sock.sendall(packet)
        client.pump_until(lambda: any(t == state for t, _, _ in client.got), 5)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def config_trips(client: Client, base: str) -> list[float]:
    """config/set -> config: validation, an fsync'd file, a republish."""
    topic = f"{base}/info/config"
    client.subscribe(topic)
    client.wait_topic(topic)
    times = []
    for i in range(CONFIG_TRIPS):
        value = 30 + i % 2  # alternate, so each set really changes and persists something
        client.got.clear()

        def applied(v: int = value) -> bool:
            return any(t == topic and json.loads(p).get("refresh_s") == v for t, p, _ in client.got)

        t0 = time.perf_counter()
        client.publish(f"{topic}/set", json.dumps({"refresh_s": value}).encode())
        client.pump_until(applied, 5)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Result:
    name: str
    rtt: list[float] = field(default_factory=list)
    cfg: list[float] = field(default_factory=list)
    start_ms: float = 0.0
    rss: float = 0.0


@contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:  # ready when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def run_one(kind: str, workdir: Path) -> Result:
    node_id = f"bench{uuid.uuid4().hex[:6]}"
    base = f"milo/{node_id}"
    data = workdir / kind
    args = [sys.executable, "-m", "node", "run", "--node-id", node_id, "--data-dir", str(data)]
    args += ["--bind", "127.0.0.1", "--http-port", str(free_port()), "--log-level", "warning"]
    result = Result(kind)
    with mosquitto(workdir) if kind == "mosquitto" else _nothing() as mport:
        if kind == "mosquitto":
            watcher = Client(mport)
            watcher.subscribe(f"{base}/#")
            args += ["--broker", f"mqtt://127.0.0.1:{mport}"]
            port = mport
        else:
            port = free_port()
            args += ["--mqtt-port", str(port)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        try:
            if kind != "mosquitto":
                watcher = _connect_when_up(port, t0)
                watcher.subscribe(f"{base}/#")
            expected = {f"{base}/info", f"{base}/info/config"}

            def ready() -> bool:
                topics = {t for t, _, _ in watcher.got}
                online = any(t == f"{base}/status" and p == b"online" for t, p, _ in watcher.got)
                return online and expected <= topics

            watcher.pump_until(ready, 10)
            result.start_ms = (time.perf_counter() - t0) * 1000
            watcher.close()
            client = Client(port)
            round_trips(client, f"{base}/info/get", b"", f"{base}/info", WARMUP)
            result.rtt = round_trips(client, f"{base}/info/get", b"", f"{base}/info", ROUND_TRIPS)
            result.cfg = config_trips(client, base)
            result.rss = rss_mb(proc.pid)
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return result


@contextmanager
def _nothing() -> Iterator[int]:
    yield 0


def _connect_when_up(port: int, t0: float) -> Client:
    # The embedded broker's port opens with the node: try until it accepts (bounded).
    while True:
        try:
            return Client(port)
        except (ConnectionRefusedError, OSError):
            if time.perf_counter() - t0 > 10:
                raise
            time.sleep(0.002)


def table(results: list[Result]) -> str:
    e, m = results
    rows = [
        ("info/get -> info, p50 (ms)", f"{pct(e.rtt, 50):.2f}", f"{pct(m.rtt, 50):.2f}", ""),
        (
            "info/get -> info, p99 (ms)",
            f"{pct(e.rtt, 99):.2f}",
            f"{pct(m.rtt, 99):.2f}",
            "<= 1 ms and <= mosquitto",
        ),
        ("config/set -> config (fsync), p50 (ms)", f"{pct(e.cfg, 50):.2f}", f"{pct(m.cfg, 50):.2f}", ""),
        ("config/set -> config (fsync), p99 (ms)", f"{pct(e.cfg, 99):.2f}", f"{pct(m.cfg, 99):.2f}", ""),
        ("process start -> online + retained (ms)", f"{e.start_ms:.0f}", f"{m.start_ms:.0f}", "<= 1000"),
        ("node RSS (MB)", f"{e.rss:.1f}", f"{m.rss:.1f}", "<= 50"),
    ]
    out = [
        f"| figure ({ROUND_TRIPS} round trips, {CONFIG_TRIPS} config sets) "
        "| embedded amqtt | mosquitto | target |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of the clients' table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="milo-bench-") as tmp:
        results = [run_one("embedded", Path(tmp)), run_one("mosquitto", Path(tmp))]
    print(table(results))
    where = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, loopback"
    print(f"\n{where}; mosquitto with set_tcp_nodelay true; raw-socket QoS 0 client.\n")
    # The clients people run: libraries, wildcard subscriptions, QoS 1 and 2, a house of them.
    # Imported here: they use this module's helpers.
    from importlib.metadata import version  # noqa: PLC0415

    from bench import fanout, qos  # noqa: PLC0415
    from bench.pair import table as side_by_side  # noqa: PLC0415

    load = os.getloadavg()[0]
    rows = qos.rows(qos.bench(args.runs)) + fanout.rows(fanout.bench(args.runs))
    print(side_by_side(rows, f"clients people run (the median of {args.runs} alternating runs)"))
    print(
        f"\nBoth nodes run at once and are measured in turn; paho-mqtt {version('paho-mqtt')} clients "
        "with TCP_NODELAY, commands at QoS 0; the knob: raw QoS 0 `volume/set +1`; PulseAudio null sinks."
        f" Load average {load:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
