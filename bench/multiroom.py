"""`python -m bench.multiroom`: 8 real snapclients; a client volume set to the retained `multiroom` state."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import Client, start_node
from harness.net import free_port
from harness.snapcast import snapclients

CLIENTS = 8
TRIPS = 300
WARMUP = 20
TARGET_MS = 50.0


class Rpc:
    """Another Snapcast controller (what Snapdroid is): JSON-RPC lines on snapserver's TCP port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.next = 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next += 1
        line = {"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}
        self.sock.sendall(json.dumps(line).encode() + b"\r\n")
        return self.next

    def answer(self, request_id: int) -> Any:
        while True:
            message = json.loads(self.file.readline())
            if message.get("id") == request_id:
                return message.get("result")


def _volume_of(payload: bytes, cid: str) -> int | None:
    for client in json.loads(payload)["clients"]:
        if client["id"] == cid:
            return int(client["volume"])
    return None


def _wait_volume(client: Client, topic: str, cid: str, volume: int, start: int) -> None:
    client.pump_until(
        lambda: any(t == topic and _volume_of(p, cid) == volume for t, p, _ in client.got[start:]), 5
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(trips: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"mqtt": [], "rpc": []}
    with tempfile.TemporaryDirectory(prefix="milo-bench-multiroom-") as tmp:
        work = Path(tmp)
        stream, control = free_port(), free_port()
        config = (
            "[multiroom]\n"
            f'bind = "127.0.0.1"\nstream_port = {stream}\ncontrol_port = {control}\n'
            f'local_client = false\nstreams = {{ radio = "pipe://{work}/radio.fifo?mode=create" }}\n'
        )
        node = start_node(work, config, only=("info", "multiroom"))
        ids = [f"bench-{n}" for n in range(CLIENTS)]
        try:
            client = _connect(node.port)
            topic = f"{node.base}/multiroom"
            client.subscribe(topic)
            with snapclients(stream, ids):  # each plays into `null`, paced: no file grows
                client.pump_until(lambda: _all_connected(client, topic, ids), 15)
                rpc = Rpc(control)
                for i in range(trips + WARMUP):
                    cid = ids[i % CLIENTS]
                    volume = 10 + i % 80
                    # MQTT -> snapserver -> the retained state, as a slider or the volume master does it.
                    client.got.clear()
                    t0 = time.perf_counter()
                    client.publish(f"{topic}/client/{cid}/set", json.dumps({"volume": volume}).encode())
                    _wait_volume(client, topic, cid, volume, 0)
                    mqtt_ms = (time.perf_counter() - t0) * 1000
                    # Another controller -> snapserver's notification -> the retained state.
                    client.got.clear()
                    t0 = time.perf_counter()
                    request = rpc.send("Client.SetVolume", {"id": cid, "volume": {"percent": volume + 5}})
                    _wait_volume(client, topic, cid, volume + 5, 0)
                    rpc_ms = (time.perf_counter() - t0) * 1000
                    rpc.answer(request)
                    if i >= WARMUP:
                        results["mqtt"].append(mqtt_ms)
                        results["rpc"].append(rpc_ms)
            client.close()
        finally:
            node.proc.terminate()
            node.proc.wait(15)
    return results


def _all_connected(client: Client, topic: str, ids: list[str]) -> bool:
    for t, payload, _ in reversed(client.got):
        if t == topic:
            state = json.loads(payload)
            return {c["id"] for c in state["clients"] if c["connected"]} >= set(ids)
    return False


def _connect(port: int, timeout: float = 15.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:  # the node's broker port opens once it has started: retry, bounded
        try:
            return Client(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def table(results: dict[str, list[float]]) -> str:
    rows = {
        "mqtt": "`multiroom/client/<id>/set` volume -> retained `multiroom`",
        "rpc": "JSON-RPC `Client.SetVolume` by another controller -> retained `multiroom`",
    }
    out = [
        "| figure (8 snapclients) | p50 (ms) | p99 (ms) | max (ms) | target p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for key, name in rows.items():
        values = results[key]
        out.append(
            f"| {name} | {statistics.median(values):.2f} | {_percentile(values, 0.99):.2f} "
            f"| {max(values):.2f} | <= {TARGET_MS:.0f} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--trips", type=int, default=TRIPS, help=f"round trips of each kind (default {TRIPS})"
    )
    args = parser.parse_args()
    results = bench(args.trips)
    print(table(results))
    print(
        f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}; snapserver 0.26 and {CLIENTS} "
        "snapclients on loopback; node with embedded broker (info, multiroom); raw-socket QoS 0 MQTT client."
    )
    return 0 if all(_percentile(v, 0.99) <= TARGET_MS for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
