"""`python -m bench.radio_search`: search latency of the local station index over 50,000 stations."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.radio_browser import COUNTRIES, TAGS, WORDS, generate_stations
from node.adapters.radiobrowser import Station, parse_stations
from node.sources.radio.index import StationIndex

STATIONS = 50_000
SEARCHES = 2_000
TARGET_P99_MS = 10.0


def queries(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Mixed searches as a UI would send them: typed prefixes, whole names, filters, pages."""
    out: list[dict[str, Any]] = []
    for _ in range(n):
        word = rng.choice(WORDS)
        kind = rng.random()
        q: dict[str, Any] = {"limit": rng.choice((20, 50))}
        if kind < 0.35:
            q["text"] = word[: rng.randint(1, len(word))]  # typing in progress
        elif kind < 0.55:
            q["text"] = " ".join(rng.sample(WORDS, 2))
        elif kind < 0.65:
            q["text"] = word.lower()
            q["country"] = rng.choice(COUNTRIES)[0]
        elif kind < 0.75:
            q["tag"] = rng.choice(TAGS)
        elif kind < 0.82:
            q["country"] = rng.choice(COUNTRIES)[0]
            q["tag"] = rng.choice(TAGS)
        elif kind < 0.88:
            q["language"] = rng.choice(COUNTRIES)[1].split(",")[0]
        elif kind < 0.94:
            q["text"] = word[:3]
            q["offset"] = rng.choice((50, 100, 500))
        else:
            q["text"] = rng.choice(("xyzzy", "zz top", "q"))
        out.append(q)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=STATIONS)
    parser.add_argument("--searches", type=int, default=SEARCHES)
    args = parser.parse_args(argv)

    stations: list[Station] = parse_stations(generate_stations(args.stations, seed=42))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        kept = StationIndex(directory).build(stations)
        build_s = time.perf_counter() - t0
        size = (directory / "stations.json.gz").stat().st_size

        index = StationIndex(directory)
        t0 = time.perf_counter()
        index.load()
        load_s = time.perf_counter() - t0

        times: list[float] = []
        hits = 0
        for q in queries(random.Random(7), args.searches):
            text = q.pop("text", "")
            t0 = time.perf_counter()
            result = index.search(text, **q)
            times.append((time.perf_counter() - t0) * 1000)
            hits += bool(result.stations)

    p50, p99 = statistics.median(times), percentile(times, 99)
    ok = p99 <= TARGET_P99_MS
    print(
        f"station index: {args.stations} generated, {kept} after merging duplicates; {args.searches} searches"
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| search p50 | {p50:.3f} ms |")
    print(f"| search p99 | {p99:.3f} ms (target <= {TARGET_P99_MS:g} ms: {'met' if ok else 'MISSED'}) |")
    print(f"| search max | {max(times):.3f} ms |")
    print(f"| searches with results | {hits} / {len(times)} |")
    print(f"| index build + save | {build_s * 1000:.0f} ms |")
    print(f"| index load | {load_s * 1000:.0f} ms |")
    print(f"| index file size | {size / 1024 / 1024:.2f} MiB |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
