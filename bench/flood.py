"""`python -m bench.flood`: a client's `info/get` round trip, quiet and while another floods `ui/set`."""

# The flooder is its own process (no GIL shared with the measuring client), sending pre-encoded
# QoS 0 `ui/set` packets at FLOOD_RATE, paced in 10 ms batches, for FLOOD_S or until the broker
# closes it. On the embedded broker its reads are paused past the per-client rate (200 msg/s,
# burst 400) and it is cut off after the grace (5 s, README "Security"); mosquitto, as Debian ships
# it, has no such limit. Both nodes run at once (bench/pair.py), measured one after the other.

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.__main__ import Client, pct
from bench.pair import KINDS, NodePair, node_pair
from harness.rawmqtt import connect_packet, publish_packet

FLOOD_RATE = 10_000  # msg/s
FLOOD_S = 10.0  # past the 5 s grace, so the cut-off is seen
QUIET_TRIPS = 500
TRIP_TIMEOUT = 30.0  # one round trip on a flooded broker can take seconds; that is the finding
SETTLE_S = 0.5  # flooding before the measurement starts: the broker is in its steady flooded state
BACKLOG_CAP_S = 30.0
PACE_S = 0.01
TARGET_RATIO = 2.0  # others' p99 during the flood within 2x of quiet, on the embedded broker


def flood(port: int, base: str, rate: int, seconds: float, languages: tuple[str, ...]) -> None:
    """The flooder process: prints `sent <n> closed_after <s|none>` when done."""
    import socket  # noqa: PLC0415 - only the flooder process needs it

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(connect_packet("flooder", 60))
    sock.recv(4)
    packets = [
        publish_packet(f"{base}/ui/set", json.dumps({"language": lang}).encode()) for lang in languages
    ]
    batch = b"".join(packets * (rate // 200))  # 10 ms of the flood
    sent, closed = 0, None
    start = time.monotonic()
    sock.settimeout(1.0)
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) - sent
        if due < rate // 100:
            time.sleep(0.002)  # pacing the sender, not waiting for an event
            continue
        try:
            sock.sendall(batch)
        except TimeoutError:
            continue  # the broker's reads are paused: its buffers are full
        except OSError:
            closed = time.monotonic() - start
            break
        sent += rate // 100
    print(f"sent {sent} closed_after {'none' if closed is None else f'{closed:.1f}'}", flush=True)


@dataclass
class Run:
    quiet: list[float] = field(default_factory=list)
    flooded: list[float] = field(default_factory=list)
    sent: int = 0
    closed_after: str = ""
    backlog_s: float = 0.0


def trip(client: Client, base: str) -> float:
    """One round trip, then a pause: 100 a second, half the per-client rate (the measuring client
    is a client like any other, and back-to-back trips would be a flood of their own)."""
    time.sleep(PACE_S)  # pacing the requests, not waiting for an event
    client.got.clear()
    t0 = time.perf_counter()
    client.publish(f"{base}/info/get", b"")
    client.pump_until(lambda: any(t == f"{base}/info" for t, _, _ in client.got), TRIP_TIMEOUT)
    return (time.perf_counter() - t0) * 1000


def measure(pair: NodePair, kind: str, languages: str) -> Run:
    port, base = pair.ports[kind], pair.bases[kind]
    run = Run()
    client = Client(port)
    client.subscribe(f"{base}/info")
    client.wait_topic(f"{base}/info")
    for _ in range(50):
        trip(client, base)
    run.quiet = [trip(client, base) for _ in range(QUIET_TRIPS)]
    args = [sys.executable, "-m", "bench.flood", "--flooder", str(port), base, str(FLOOD_RATE), str(FLOOD_S)]
    args += ["--languages", languages]
    flooder = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    time.sleep(SETTLE_S)  # the flood's start, then measured while it lasts
    while flooder.poll() is None:
        try:
            run.flooded.append(trip(client, base))
        except TimeoutError:
            run.flooded.append(float("inf"))  # no answer at all within TRIP_TIMEOUT
            break
    flooder.wait()
    out = (flooder.stdout.read() if flooder.stdout else "").split()
    run.sent, run.closed_after = int(out[1]), out[3]
    # The backlog the flood left: how long after it ends a `ui/get` (queued behind it) is answered.
    ended = time.perf_counter()
    client.subscribe(f"{base}/ui")
    client.got.clear()
    client.publish(f"{base}/ui/get", b"")
    try:
        client.pump_until(lambda: any(t == f"{base}/ui" for t, _, _ in client.got[1:]), BACKLOG_CAP_S)
        run.backlog_s = time.perf_counter() - ended
    except TimeoutError:
        run.backlog_s = float("inf")
    if run.closed_after == "none":
        # A node that took the whole flood still works through it and would not stop in time.
        os.kill(pair.pids[kind], signal.SIGKILL)
    client.close()
    return run


def _s(seconds: float) -> str:
    return f"> {BACKLOG_CAP_S:g}" if seconds == float("inf") else f"{seconds:.1f}"


def _ms(values: list[float], q: float) -> str:
    value = pct(values, q)
    return f"> {TRIP_TIMEOUT * 1000:,.0f}" if value == float("inf") else f"{value:.2f}"


def _ratio(run: Run) -> str:
    value = pct(run.flooded, 99) / pct(run.quiet, 99)
    return "no answer" if value == float("inf") else f"{value:.2f}x"


def table(runs: dict[str, Run]) -> str:
    e, m = runs["embedded"], runs["mosquitto"]
    rows = [
        ("others' `info/get` p50 quiet (ms)", f"{pct(e.quiet, 50):.2f}", f"{pct(m.quiet, 50):.2f}", ""),
        ("others' `info/get` p99 quiet (ms)", f"{pct(e.quiet, 99):.2f}", f"{pct(m.quiet, 99):.2f}", ""),
        ("p50 during the flood (ms)", _ms(e.flooded, 50), _ms(m.flooded, 50), ""),
        ("p99 during the flood (ms)", _ms(e.flooded, 99), _ms(m.flooded, 99), ""),
        ("p99 flood / p99 quiet", _ratio(e), _ratio(m), f"<= {TARGET_RATIO:g}x (embedded)"),
        ("round trips measured during the flood", str(len(e.flooded)), str(len(m.flooded)), ""),
        ("flood messages sent", f"{e.sent:,}", f"{m.sent:,}", ""),
        ("flooder cut off after (s)", e.closed_after, m.closed_after, "cut off (embedded)"),
        ("`ui/get` answered after the flood ends (s)", _s(e.backlog_s), _s(m.backlog_s), ""),
    ]
    head = [
        f"| {FLOOD_RATE:,} msg/s of `ui/set` from one client | embedded amqtt | mosquitto | target |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument(
        "--flooder", nargs=4, metavar=("PORT", "BASE", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--languages",
        default="fr,en",
        help="what the flood sets, in turn: fr,en (default) changes the state and saves a file every"
        " time; fr changes nothing after the first",
    )
    args = parser.parse_args()
    languages = tuple(args.languages.split(","))
    if args.flooder:
        port, base, rate, seconds = args.flooder
        flood(int(port), base, int(rate), float(seconds), languages)
        return 0
    with tempfile.TemporaryDirectory(prefix="milo-bench-flood-") as tmp, node_pair(Path(tmp)) as pair:
        runs = {kind: measure(pair, kind, args.languages) for kind in KINDS}
        print(f"`ui/set` in turn: {args.languages}\n")
        print(table(runs), flush=True)
    e = runs["embedded"]
    ok = pct(e.flooded, 99) <= TARGET_RATIO * pct(e.quiet, 99) and e.closed_after != "none"
    print("\nembedded target met" if ok else "\nembedded target NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
