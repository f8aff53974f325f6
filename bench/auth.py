"""`python -m bench.auth`: what a CONNECT costs with a login, on the embedded broker and on mosquitto."""

# Same users file for both (`milo broker-config` hands mosquitto the node's `$7$` lines). The embedded
# broker hashes a password once, in a thread, then answers from its cache; mosquitto hashes on every
# CONNECT. Each figure: CONNECT sent -> CONNACK read, a new TCP connection each time, loopback.

from __future__ import annotations

import argparse
import getpass
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path

from bench.__main__ import pct, start_node
from harness.net import free_port
from harness.rawmqtt import connect_packet
from node import cli
from node.framework.users import Users


def connect_ms(port: int, login: tuple[str, str] | None) -> tuple[float, int]:
    """(milliseconds from CONNECT to CONNACK, its return code)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        packet = connect_packet(f"b-{uuid.uuid4().hex[:8]}", 30, login=login)
        t0 = time.perf_counter()
        sock.sendall(packet)
        answer = b""
        while len(answer) < 4:  # a CONNACK is 4 bytes
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                break
            answer += chunk
        return (time.perf_counter() - t0) * 1000, answer[3] if len(answer) == 4 else -1


WARMUP = 20


def wait_up(port: int) -> None:
    """Until the broker answers a CONNECT, then a few more: the node finishes starting meanwhile."""
    deadline = time.monotonic() + 15
    answered = 0
    while answered < WARMUP:
        try:
            answered += connect_ms(port, None)[1] == 0
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def measure(port: int, n: int) -> dict[str, list[float]]:
    cases = {"anonymous (loopback)": None, "login (first: hashed)": ("alice", "alice-pw")}
    out: dict[str, list[float]] = {}
    for name, login in cases.items():
        out[name] = [connect_ms(port, login)[0] for _ in range(1 if "first" in name else n)]
    out["login (again)"] = [connect_ms(port, ("alice", "alice-pw"))[0] for _ in range(n)]
    out["wrong password"] = [connect_ms(port, ("alice", f"x{i}"))[0] for i in range(min(n, 10))]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="connects per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        Users(work / "data").add("alice", "control", "alice-pw")
        node = start_node(work, '[auth]\nanonymous = "loopback"\n', only=("info",))
        try:
            wait_up(node.port)
            embedded = measure(node.port, args.n)
        finally:
            node.proc.terminate()
            node.proc.wait(10)
        with redirect_stdout(io.StringIO()):
            cli.main(["broker-config", "--out", str(work / "mq"), "--data-dir", str(work / "data")])
        port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\npersistence false\n"
            + (work / "mq" / "milo.conf").read_text().replace("allow_anonymous false", "allow_anonymous true")
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_up(port)
            mosq = measure(port, args.n)
        finally:
            proc.terminate()
            proc.wait(5)
    print(f"CONNECT -> CONNACK, ms (p50 / p99 of {args.n}; one sample for the first login; 10 wrong ones)")
    print("| case | embedded amqtt | mosquitto 2.0.11 (same $7$ users file) |")
    print("|---|---|---|")
    for case in embedded:
        e, m = embedded[case], mosq[case]
        print(f"| {case} | {pct(e, 50):.2f} / {pct(e, 99):.2f} | {pct(m, 50):.2f} / {pct(m, 99):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
