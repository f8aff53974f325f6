"""`python -m bench.ui`: from navigation to the node's whole state on screen (headless Chromium, loopback)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from harness.ui import KIOSK, PHONE, chromium, ui_node

TARGET_MS = 300.0
# A shared 2-core VM stalls now and then; the assertion guards against a regression (a render that
# waits on something it should not), the printed p50 is the figure compared with the target.
BOUND_MS = 1500.0


async def serve() -> None:
    """The node in a process of its own (as in real use), until the benchmark closes our stdin."""
    with tempfile.TemporaryDirectory(prefix="milo-bench-ui-") as tmp:
        async with ui_node(Path(tmp), f"bench{uuid.uuid4().hex[:6]}", volume=False) as node:
            print(node.url, flush=True)
            await asyncio.to_thread(sys.stdin.read)


async def measure(url: str, loads: int) -> list[tuple[float, float]]:
    """Fresh browser contexts (no cache) opening the page: (from navigation, from the load event) in ms."""
    figures = []
    async with chromium() as browser:
        for i in range(loads + 1):
            context = await browser.new_context(viewport=KIOSK if i % 2 else PHONE)  # type: ignore[arg-type]
            page = await context.new_page()
            await page.goto(url)
            await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
            mark, loaded = await page.evaluate(
                """() => [performance.getEntriesByName('milo-first-state')[0].startTime,
                          performance.getEntriesByType('navigation')[0].loadEventStart]"""
            )
            await context.close()
            if i:  # the first load also warms Chromium itself up: not a page's figure
                figures.append((float(mark), float(mark) - float(loaded)))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.ui", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        figures = asyncio.run(measure(url, args.loads))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)
    nav = [f[0] for f in figures]
    after_load = [f[1] for f in figures]
    print(f"UI first whole state, {len(figures)} cold loads (fresh contexts, the node in its own process):")
    print(f"  from navigation start: p50 {statistics.median(nav):.0f} ms, max {max(nav):.0f} ms")
    print(f"  from the load event:   p50 {statistics.median(after_load):.0f} ms, max {max(after_load):.0f} ms"
          f" (target {TARGET_MS:.0f} ms)")  # fmt: skip
    if max(nav) > BOUND_MS:
        print(f"FAIL: a load took {max(nav):.0f} ms (bound {BOUND_MS:.0f} ms)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
