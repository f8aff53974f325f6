"""`python -m bench.crash`: SIGKILLs during 1,000 config writes; lost writes and unreadable files."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from harness.crash import crash_run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="milo-bench-crash-") as tmp:
        # A kill every 20-60 writes: about 25 in a run.
        r = crash_run(Path(tmp), args.writes, every=(20, 60), seed=args.seed)
    rows = [
        ("acknowledged config writes (`info/config/set` -> echo)", f"{r.writes:,}", ""),
        ("SIGKILLs, each 0-8 ms after a write went out", str(r.kills), ""),
        ("acknowledged writes lost", str(len(r.lost)), "0"),
        ("unreadable or set-aside files", str(len(r.unreadable)), "0"),
        ("notices after restarts", str(len(r.notices)), "0"),
        ("restart to state served, median (s)", f"{statistics.median(r.restart_s):.2f}", ""),
        ("run (s)", f"{r.seconds:.0f}", ""),
    ]
    print(f"| crash safety (seed {r.seed}) | result | target |\n|---|---|---|")
    print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
    for line in [*r.lost, *r.unreadable, *r.notices]:
        print("  ", line)
    return 1 if r.lost or r.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
