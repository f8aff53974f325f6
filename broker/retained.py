"""A retained-message store for amqtt that survives restarts: one JSON file, written atomically."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import threading
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

    async def on_broker_pre_start(self) -> None:
        self._load()
        for topic, payload in self.config.force.items():
            self.context.retained_messages[topic] = RetainedApplicationMessage(
                None, topic, payload.encode(), 1
            )
        self._task = asyncio.create_task(self._flusher(), name="retained-store")

    def _load(self) -> None:
        if not self._path.exists():
            return
        try:
            entries = json.loads(self._path.read_bytes())
            for topic, (b64, qos) in entries.items():
                data = base64.b64decode(b64)
                self.context.retained_messages[topic] = RetainedApplicationMessage(None, topic, data, qos)
        except (ValueError, TypeError, OSError) as exc:
            aside = self._path.with_name(self._path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self._path, aside)
            logger.error(
                "retained store %s unreadable (%s); moved to %s, starting empty", self._path, exc, aside
            )
            self.context.retained_messages.clear()
        else:
            logger.info("retained store: %d messages restored from %s", len(entries), self._path)

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
