"""`python -m bench.source_switch`: `source/set` to the new `player` state, real mpv on a local stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.__main__ import Client, pct, start_node
from bench.volume import _connect
from harness.icy_server import IcyServer, make_mp3

TARGET_MS = 500.0


@contextmanager
def icy_server(directory: Path) -> Iterator[IcyServer]:
    """The paced ICY test server, on a loop of its own in a thread (the benchmark's client is blocking)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: list[IcyServer] = []

    async def start() -> None:
        holder.append(await IcyServer(make_mp3(directory)).start())
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    ready.wait(30)
    try:
        yield holder[0]
    finally:
        asyncio.run_coroutine_threadsafe(holder[0].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _player(client: Client, topic: str, start: int) -> list[dict[str, object]]:
    return [json.loads(p) for t, p, _ in client.got[start:] if t == topic and p]


def wait_player(client: Client, base: str, mark: int, reached: Callable[[dict[str, object]], bool]) -> None:
    client.pump_until(lambda: any(reached(s) for s in _player(client, f"{base}/player", mark)), 15)


def timed(client: Client, base: str, command: bytes, reached: Callable[[dict[str, object]], bool]) -> float:
    """ms from publishing `source/set` to the first `player` state that satisfies `reached`."""
    topic = f"{base}/player"
    start = len(client.got)
    t0 = time.perf_counter()
    client.publish(f"{base}/source/set", command)
    client.pump_until(lambda: any(reached(s) for s in _player(client, topic, start)), 15)
    return (time.perf_counter() - t0) * 1000


def bench(rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {
        "source/set radio -> player shows radio active": [],
        "source/set radio -> player playing (resume after a pause)": [],
        "source/set radio -> player playing (tuning in again)": [],
        "source/set none -> player shows none, radio paused": [],
    }
    names = list(figures)
    with tempfile.TemporaryDirectory(prefix="milo-bench-switch-") as tmp, icy_server(Path(tmp)) as icy:
        radio = (
            '[radio]\nao = "null"\naudio_device = "auto"\nallow_private_urls = true\nclick_counting = false\n'
            "index_refresh_h = 0\n"
        )
        node = start_node(Path(tmp), radio, only=("info", "radio", "player"))
        base, port, proc = node.base, node.port, node.proc
        try:
            client = _connect(port)
            client.subscribe(f"{base}/player")
            client.subscribe(f"{base}/source/radio")
            client.wait_topic(f"{base}/player", timeout=10)
            # Tune once so the radio has a station; then time switches back and forth.
            tune = json.dumps({"url": icy.url(), "name": "Bench FM"}).encode()
            mark = len(client.got)
            client.publish(f"{base}/source/radio/set", tune)
            wait_player(client, base, mark, lambda s: s["state"] == "playing")
            for _ in range(rounds):
                figures[names[3]].append(
                    timed(client, base, b"none", lambda s: s["active"] == "none" and s["state"] != "playing")
                )
                mark = len(client.got)
                t0 = time.perf_counter()
                client.publish(f"{base}/source/set", b"radio")
                wait_player(client, base, mark, lambda s: s["active"] == "radio")
                figures[names[0]].append((time.perf_counter() - t0) * 1000)
                wait_player(client, base, mark, lambda s: s["state"] == "playing")
                figures[names[1]].append((time.perf_counter() - t0) * 1000)
                # From stopped: the stream is opened again (connect, buffer, decode).
                mark = len(client.got)
                client.publish(f"{base}/source/radio/set", b"stop")
                client.publish(f"{base}/source/set", b"none")
                wait_player(client, base, mark, lambda s: s["active"] == "none" and s["state"] == "idle")
                figures[names[2]].append(timed(client, base, b"radio", lambda s: s["state"] == "playing"))
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return figures


def table(figures: dict[str, list[float]]) -> str:
    out = ["| figure | p50 (ms) | max (ms) | target (ms) |", "|---|---|---|---|"]
    for name, values in figures.items():
        target = f"<= {TARGET_MS:.0f}" if "active" in name or "resume" in name else "-"
        out.append(f"| {name} | {pct(values, 50):.1f} | {max(values):.1f} | {target} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    figures = bench(args.rounds)
    print(f"source switch with the radio (real libmpv, local ICY stream, null output), {args.rounds} rounds")
    print(table(figures))
    worst = max(max(figures[k]) for k in figures if "active" in k or "resume" in k)
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
