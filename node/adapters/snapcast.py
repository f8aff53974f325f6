"""Snapcast: a JSON-RPC control client over TCP with notifications, snapserver.conf, and its units."""

# One module for the one program pair: the control protocol, the config file the server reads, and
# the systemd units that may run its two programs (node/adapters/child.py runs them as children).
# Raw TCP JSON lines on purpose: snapserver 0.26's HTTP answers every POST twice
# (shared/reference/snapcast.md).

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2

from node.framework.errors import DaemonError
from node.resources import data_dir

Codec = Literal["flac", "ogg", "opus", "pcm"]
CODECS: tuple[Codec, ...] = ("flac", "ogg", "opus", "pcm")
# What snapserver 0.26 gives a client it has never seen (or lost on a crash: it saves server.json
# only now and then).
PRISTINE = {"name": "", "volume": 100, "muted": False, "latency": 0}


# A Server.GetStatus line grows with the clients (~600 bytes each): room for thousands.
_LINE_LIMIT = 4 * 1024 * 1024


class SnapcastError(DaemonError):
    """A JSON-RPC call failed: an error answer (code, message, data), a timeout or a lost connection."""

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class NotConnectedError(SnapcastError):
    """No control connection to snapserver now (it is starting, restarting or unreachable)."""


# JSON-RPC control ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """What the control connection reports, in order: `connected`, `lost`, or a notification."""

    kind: Literal["connected", "lost", "notification"]
    method: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


class Control:
    """A JSON-RPC 2.0 client of snapserver's TCP control port that reconnects by itself.

    `run()` keeps a connection up (reconnecting with backoff). Everything arrives through `on_event`,
    called synchronously in the order the server sent it: `connected`, `lost`, each notification, and
    each call's `on_result` just before the call returns. A caller that folds results and
    notifications into one picture therefore never sees an older change overtake a newer one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_event: Callable[[Event], None],
        *,
        timeout: float = 2.0,
        retry_first: float = 0.05,
        retry_cap: float = 1.0,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.retry_first, self.retry_cap = retry_first, retry_cap
        self.on_event = on_event
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Any], None] | None]] = {}
        self._next_id = 0
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def run(self) -> None:
        delay = self.retry_first
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=_LINE_LIMIT)
            except OSError as exc:
                self.last_error = f"cannot reach snapserver at {self.host}:{self.port}: {exc.strerror or exc}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_cap)
                continue
            delay = self.retry_first
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small line a call
            self._writer = writer
            self.last_error = ""
            self.on_event(Event("connected"))
            try:
                await self._read(reader, sock)
            finally:
                self._writer = None
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()
                self._fail_pending(NotConnectedError("the snapserver control connection was lost"))
                self.on_event(Event("lost"))

    async def _read(self, reader: asyncio.StreamReader, sock: socket.socket | None) -> None:
        while True:
            if sock is not None:
                # snapserver's socket has Nagle on: a small write while an earlier one is not yet
                # acknowledged waits for our ACK, which Linux delays up to 40 ms unless asked for at
                # once (measured: a notification p50 43 ms -> 1 ms). The kernel resets it: each read.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            try:
                line = await reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: a line over the stream limit
                self.last_error = f"snapserver control connection: {exc}"
                return
            if not line:
                self.last_error = "snapserver closed the control connection"
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            for one in message if isinstance(message, list) else [message]:
                if isinstance(one, dict):
                    self._dispatch(one)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" not in message:
            params = message.get("params")
            self.on_event(
                Event("notification", str(message["method"]), params if isinstance(params, dict) else {})
            )
            return
        future, on_result = self._pending.pop(message.get("id", -1), (None, None))
        if future is None or future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            data = error.get("data")
            text = str(data or error.get("message") or "error")
            future.set_exception(SnapcastError(text, code=error.get("code"), data=data))
            return
        result = message.get("result")
        if on_result is not None:
            on_result(result)
        future.set_result(result)

    def _fail_pending(self, exc: SnapcastError) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        on_result: Callable[[Any], None] | None = None,
    ) -> Any:
        """One request; `on_result` sees the result in order with the notifications."""
        writer = self._writer
        if writer is None:
            raise NotConnectedError(self.last_error or "snapserver is not connected")
        self._next_id += 1
        request_id = self._next_id
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = dict(params)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, on_result)
        try:
            writer.write(json.dumps(request, separators=(",", ":")).encode() + b"\r\n")
            await writer.drain()
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError as exc:
            raise SnapcastError(f"{method}: no answer from snapserver within {self.timeout} s") from exc
        except OSError as exc:
            raise NotConnectedError(f"{method}: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)


# snapserver.conf ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """One snapserver source: its name (= the Milo source) and URI without the name parameter."""

    name: str
    uri: str

    def line(self) -> str:
        sep = "&" if "?" in self.uri else "?"
        return f"{self.uri}{sep}name={self.name}"


def alsa_stream(name: str, device: str) -> Stream:
    """A Loopback capture: idle when the source is silent, so a client never plays another's silence."""
    return Stream(name, f"alsa://?device={device}&send_silence=false&idle_threshold=100")


@dataclass(frozen=True)
class ServerConfig:
    """Everything snapserver.conf holds."""

    datadir: str
    streams: Sequence[Stream]
    bind: str = "0.0.0.0"
    stream_port: int = 1704
    control_port: int = 1705
    http_port: int = 0  # 0: no HTTP/WebSocket control (Debian ships no snapweb)
    sample_format: str = "48000:16:2"
    codec: Codec = "flac"
    chunk_ms: int = 20
    buffer_ms: int = 1000
    threads: int = 2


def render_server_conf(config: ServerConfig) -> str:
    """snapserver.conf (0.26 section names) from daemons/snapserver.conf.j2."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir("daemons")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - an ini file, not HTML
    )
    for value in (config.datadir, config.bind, config.sample_format, *(s.uri for s in config.streams)):
        if "\n" in value or "\r" in value:
            raise ValueError(f"a line break in a snapserver.conf value: {value!r}")
    return env.get_template("snapserver.conf.j2").render(conf=config)


def client_argv(
    binary: str,
    *,
    host: str,
    port: int,
    host_id: str,
    soundcard: str = "default",
    player: str = "alsa",
    mixer: str = "software",
    latency: int = 0,
    logsink: str | None = "stderr",
) -> list[str]:
    """The snapclient 0.26 command line (always with -h: without it, it loops on mDNS forever)."""
    argv = [binary, "-h", host, "-p", str(port), "--hostID", host_id, "--player", player]
    if player.split(":", 1)[0] == "alsa":
        argv += ["-s", soundcard]
    argv += ["--mixer", mixer, "--latency", str(latency)]
    if logsink is not None:
        argv += ["--logsink", logsink]
    return argv


# Processes ----------------------------------------------------------------------------------------


class SystemdUnit:
    """A unit the node starts, stops and restarts through systemctl (polkit allows its own units)."""

    def __init__(self, unit: str, *, systemctl: str = "systemctl", timeout: float = 20.0) -> None:
        self.unit, self.systemctl, self.timeout = unit, systemctl, timeout

    async def _do(self, verb: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.systemctl,
                verb,
                self.unit,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise DaemonError(f"systemctl {verb} {self.unit}: {exc}") from exc
        if proc.returncode != 0:
            raise DaemonError(f"systemctl {verb} {self.unit}: {err.decode(errors='replace').strip()}")

    async def start(self) -> None:
        await self._do("start")

    async def stop(self) -> None:
        await self._do("stop")

    async def restart(self) -> None:
        await self._do("restart")
