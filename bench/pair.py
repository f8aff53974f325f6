"""The same node twice at once, on its embedded broker and on a mosquitto, and a table of the two."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.__main__ import Client, mosquitto
from harness.net import free_port

KINDS = ("embedded", "mosquitto")

Row = tuple[str, str, str, str, str]  # figure, embedded, mosquitto, embedded / mosquitto, target


def table(rows: list[Row], title: str) -> str:
    out = [
        f"| {title} | embedded amqtt | mosquitto | embedded / mosquitto | target |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(out + ["| " + " | ".join(row) + " |" for row in rows])


@dataclass
class NodePair:
    """Where each node's clients connect, its base topic and its process id, by kind."""

    ports: dict[str, int] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


def wait_online(port: int, base: str, timeout: float = 15.0) -> None:
    """Until the node says `online` and has published its info (the embedded port opens with it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            watcher = Client(port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # retried until the port accepts, bounded by the deadline
    watcher.subscribe(f"{base}/#")
    expected = {f"{base}/info", f"{base}/info/config"}

    def ready() -> bool:
        topics = {t for t, _, _ in watcher.got}
        online = any(t == f"{base}/status" and p == b"online" for t, p, _ in watcher.got)
        return online and expected <= topics

    watcher.pump_until(ready, timeout)
    watcher.close()


@contextmanager
def node_pair(
    workdir: Path, config: str = "", env: Mapping[str, Mapping[str, str]] | None = None
) -> Iterator[NodePair]:
    """Both nodes running at once, so that alternating measurements share the machine's noise.

    `config` is the TOML both run with; `env` adds environment variables per kind.
    """
    pair = NodePair()
    with ExitStack() as stack, mosquitto(workdir) as mport:
        for kind in KINDS:
            node_id = f"bench{uuid.uuid4().hex[:6]}"
            args = [sys.executable, "-m", "node", "run", "--node-id", node_id]
            args += ["--data-dir", str(workdir / kind), "--bind", "127.0.0.1"]
            args += ["--http-port", str(free_port()), "--log-level", "warning"]
            if config:
                path = workdir / f"{kind}.toml"
                path.write_text(config)
                args += ["--config", str(path)]
            if kind == "mosquitto":
                args += ["--broker", f"mqtt://127.0.0.1:{mport}"]
                port = mport
            else:
                port = free_port()
                args += ["--mqtt-port", str(port)]
            extra = dict((env or {}).get(kind, {}))
            proc = subprocess.Popen(args, env={**os.environ, **extra}, stderr=subprocess.DEVNULL)
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            pair.ports[kind], pair.bases[kind], pair.pids[kind] = port, f"milo/{node_id}", proc.pid
            wait_online(port, pair.bases[kind])
        yield pair
