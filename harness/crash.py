"""SIGKILL a node at random moments during config writes, restart it, and count what was lost."""

# A write is acknowledged when its echo (the retained `info/config` with the new value) was seen.
# Each kill lands a random few milliseconds after a write went out, so some land before the node
# read it, some in validation, some between the fsyncs of its file; after the restart the config
# must be the last acknowledged value, or the one in flight at the kill, and every file in the data
# dir must parse (no `.corrupt-` file set aside, no notice in `info`). Shared by the test
# (tests/framework/test_crash.py) and the benchmark (bench/crash.py).

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.net import free_port
from harness.rawmqtt import connect_packet, parse_packets, parse_publish, publish_packet, subscribe_packet

STATE_TIMEOUT = 20.0
FIRST, LAST = 5, 3600  # info's refresh_s range: every write a value of its own


@dataclass
class CrashReport:
    writes: int = 0  # acknowledged
    kills: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged writes not found after a restart
    unreadable: list[str] = field(default_factory=list)  # files that did not parse, or set aside
    notices: list[str] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0


class _Watcher:
    """A blocking MQTT client on `<base>/#` that keeps the last payload of every topic."""

    def __init__(self, port: int, base: str, deadline: float) -> None:
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # retried until the restarted node's port accepts, bounded
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"crash-{uuid.uuid4().hex[:6]}", 60))
        self.sock.sendall(subscribe_packet(1, f"{base}/#"))
        self.buf = b""
        self.last: dict[str, bytes] = {}

    def until(self, ready: Callable[[dict[str, bytes]], bool], timeout: float = STATE_TIMEOUT) -> None:
        """Until `ready(last payload by topic)`."""
        deadline = time.monotonic() + timeout
        while not ready(self.last):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the node did not answer in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            packets, self.buf = parse_packets(self.buf + chunk)
            for first, body in packets:
                if first >> 4 == 3:
                    topic, _, _, payload, _ = parse_publish(first, body)
                    self.last[topic] = payload

    def close(self) -> None:
        self.sock.close()


def _refresh(last: dict[str, bytes], topic: str) -> int | None:
    payload = last.get(topic)
    return int(json.loads(payload)["refresh_s"]) if payload else None


def _check_files(data: Path, report: CrashReport) -> None:
    for path in sorted(data.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue  # `.x.tmp`: a write the kill interrupted, never read
        if ".corrupt-" in path.name:
            report.unreadable.append(f"{path.name} (set aside)")
            path.unlink()  # counted once
        elif path.suffix in (".json", ".bak") or path.name.endswith(".json.bak"):
            try:
                json.loads(path.read_bytes())
            except ValueError as exc:
                report.unreadable.append(f"{path.name}: {exc}")


def crash_run(
    workdir: Path, writes: int = 1000, *, every: tuple[int, int] = (20, 60), seed: int | None = None
) -> CrashReport:
    """`writes` acknowledged config writes, with a SIGKILL after every `every` (random in range)."""
    report = CrashReport(seed=seed if seed is not None else random.randrange(2**32))
    rng = random.Random(report.seed)
    node_id = f"crash{uuid.uuid4().hex[:6]}"
    base, port, data = f"milo/{node_id}", free_port(), workdir / "data"
    topic = f"{base}/info/config"
    args = [sys.executable, "-m", "node", "run", "--only", "info", "--node-id", node_id]
    args += ["--data-dir", str(data), "--bind", "127.0.0.1", "--mqtt-port", str(port)]
    args += ["--http-port", "0", "--log-level", "error"]
    acked: int | None = None
    in_flight: int | None = None
    value = FIRST
    start = time.monotonic()
    while True:  # the last pass only checks what a clean stop left
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            watcher = _Watcher(port, base, time.monotonic() + STATE_TIMEOUT)
            watcher.until(lambda last: _refresh(last, topic) is not None and f"{base}/info" in last)
            report.restart_s.append(time.monotonic() - t0)
            found = _refresh(watcher.last, topic)
            if acked is not None and found not in (acked, in_flight):
                report.lost.append(f"after kill {report.kills}: {found}, acknowledged {acked}")
            if found == in_flight:
                acked = in_flight
            report.notices += json.loads(watcher.last[f"{base}/info"]).get("notices", [])
            _check_files(data, report)
            if report.writes >= writes:
                watcher.close()
                break
            kill_after = min(rng.randint(*every), writes - report.writes)
            for n in range(kill_after):
                value = value + 1 if value < LAST else FIRST
                in_flight = value
                watcher.sock.sendall(
                    publish_packet(f"{topic}/set", json.dumps({"refresh_s": value}).encode())
                )
                if n == kill_after - 1 and report.writes + 1 < writes:
                    # The kill's moment: 0-8 ms after the last write went out, anywhere in its handling.
                    time.sleep(rng.uniform(0, 0.008))
                    os.kill(proc.pid, signal.SIGKILL)
                    report.kills += 1
                    break
                watcher.until(lambda last, v=value: _refresh(last, topic) == v)  # type: ignore[misc]
                acked, report.writes = value, report.writes + 1
            watcher.close()
        finally:
            if proc.poll() is None:
                proc.terminate()  # the clean stop after the last batch (or a failed check)
            proc.wait(30)
    report.seconds = time.monotonic() - start
    return report
