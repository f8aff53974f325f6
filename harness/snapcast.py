"""Real snapclients on loopback, another JSON-RPC controller, multiroom configs: for tests and benchmarks."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.alsa_sinks import sink_config
from harness.net import free_port
from node import registry

SNAPCLIENT = "snapclient"
# A snapclient's `file` player writes raw s16le 48 kHz stereo paced in real time: 192 kB a second.
BYTES_PER_SECOND = 48000 * 2 * 2


@dataclass
class Ports:
    stream: int = field(default_factory=free_port)
    control: int = field(default_factory=free_port)


def multiroom_section(
    tmp: Path, ports: Ports, *, sources: Sequence[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """The multiroom config of a test node: loopback only, its ports, a pipe for every source's stream.

    This machine has no snd-aloop: each stream reads a FIFO `tmp/<source>.fifo` instead of
    `hw:Loopback,1,<sub>`. The local client plays into a paced file, never into an ALSA sink.
    """
    names = list(registry.source_names() if sources is None else sources)
    section: dict[str, Any] = {
        "bind": "127.0.0.1",
        "stream_port": ports.stream,
        "control_port": ports.control,
        "streams": {name: f"pipe://{tmp / f'{name}.fifo'}?mode=create" for name in names},
        "client_player": f"file:filename={tmp / 'local.raw'}",
        "restart_first_s": 0.1,
        "restart_cap_s": 1.0,
    }
    section.update(extra)
    return section


@contextlib.contextmanager
def fifo_routing(out: Path, fifos: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """Routing with file sinks, except that each named source's multiroom PCM writes raw into a FIFO.

    snapserver reads that FIFO as the source's stream: what a Loopback subdevice is on a Pi. A FIFO
    is a paced sink, since its reader takes the audio at the stream's real-time rate. Each FIFO is
    held open here for the test's length: with no writer, snapserver's reads end at once and it
    closes and reopens the FIFO in a loop, and a player writing just then would get EPIPE (alsa-lib's
    file plug-in can abort the process on it). A Loopback device never does either.
    """
    config = sink_config(out)
    extra = [config["extra"]]
    held = []
    for source, fifo in fifos.items():
        if not fifo.exists():
            os.mkfifo(fifo)
        held.append(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))  # a reader and a writer that never act
        extra.append(
            f'pcm.test_fifo_{source}_file {{ type file; slave.pcm "null"; format "raw"; file "{fifo}" }}\n'
            f'pcm.test_fifo_{source} {{ type plug; slave {{ pcm "test_fifo_{source}_file"; format S16_LE; '
            "rate 48000; channels 2 } }\n"
        )
        config["loopback_pcms"][source] = f"test_fifo_{source}"
    config["extra"] = "".join(extra)
    try:
        yield config
    finally:
        for fd in held:
            os.close(fd)


class Snapclient:
    """One real snapclient with its own host id, writing what it plays to a paced file (or nowhere).

    Supervised as its unit is on a satellite (systemd/snapclient.service.j2: Restart=always): snapclient
    0.26 sometimes aborts ("malloc(): unsorted double linked list corrupted") when its server goes away
    during its handshake, and systemd starts it again. Its stderr is kept, to tell a crash from a hang.
    """

    RESTART_S = 1.0  # the unit's RestartSec

    def __init__(self, port: int, host_id: str, out: Path | None = None, *, latency: int = 0) -> None:
        self.port, self.host_id, self.out = port, host_id, out
        target = str(out) if out is not None else "null"
        self.argv = [
            SNAPCLIENT,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--hostID",
            host_id,
            "--player",
            f"file:filename={target}",
            "--latency",
            str(latency),
            "--logsink",
            "stderr",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes: list[str] = []  # the last lines of output of each run that ended by itself
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never cross
        self._supervisor: threading.Thread | None = None

    def start(self) -> Snapclient:
        self._stopping.clear()
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name=f"snapclient-{self.host_id}")
        self._supervisor.start()
        return self

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            assert proc.stderr is not None
            tail: collections.deque[bytes] = collections.deque(proc.stderr, maxlen=3)  # until it exits
            code = proc.wait()
            if self._stopping.is_set():
                return
            last = b" | ".join(line.strip() for line in tail).decode(errors="replace")
            self.crashes.append(f"exit {code}: {last}")
            print(f"snapclient {self.host_id} ended ({code}: {last}); restarted as its unit would be")
            if self._stopping.wait(self.RESTART_S):
                return
            with self._lock:
                if not self._stopping.is_set():
                    self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                # Blocked on I/O it may ignore SIGTERM (shared/reference/testing-without-hardware.md).
                proc.kill()
                proc.wait(3)
        if self._supervisor is not None:
            self._supervisor.join(5)
            self._supervisor = None


@contextlib.contextmanager
def snapclients(port: int, host_ids: Sequence[str], out: Path | None = None) -> Iterator[list[Snapclient]]:
    """Several snapclients, stopped by PID on the way out; `out` is a folder for their audio files."""
    clients = [
        Snapclient(port, hid, out / f"{hid}.raw" if out is not None else None).start() for hid in host_ids
    ]
    try:
        yield clients
    finally:
        for client in clients:
            client.stop()


@contextlib.contextmanager
def snapserver(conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A snapserver of the test's own (what a unit, or someone else, runs), stopped by PID after."""
    proc = subprocess.Popen(
        ["snapserver", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Controller:
    """Another Snapcast controller (as Snapdroid is): raw JSON-RPC lines on the TCP control port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next = 0
        self.notifications: list[tuple[str, dict[str, Any]]] = []  # what arrived, in order

    async def __aenter__(self) -> Controller:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        """The result, skipping the notifications sent meanwhile; an error answer raises RuntimeError."""
        assert self._reader is not None and self._writer is not None
        self._next += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next, "method": method}
        if params is not None:
            request["params"] = params
        self._writer.write(json.dumps(request).encode() + b"\r\n")
        await self._writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                answer = await self._message()
                if answer.get("id") == self._next:
                    if "error" in answer:
                        raise RuntimeError(answer["error"])
                    return answer["result"]

    async def _message(self) -> dict[str, Any]:
        assert self._reader is not None
        message: dict[str, Any] = json.loads(await self._reader.readline())
        if "method" in message and "id" not in message:
            self.notifications.append((message["method"], message.get("params") or {}))
        return message

    async def notified(self, method: str, **params: Any) -> dict[str, Any]:
        """The first notification `method` whose params hold `params` (those of others' changes only)."""

        def found() -> dict[str, Any] | None:
            for name, got in self.notifications:
                if name == method and all(got.get(k) == v for k, v in params.items()):
                    return got
            return None

        async with asyncio.timeout(5.0):
            while (hit := found()) is None:
                await self._message()
        return hit


def raw_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
