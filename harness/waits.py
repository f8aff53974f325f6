"""Waiting, with a timeout, for what no message announces: a file a fake writes, a count, a property."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

WAIT = 10.0


async def until(
    condition: Callable[[], Any], timeout: float = WAIT, what: str | Callable[[], str] = ""
) -> Any:
    """Poll `condition` until it holds and return its value; `what` says what was awaited on a timeout."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            said = what() if callable(what) else what or condition
            raise AssertionError(f"not within {timeout} s: {said}")
        await asyncio.sleep(0.02)
    return result
