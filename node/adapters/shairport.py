"""shairport-sync, the AirPlay receiver: its config file, process, metadata pipe, and the sender's remote."""

# One module for one program: what the node writes for it (a libconfig file), how it is started and
# watched (a child process, or its systemd unit), what it says (the metadata pipe) and the remote
# control it hands on (DACP: the sender's own HTTP server, reached with the token shairport-sync saw).
# Everything that fails at this edge becomes a ShairportError. Kept whole (~550 lines) because it is
# one program's edge: each part is short, and split up they would only import each other.

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from node.adapters.http_client import HttpClientError, http_request
from node.framework.errors import DaemonError

__all__ = [
    "MAX_ITEM_BYTES",
    "BuildInfo",
    "Dacp",
    "Item",
    "MetadataParser",
    "MetadataPipe",
    "ShairportError",
    "ShairportProcess",
    "ShairportSettings",
    "SystemdUnit",
    "build_info",
    "progress_ms",
    "render_config",
]

log = logging.getLogger(__name__)

# Cover art is the largest item (a phone sends up to ~1 MB JPEGs); anything bigger is dropped unread.
MAX_ITEM_BYTES = 8 * 1024 * 1024
# shairport-sync writes the pipe without blocking: when the pipe is full, the rest of an item is lost.
# A larger pipe (the unprivileged maximum by default) leaves room for a whole cover.
PIPE_SIZE = 1024 * 1024
RTP_RATE = 44100  # AirPlay 1's RTP clock, which `prgr` counts in
READY_POLL_S = 0.02
# It binds its RTSP port before it registers with Avahi, and exits at once when that fails: a
# process still alive this long after its port opened has announced itself.
SETTLE_S = 0.15
STOP_TIMEOUT_S = 3.0

Backend = Literal["alsa", "dummy"]


class ShairportError(DaemonError):
    """shairport-sync is missing, would not start, stopped, or its sender's remote did not answer."""


# Build ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildInfo:
    """What `shairport-sync -V` says: the version, then the build options (`metadata`, `avahi`, `alsa`...)."""

    version: str
    options: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> BuildInfo:
        # e.g. 3.3.8-libdaemon-OpenSSL-Avahi-ALSA-...-metadata-mqtt-dbus-mpris-sysconfdir:/etc
        parts = text.strip().split("-")
        options = frozenset(p.lower() for p in parts[1:] if p and ":" not in p)
        return cls(version=parts[0], options=options)


async def build_info(program: str, timeout: float = 5.0) -> BuildInfo:
    """Run `program -V`; ShairportError if it is missing or says nothing usable."""
    path = shutil.which(program)
    if path is None:
        raise ShairportError(f"{program} is not installed (apt install shairport-sync)")
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "-V", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError) as exc:
        raise ShairportError(f"{path} -V failed: {exc}") from None
    info = BuildInfo.parse(out.decode(errors="replace"))
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?\w*", info.version):
        raise ShairportError(f"{path} -V printed no version: {out[:80]!r}")
    return info


# Config --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShairportSettings:
    """What the node decides in shairport-sync's config file."""

    name: str  # announced to senders
    pipe: Path  # the metadata FIFO
    port: int = 5000  # RTSP
    udp_port_base: int = 6001
    backend: Backend = "alsa"
    output_device: str = "default"  # an ALSA PCM
    ignore_volume_control: bool = False  # True: the sender's slider does not attenuate
    session_timeout_s: int = 120
    allow_interruption: bool = False
    cover_art: bool = True


def _quote(text: str) -> str:
    """A libconfig string literal; control characters become spaces (names come from users)."""
    clean = "".join(" " if ord(c) < 0x20 or c == "\x7f" else c for c in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yes(flag: bool) -> str:
    return '"yes"' if flag else '"no"'


def render_config(s: ShairportSettings) -> str:
    """The libconfig text of `shairport-sync -c`; every setting the node relies on is spelled out."""
    lines = [
        "// Written by the Milo node (node/adapters/shairport.py): rewritten at every start, do not edit.",
        "general = {",
        f"  name = {_quote(s.name)};",
        f"  port = {int(s.port)};",
        f"  udp_port_base = {int(s.udp_port_base)};",
        f"  output_backend = {_quote(s.backend)};",
        f"  ignore_volume_control = {_yes(s.ignore_volume_control)};",
        "};",
        "sessioncontrol = {",
        f"  session_timeout = {int(s.session_timeout_s)};",
        f"  allow_session_interruption = {_yes(s.allow_interruption)};",
        "};",
        "alsa = {",
        f"  output_device = {_quote(s.output_device)};",
        # The device is closed between sessions and on every pause, so it is reopened (and the
        # asound.conf alias it names followed) whenever audio starts again.
        '  disable_standby_mode = "never";',
        "};",
        "metadata = {",
        '  enabled = "yes";',
        f"  include_cover_art = {_yes(s.cover_art)};",
        f"  pipe_name = {_quote(str(s.pipe))};",
        "};",
    ]
    return "\n".join(lines) + "\n"


# Metadata pipe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One metadata item: `type` is `core` (the sender's DMAP tags) or `ssnc` (shairport-sync's own)."""

    type: str
    code: str
    data: bytes = b""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


_ITEM_HEAD = re.compile(
    rb"<item><type>([0-9a-fA-F]{1,8})</type><code>([0-9a-fA-F]{1,8})</code><length>(\d{1,10})</length>"
)
_DATA_OPEN = b'<data encoding="base64">'
_ITEM_START, _ITEM_END = b"<item>", b"</item>"


def _code(hex_text: bytes) -> str:
    return int(hex_text, 16).to_bytes(4, "big").decode("latin-1")


class MetadataParser:
    """Turns the pipe's byte stream into items, whatever the chunking.

    shairport-sync writes `<item><type>hex</type><code>hex</code><length>n</length>`, then for n > 0
    `\\n<data encoding="base64">\\n...</data>`, then `</item>\\n`. Base64 never holds `<`, so an item ends
    at the first `</item>`. A write cut short by a full pipe leaves a damaged item: it is dropped and
    the parser starts again at the next `<item>`.
    """

    def __init__(self, max_item_bytes: int = MAX_ITEM_BYTES) -> None:
        self._buf = bytearray()
        self._max_encoded = max_item_bytes * 4 // 3 + 1024
        self._skipping = False  # inside an oversized item: drop until its end
        self.dropped = 0

    def feed(self, data: bytes) -> list[Item]:
        self._buf += data
        items: list[Item] = []
        while True:
            if self._skipping:
                end = self._buf.find(_ITEM_END)
                nxt = self._buf.find(_ITEM_START)
                if end < 0 and nxt < 0:
                    # Keep only what may be the start of either mark.
                    del self._buf[: max(0, len(self._buf) - len(_ITEM_END) + 1)]
                    return items
                cut = nxt if nxt >= 0 and (end < 0 or nxt < end) else end + len(_ITEM_END)
                del self._buf[:cut]
                self._skipping = False
                continue
            start = self._buf.find(_ITEM_START)
            if start < 0:
                del self._buf[: max(0, len(self._buf) - len(_ITEM_START) + 1)]
                return items
            del self._buf[:start]
            # A damaged item runs into the next one: cut it at the next `<item>`.
            end = self._buf.find(_ITEM_END)
            nxt = self._buf.find(_ITEM_START, len(_ITEM_START))
            if nxt >= 0 and (end < 0 or nxt < end):
                self.dropped += 1
                del self._buf[:nxt]
                continue
            if end < 0:
                if len(self._buf) > self._max_encoded:
                    self.dropped += 1
                    self._skipping = True
                    del self._buf[: len(_ITEM_START)]
                    continue
                return items
            block = bytes(self._buf[: end + len(_ITEM_END)])
            del self._buf[: end + len(_ITEM_END)]
            item = self._decode(block)
            if item is None:
                self.dropped += 1
            else:
                items.append(item)

    @staticmethod
    def _decode(block: bytes) -> Item | None:
        head = _ITEM_HEAD.match(block)
        if head is None:
            return None
        length = int(head.group(3))
        rest = block[head.end() : -len(_ITEM_END)].strip()
        data = b""
        if length:
            if not (rest.startswith(_DATA_OPEN) and rest.endswith(b"</data>")):
                return None
            try:
                data = base64.b64decode(rest[len(_DATA_OPEN) : -len(b"</data>")].strip(), validate=True)
            except ValueError:
                return None
            if len(data) != length:
                return None
        elif rest:
            return None
        return Item(_code(head.group(1)), _code(head.group(2)), data)


class _PipeProtocol(asyncio.Protocol):
    def __init__(self, parser: MetadataParser, queue: asyncio.Queue[Item | None]) -> None:
        self.parser = parser
        self.queue = queue

    def data_received(self, data: bytes) -> None:
        for item in self.parser.feed(data):
            self.queue.put_nowait(item)

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)


class MetadataPipe:
    """Reads shairport-sync's metadata FIFO, creating it first so that nothing it says is lost.

    The reader also holds the FIFO open for writing: with a writer always there, a restart of
    shairport-sync is no end of file, and its writes (which it only makes while a reader is there)
    keep arriving on the same reader.
    """

    def __init__(self, path: Path, max_item_bytes: int = MAX_ITEM_BYTES) -> None:
        self.path = path
        self.parser = MetadataParser(max_item_bytes)
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._transport: asyncio.ReadTransport | None = None
        self._keeper: int | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink() or (self.path.exists() and not stat.S_ISFIFO(self.path.stat().st_mode)):
                self.path.unlink()
            if not self.path.exists():
                os.mkfifo(self.path, 0o660)
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._keeper = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ShairportError(f"metadata pipe {self.path}: {exc}") from None
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(reader, "rb", buffering=0)
        self._transport, _ = await loop.connect_read_pipe(
            lambda: _PipeProtocol(self.parser, self._queue), pipe
        )

    async def items(self) -> AsyncIterator[Item]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._keeper is not None:
            with contextlib.suppress(OSError):
                os.close(self._keeper)
            self._keeper = None


def progress_ms(text: str) -> tuple[int, int] | None:
    """`prgr` is `start/current/end` in RTP frames (44.1 kHz, wrapping at 2^32): (position, duration), ms."""
    try:
        start, current, end = (int(p) for p in text.strip().split("/"))
    except ValueError:
        return None
    wrap = 1 << 32
    position = (current - start) % wrap
    duration = (end - start) % wrap
    if position > duration:  # `current` a little before `start`: not wrapped around, just early
        position = 0
    return position * 1000 // RTP_RATE, duration * 1000 // RTP_RATE


# Process -------------------------------------------------------------------------------------------


@dataclass
class ShairportProcess:
    """shairport-sync as a child of the node; `start` returns once it has announced itself."""

    program: str
    config: Path
    port: int
    env: Mapping[str, str] | None = None
    start_timeout: float = 5.0
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    _proc: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None
    started_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self.started_at = time.monotonic()  # a start that fails at once counts as a short run
        path = shutil.which(self.program)
        if path is None:
            raise ShairportError(f"{self.program} is not installed (apt install shairport-sync)")
        self.lines.clear()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                path,
                "-c",
                str(self.config),
                "-u",  # its log on stderr, where the node reads why it stopped
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=dict(self.env) if self.env is not None else None,
                start_new_session=True,  # a Ctrl-C meant for the node is the node's to pass on
            )
        except OSError as exc:
            raise ShairportError(f"cannot run {path}: {exc}") from None
        self._drain = asyncio.create_task(self._read_log(self._proc), name="shairport-log")
        try:
            await self._wait_ready(self._proc)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        exited = asyncio.ensure_future(proc.wait())
        try:
            async with asyncio.timeout(self.start_timeout):
                while not await self._listening():
                    done, _ = await asyncio.wait([exited], timeout=READY_POLL_S)
                    if done:
                        break
                else:
                    await asyncio.wait([exited], timeout=SETTLE_S)
            if exited.done():
                await self._log_read()
                raise ShairportError(self.reason())
        except TimeoutError:
            raise ShairportError(
                f"shairport-sync did not open port {self.port} within {self.start_timeout:g} s"
            ) from None
        finally:
            if not exited.done():
                exited.cancel()

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self.lines.append(line)
                log.info("shairport-sync: %s", line)

    def reason(self) -> str:
        """Why it stopped, from its own last words (its fatal error first)."""
        rc = self._proc.returncode if self._proc is not None else None
        fatal = [line for line in self.lines if "fatal" in line.lower()]
        said = fatal[-1] if fatal else (self.lines[-1] if self.lines else "")
        code = f"exit code {rc}" if rc is not None and rc >= 0 else f"signal {-rc}" if rc else "stopped"
        return f"shairport-sync {code}" + (f": {said}" if said else "")

    async def _log_read(self) -> None:
        """Its last words read (they explain an exit), or given up on after a second."""
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._drain), 1.0)

    async def wait(self) -> int:
        """Until it exits (its log read to the end); its exit code."""
        assert self._proc is not None
        rc = await self._proc.wait()
        await self._log_read()
        return rc

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
            self._drain = None
        self._proc = proc  # keeps its return code for `reason`


@dataclass
class SystemdUnit:
    """shairport-sync as its systemd unit (systemd/shairport-sync.service.j2): restarted, never spawned."""

    unit: str = "shairport-sync.service"
    systemctl: str = "systemctl"
    timeout: float = 20.0

    async def _run(self, *args: str) -> tuple[int, str]:
        path = shutil.which(self.systemctl)
        if path is None:
            raise ShairportError("systemctl is not there: this node does not run under systemd")
        try:
            proc = await asyncio.create_subprocess_exec(
                path, *args, self.unit, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            async with asyncio.timeout(self.timeout):
                out, _ = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise ShairportError(f"systemctl {' '.join(args)} {self.unit}: {exc}") from None
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def restart(self) -> None:
        rc, out = await self._run("restart")
        if rc != 0:
            raise ShairportError(f"systemctl restart {self.unit} failed: {out or rc}")

    async def active(self) -> bool:
        rc, _ = await self._run("is-active", "--quiet")
        return rc == 0


# Remote control (DACP) -------------------------------------------------------------------------------

# What the player's transports are called in DACP.
DACP_COMMANDS: dict[str, str] = {
    "play": "play",
    "pause": "pause",
    "toggle": "playpause",
    "next": "nextitem",
    "previous": "previtem",
    "stop": "stop",
}


@dataclass(frozen=True)
class Dacp:
    """The sender's remote-control server: its address (the one that connected), port and token."""

    address: str
    port: int
    active_remote: str

    async def send(self, command: str, timeout: float = 2.0) -> None:
        """GET /ctrl-int/1/<command> with the sender's Active-Remote token; ShairportError if refused."""
        verb = DACP_COMMANDS.get(command, command)
        host = f"[{self.address.split('%', 1)[0]}]" if ":" in self.address else self.address
        url = f"http://{host}:{self.port}/ctrl-int/1/{verb}"
        try:
            response = await http_request(
                "GET",
                url,
                headers={"Active-Remote": self.active_remote},
                timeout=timeout,
                max_bytes=64 * 1024,
                connect_address=self.address,
            )
        except HttpClientError as exc:
            raise ShairportError(f"the sender's remote control did not answer: {exc}") from None
        if not 200 <= response.status < 300:
            raise ShairportError(f"the sender refused {verb}: HTTP {response.status} {response.reason}")
