"""What the roc source's relay costs: CPU and added latency at roc-vad's packet rate (`python -m` it)."""

# The relay runs in this process, as in the node; the sender and the receiving end run in a child
# process, so the CPU time measured here is the relay's alone. Each packet carries the time it was sent
# (CLOCK_MONOTONIC, the same in both processes); the same stream is timed sent straight to the receiving
# end and through the relay, and the difference of the medians is what the relay adds.

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
from typing import Any

from node.adapters.roc import RocPorts, RocRelay, free_udp_ports

# The rate assumed for roc-vad (not measured on a Mac): 5 ms packets of 44.1 kHz stereo L16 (882 bytes of
# audio), RS8M blocks of 18 source and 10 repair packets: 200 source and ~111 repair packets a second.
SOURCE_RATE = 200
REPAIR_RATIO = 10 / 18
SIZE = 12 + 882 + 8


def _peer(targets: list[tuple[str, int]], sinks: list[int], seconds: float) -> dict[str, Any]:
    """Send the stream to `targets` (source, repair), receive it on `sinks`; the delays in microseconds."""
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    selector = selectors.DefaultSelector()
    for port in sinks:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        selector.register(s, selectors.EVENT_READ)
    delays: list[float] = []
    done = threading.Event()

    def receive() -> None:  # blocked in select: a packet is timed the moment it arrives
        while not done.is_set():
            for key, _ in selector.select(timeout=0.1):
                data = key.fileobj.recv(2048)  # type: ignore[union-attr]
                delays.append((time.monotonic_ns() - struct.unpack_from("!Q", data, 12)[0]) / 1000)

    receiver = threading.Thread(target=receive)
    receiver.start()
    start = time.monotonic()
    count = 0
    repair_due = 0.0
    for n in range(int(seconds * SOURCE_RATE)):
        time.sleep(max(0.0, start + n / SOURCE_RATE - time.monotonic()))
        stamp = struct.pack("!Q", time.monotonic_ns())
        out.sendto(b"\x80\x0a" + bytes(10) + stamp + bytes(SIZE - 20), targets[0])
        count += 1
        repair_due += REPAIR_RATIO
        if repair_due >= 1:
            repair_due -= 1
            out.sendto(bytes(12) + stamp + bytes(SIZE - 20), targets[1])
            count += 1
    time.sleep(0.2)  # the last ones in flight
    done.set()
    receiver.join()
    return {"sent": count, "received": len(delays), "delays_us": delays}


async def _run(seconds: float, relay: bool) -> dict[str, Any]:
    sinks = free_udp_ports(3)
    public = RocPorts(*free_udp_ports(3))
    hub = RocRelay("127.0.0.1", public, timeout=1.0)
    if relay:
        await hub.start()
        hub.target = RocPorts(*sinks)
        targets = [("127.0.0.1", public.source), ("127.0.0.1", public.repair)]
    else:
        targets = [("127.0.0.1", sinks[0]), ("127.0.0.1", sinks[1])]
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness.roc_relay_cost", "--peer", json.dumps([targets, sinks, seconds]),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    wall = time.monotonic() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    hub.close()
    result: dict[str, Any] = json.loads(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["cpu_percent"] = 100 * cpu / wall
    return result


async def measure(seconds: float = 10.0) -> dict[str, float]:
    direct = await _run(seconds, relay=False)
    relayed = await _run(seconds, relay=True)
    return {
        "packets_per_s": relayed["sent"] / seconds,
        "relayed_fraction": relayed["received"] / max(1, relayed["sent"]),
        "direct_p50_us": p50(direct["delays_us"]),
        "relay_p50_us": p50(relayed["delays_us"]),
        "added_p50_us": p50(relayed["delays_us"]) - p50(direct["delays_us"]),
        "added_p99_us": p99(relayed["delays_us"]) - p99(direct["delays_us"]),
        "relay_cpu_percent": relayed["cpu_percent"],
        "idle_cpu_percent": direct["cpu_percent"],  # the same process, nothing to relay
    }


def p50(delays: list[float]) -> float:
    return statistics.median(delays) if delays else 0.0


def p99(delays: list[float]) -> float:
    return sorted(delays)[int(len(delays) * 0.99)] if delays else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        targets, sinks, seconds = json.loads(args.peer)
        print(json.dumps(_peer([tuple(t) for t in targets], sinks, seconds)))
        return
    figures = asyncio.run(measure(args.seconds))
    for key, value in figures.items():
        print(f"{key:>20}: {value:.2f}")


if __name__ == "__main__":
    main()
