"""A program the node runs as its child: spawned, watched, restarted with backoff when it dies, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from node.framework.backoff import Backoff
from node.framework.children import dying_with_node
from node.framework.errors import DaemonError

__all__ = ["Child", "ChildBackoff", "ChildError", "describe_exit", "executable"]

STOP_TIMEOUT = 3.0
TAIL_LINES = 5


class ChildError(DaemonError):
    """The program could not be started at all (not executable, bad interpreter...)."""


def executable(path: str) -> str | None:
    """`path` if it is an executable file, else the executable of that name on PATH; None when neither."""
    import shutil  # noqa: PLC0415 - only when a source checks for its program

    if os.sep in path:
        return path if Path(path).is_file() and os.access(path, os.X_OK) else None
    return shutil.which(path)


def ChildBackoff() -> Backoff:  # noqa: N802 - the name callers know; the framework's Backoff, tuned
    """Restart delays of a daemon: from 0.5 s doubling to 30 s, back to the start after 30 s of running."""
    return Backoff(first=0.5, cap=30.0, healthy=30.0)


# (return code, seconds until the restart) -> awaitable or None
ExitHook = Callable[[int, float], Awaitable[None] | None]
StartHook = Callable[[int], Awaitable[None] | None]


class Child:
    """One supervised program. `run()` spawns it, waits for its exit, and spawns it again after a delay.

    `argv` is called before every spawn, so a restart picks up what changed meanwhile (a new config).
    Its output goes to the node's log line by line (debug); the last lines are logged when it dies.
    Cancelling `run()` stops it: SIGTERM, then SIGKILL after STOP_TIMEOUT.
    """

    def __init__(
        self,
        name: str,
        argv: Callable[[], Sequence[str]],
        *,
        log: logging.Logger,
        backoff: Backoff | None = None,
        on_start: StartHook | None = None,
        on_exit: ExitHook | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._argv = argv
        self.log = log
        self.backoff = backoff or ChildBackoff()
        self._on_start = on_start
        self._on_exit = on_exit
        self._env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.restarts = 0  # exits it was restarted after
        self.last_exit = ""  # why it last stopped on its own ("snapserver exited with status 1")
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def spawn(self) -> asyncio.subprocess.Process:
        """Start the program once (no supervision): the caller waits for it and stops it."""
        argv = list(self._argv())
        try:
            spawned, preexec = dying_with_node(argv)
            proc = await asyncio.create_subprocess_exec(
                *spawned,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env,
                start_new_session=True,  # a Ctrl-C in the node's terminal is the node's to handle
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise ChildError(f"cannot start {self.name} ({argv[0]}): {exc}") from None
        self.proc = proc
        self.starts += 1
        self.log.info("%s started (pid %d): %s", self.name, proc.pid, " ".join(argv))
        return proc

    async def run(self) -> None:
        """Keep the program running until cancelled."""
        try:
            while True:
                started = time.monotonic()
                try:
                    proc = await self.spawn()
                except ChildError as exc:
                    code, reason = 127, str(exc)
                else:
                    await _call(self._on_start, proc.pid)
                    code = await self._wait(proc)
                    reason = f"{self.name} exited with {describe_exit(code)}"
                delay = self.backoff.next(time.monotonic() - started)
                self.restarts += 1
                self.last_exit = reason
                tail = " | ".join(self._tail)
                self.log.warning(
                    "%s; restart in %.1f s%s", reason, delay, f" (last output: {tail})" if tail else ""
                )
                self._tail.clear()
                await _call(self._on_exit, code, delay)
                await asyncio.sleep(delay)
        finally:
            await self.stop()

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        if proc.stdout is not None:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self._tail.append(line[:300])
                    self.log.debug("%s: %s", self.name, line)
        return await proc.wait()

    async def stop(self) -> None:
        """Stop the program if it runs: SIGTERM, then SIGKILL; waits for it to be gone."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            self.log.warning("%s (pid %d) ignored SIGTERM; killed", self.name, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def describe_exit(code: int) -> str:
    """`status 1`, `signal SIGKILL`: how a return code reads in a log line or a state."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


async def _call(hook: Callable[..., Awaitable[None] | None] | None, *args: object) -> None:
    if hook is None:
        return
    result = hook(*args)
    if result is not None:
        await result
