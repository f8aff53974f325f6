"""A retained-message store for amqtt that survives restarts: one JSON file, written atomically."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin

from node.framework.files import write_atomic

logger = logging.getLogger(__name__)


class RetainedStore(BasePlugin):  # type: ignore[misc]
    """Loads retained messages before the listeners open, saves them after changes and at shutdown.

    Replaces amqtt's SQLite session plugin, which restores stale values and deletes its file on
    clean shutdown (shared/reference/amqtt.md §3).
    """

    @dataclass
    class Config:
        """The plugin's section in the broker config."""

        path: str = "retained.json"
        # Saves are coalesced: a burst of state changes costs one write, at most this late.
        flush_delay: float = 1.0
        # Topics forced to this payload at load, before anyone can connect (the node's own
        # availability, which a killed node left at "online").
        force: dict[str, str] = field(default_factory=dict)

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._path = Path(self.config.path)
        self._dirty = asyncio.Event()
        self._writing = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        # What was wrong with the file at load, for the node to report (`<base>/error`, info's notices).
        self.problems: list[str] = []

    async def on_broker_pre_start(self) -> None:
        self._load()
        for topic, payload in self.config.force.items():
            self.context.retained_messages[topic] = RetainedApplicationMessage(
                None, topic, payload.encode(), 1
            )
        self._task = asyncio.create_task(self._flusher(), name="retained-store")

    def _load(self) -> None:
        """Restore the saved messages; a file of the wrong shape or with bad entries is set aside.

        The good entries are kept (and saved anew); the file as it was goes to
        `retained.json.corrupt-<time>`, never deleted, as the subsystems' files are (node/framework/
        store.py). An entry with a bad QoS broke every matching SUBSCRIBE before.
        """
        if not self._path.exists():
            return
        try:
            raw = json.loads(self._path.read_bytes())
        except (ValueError, RecursionError, OSError) as exc:
            self._set_aside(f"unreadable ({_short(exc)})")
            return
        if not isinstance(raw, dict):
            self._set_aside(f"not an object of topics but {type(raw).__name__}")
            return
        bad: list[str] = []
        for topic, entry in raw.items():
            problem = _entry_problem(topic, entry)
            if problem is not None:
                bad.append(f"{topic[:60]!r}: {problem}")
                continue
            data = base64.b64decode(entry[0], validate=True)
            if not data:
                continue  # a cleared topic: nothing to serve (the store never writes one)
            self.context.retained_messages[topic] = RetainedApplicationMessage(None, topic, data, entry[1])
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            self._set_aside(f"{len(bad)} bad entries, {'; '.join(bad[:3])}{more}; the good ones kept")
            self._dirty.set()  # the good entries, saved in place of the bad file
        logger.info("retained store: %d messages restored from %s", len(raw) - len(bad), self._path)

    def _set_aside(self, why: str) -> None:
        aside = self._path.with_name(f"{self._path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        with contextlib.suppress(OSError):
            os.replace(self._path, aside)
        problem = f"{self._path.name} is corrupt: {why}; moved to {aside.name}"
        logger.error("retained store: %s", problem)
        self.problems.append(problem)

    def changed(self) -> None:
        """The broker-wide store changed (called by the fast path, without an event task per message)."""
        self._dirty.set()

    def flush(self) -> None:
        """Save now, in this thread (at shutdown, and for tests)."""
        self._write(self._snapshot())

    def _snapshot(self) -> bytes:
        entries = {
            topic: (base64.b64encode(bytes(m.data)).decode(), m.qos or 0)
            for topic, m in self.context.retained_messages.items()
            if m.data
        }
        self._dirty.clear()  # a change from here on is saved by the next flush
        return json.dumps(entries, separators=(",", ":")).encode()

    def _write(self, data: bytes) -> None:
        with self._writing:  # the flusher's thread and a final flush never write at once
            self._path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path, data)

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.config.flush_delay)  # coalescing window, not a wait for an event
            try:
                # Two fsyncs, 5-15 ms here and more on an SD card: in a thread, not on the event
                # loop that carries every client's messages (a stall in the broker's p99 before).
                await asyncio.to_thread(self._write, self._snapshot())
            except OSError:
                logger.exception("retained store: save failed")

    async def on_broker_pre_shutdown(self) -> None:
        # Before shutdown() clears the broker's dict.
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()


def _entry_problem(topic: Any, entry: Any) -> str | None:
    """Why one saved entry (topic -> [base64 payload, qos]) cannot be restored, or None."""
    if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
        return "not a topic name"
    if not isinstance(entry, list) or len(entry) != 2:
        return "not [payload, qos]"
    b64, qos = entry
    if not isinstance(qos, int) or isinstance(qos, bool) or qos not in (0, 1, 2):
        return f"bad qos {str(qos)[:20]!r}"
    if not isinstance(b64, str):
        return "payload is not base64 text"
    try:
        base64.b64decode(b64, validate=True)
    except ValueError:
        return "payload is not base64"
    return None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
