"""AirPlay without a phone: a sender for the real shairport-sync, its pipe's writer, and a stand-in daemon."""

# - RaopSender: the control side of an AirPlay 1 sender (RTSP: ANNOUNCE, SETUP, RECORD, metadata,
#   cover, progress, FLUSH, TEARDOWN) with the headers a phone sends, so the real shairport-sync
#   writes its real metadata items. It sends no audio: what only audio causes (`prsm`) comes from
#   PipeWriter.
# - DacpServer: the sender's remote-control HTTP server; publish_dacp announces it through Avahi.
# - PipeWriter: writes items into the metadata FIFO exactly as shairport-sync 3.3.8 does.
# - private_mdns: a private D-Bus system bus and an Avahi daemon on loopback, which shairport-sync
#   needs to start at all, touching neither the machine's bus nor its Avahi.
# - `python -m harness.shairport`: a stand-in daemon for machines where the real one cannot run: it
#   answers -V, reads -c, opens the RTSP port and creates the FIFO, and does nothing else.

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

VERSION = (  # what the Debian 12 package prints for -V
    "3.3.8-libdaemon-OpenSSL-Avahi-ALSA-jack-pa-dummy-stdout-pipe-soxr-convolution-metadata-mqtt-dbus-mpris"
    "-sysconfdir:/etc"
)
DACP_ID = "14413BE4996FEA4D"
ACTIVE_REMOTE = "2543110914"
START_TIMEOUT = 10.0


# The metadata pipe --------------------------------------------------------------------------------


def encode_item(kind: str, code: str, data: bytes = b"") -> bytes:
    """One item as rtsp.c's metadata_process writes it (base64 in 76-character pieces, no line breaks)."""
    kind_hex, code_hex = kind.encode().hex(), code.encode().hex()
    head = f"<item><type>{kind_hex}</type><code>{code_hex}</code><length>{len(data)}</length>"
    if not data:
        return (head + "</item>\n").encode()
    encoded = b"".join(base64.b64encode(data[i : i + 57]) for i in range(0, len(data), 57))
    return head.encode() + b'\n<data encoding="base64">\n' + encoded + b"</data></item>\n"


class PipeWriter:
    """Writes items into the FIFO a reader (the node) holds open; a second writer beside shairport-sync."""

    def __init__(self, path: Path) -> None:
        # O_NONBLOCK, as shairport-sync opens it: fails at once (ENXIO) while nobody reads.
        self.fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(self.fd, True)  # whole items: the node reads as fast as this writes

    def item(self, kind: str, code: str, data: bytes | str = b"") -> None:
        self.raw(encode_item(kind, code, data.encode() if isinstance(data, str) else data))

    def raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def ssnc(self, code: str, data: bytes | str = b"") -> None:
        self.item("ssnc", code, data)

    def session(self, sender: str = "Test iPhone", address: str = "127.0.0.1") -> None:
        """What ANNOUNCE, SETUP and RECORD make shairport-sync say."""
        self.ssnc("snam", sender)
        self.ssnc("snua", "AirPlay/381.13")
        self.ssnc("acre", ACTIVE_REMOTE)
        self.ssnc("daid", DACP_ID)
        self.ssnc("clip", address)
        self.ssnc("pbeg")
        self.ssnc("pfls", "0")

    def track(self, title: str, artist: str, album: str, rtptime: str = "1000") -> None:
        self.ssnc("mdst", rtptime)
        self.item("core", "minm", title)
        self.item("core", "asar", artist)
        self.item("core", "asal", album)
        self.ssnc("mden", rtptime)

    def cover(self, image: bytes, rtptime: str = "1000") -> None:
        self.ssnc("pcst", rtptime)
        self.ssnc("PICT", image)
        self.ssnc("pcen", rtptime)

    def close(self) -> None:
        os.close(self.fd)


# The sender ----------------------------------------------------------------------------------------


def dmap(code: str, value: bytes) -> bytes:
    return code.encode() + struct.pack(">I", len(value)) + value


@dataclass
class RaopSender:
    """The RTSP half of an AirPlay 1 sender, talking to a real shairport-sync on 127.0.0.1."""

    port: int
    name: str = "Test iPhone"
    dacp_id: str = DACP_ID
    active_remote: str = ACTIVE_REMOTE
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _cseq: int = 0
    _udp: list[socket.socket] = field(default_factory=list)
    url: str = "rtsp://127.0.0.1/3413821438"

    async def request(
        self, method: str, uri: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> str:
        """One request; the answer's status line (e.g. `RTSP/1.0 200 OK`)."""
        assert self._reader is not None and self._writer is not None
        self._cseq += 1
        head = {
            "CSeq": str(self._cseq),
            "User-Agent": "AirPlay/381.13",
            "DACP-ID": self.dacp_id,
            "Active-Remote": self.active_remote,
            "Client-Instance": self.dacp_id,
            **(headers or {}),
        }
        if body:
            head["Content-Length"] = str(len(body))
        text = f"{method} {uri} RTSP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
        self._writer.write(text.encode() + body)
        await self._writer.drain()
        async with asyncio.timeout(START_TIMEOUT):
            answer = await self._reader.readuntil(b"\r\n\r\n")
        lines = answer.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (x.partition(": ") for x in lines) if k == "Content-Length"), 0)
        if length:
            await self._reader.readexactly(length)
        return lines[0]

    async def connect(self) -> None:
        """ANNOUNCE, SETUP and RECORD: the sender picked this speaker and pressed play."""
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        sdp = (
            b"v=0\r\no=iTunes 3413821438 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\n"
            b"a=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\n"
        )
        await self.expect_ok("OPTIONS", "*")
        await self.expect_ok(
            "ANNOUNCE", self.url, {"Content-Type": "application/sdp", "X-Apple-Client-Name": self.name}, sdp
        )
        for _ in range(2):  # its control and timing ports: nothing is ever sent back on them
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            self._udp.append(udp)
        control, timing = (u.getsockname()[1] for u in self._udp)
        transport = (
            f"RTP/AVP/UDP;unicast;interleaved=0-1;mode=record;control_port={control};timing_port={timing}"
        )
        await self.expect_ok("SETUP", f"{self.url}/audio", {"Transport": transport})
        await self.expect_ok(
            "RECORD", self.url, {"Range": "npt=0-", "RTP-Info": "seq=1;rtptime=0", "Session": "1"}
        )

    async def expect_ok(
        self, method: str, uri: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        status = await self.request(method, uri, headers, body)
        if " 200 " not in f"{status} ":
            raise AssertionError(f"{method}: {status}")

    async def metadata(
        self, title: str, artist: str, album: str, duration_ms: int, rtptime: int = 1000
    ) -> None:
        items = dmap("minm", title.encode()) + dmap("asar", artist.encode()) + dmap("asal", album.encode())
        items += dmap("astm", struct.pack(">I", duration_ms))
        await self.expect_ok(
            "SET_PARAMETER",
            self.url,
            {"Content-Type": "application/x-dmap-tagged", "RTP-Info": f"rtptime={rtptime}"},
            dmap("mlit", items),
        )

    async def cover(self, image: bytes, rtptime: int = 1000) -> None:
        headers = {"Content-Type": "image/jpeg", "RTP-Info": f"rtptime={rtptime}"}
        await self.expect_ok("SET_PARAMETER", self.url, headers, image)

    async def progress(self, start: int, current: int, end: int) -> None:
        body = f"progress: {start}/{current}/{end}\r\n".encode()
        await self.expect_ok("SET_PARAMETER", self.url, {"Content-Type": "text/parameters"}, body)

    async def volume(self, db: float) -> None:
        body = f"volume: {db:.6f}\r\n".encode()
        await self.expect_ok("SET_PARAMETER", self.url, {"Content-Type": "text/parameters"}, body)

    async def flush(self) -> None:
        """What a phone sends when its user pauses (or skips, or seeks)."""
        await self.expect_ok("FLUSH", self.url, {"RTP-Info": "seq=2;rtptime=2000", "Session": "1"})

    async def teardown(self) -> None:
        await self.expect_ok("TEARDOWN", self.url, {"Session": "1"})
        await self.close()

    async def close(self) -> None:
        for udp in self._udp:
            udp.close()
        self._udp.clear()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


class DacpServer:
    """The sender's remote control: answers `GET /ctrl-int/1/<command>` (204) and records what it got."""

    def __init__(self, active_remote: str = ACTIVE_REMOTE) -> None:
        self.active_remote = active_remote
        self.commands: list[str] = []
        self.refused = 0  # requests with a wrong token (403, as a phone answers)
        self.arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request, *lines = head.split("\r\n")
            headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines) if k}
            match = re.fullmatch(r"GET /ctrl-int/1/(\S+) HTTP/1\.1", request)
            if match is None:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            elif headers.get("active-remote") != self.active_remote:
                self.refused += 1
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\nDAAP-Server: iTunes/12.0\r\n\r\n")
                async with self.arrived:
                    self.commands.append(match.group(1))
                    self.arrived.notify_all()
            await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    async def wait_for(self, *commands: str, timeout: float = 5.0) -> None:
        """Until `commands` arrived in this order (among others)."""

        def seen() -> bool:
            it = iter(self.commands)
            return all(c in it for c in commands)

        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(seen)


# mDNS ------------------------------------------------------------------------------------------------

_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
_AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[publish]
publish-hinfo=no
publish-workstation=no
"""


def _wait_line(proc: subprocess.Popen[str], wanted: str, what: str) -> None:
    """Until `proc` prints `wanted`; its output is read (and dropped) by a thread from then on."""
    lines: queue.Queue[str | None] = queue.Queue()
    stream = proc.stdout
    assert stream is not None

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if wanted in line:
            return
    raise RuntimeError(f"{what} did not start: {''.join(seen[-10:])}")


def mdns_missing() -> str | None:
    """Why `private_mdns` cannot run here, or None."""
    for program in ("dbus-daemon", "avahi-daemon", "avahi-publish"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    return None


@contextlib.contextmanager
def private_mdns(folder: Path) -> Iterator[dict[str, str]]:
    """A private system bus with Avahi on loopback; yields the environment that points programs at it.

    Avahi keeps its pid file and socket in /run/avahi-daemon: as root it gets a private mount of
    that folder (a mount namespace), so it runs beside the machine's own Avahi or another test's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "bus.sock"
    (folder / "bus.conf").write_text(_BUS_CONF.format(socket=sock))
    (folder / "avahi.conf").write_text(_AVAHI_CONF)
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sock}"}
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={folder / 'bus.conf'}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    avahi: subprocess.Popen[str] | None = None
    try:
        _wait_line(bus, "unix:", "dbus-daemon")
        avahi_cmd = [
            "avahi-daemon",
            "-f",
            str(folder / "avahi.conf"),
            "--no-drop-root",
            "--no-chroot",
            "--no-rlimits",
        ]
        if os.geteuid() == 0 and shutil.which("unshare"):
            run = folder / "avahi-run"
            run.mkdir(exist_ok=True)
            script = f'mkdir -p /run/avahi-daemon && mount --bind "{run}" /run/avahi-daemon && exec "$@"'
            avahi_cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                *avahi_cmd,
            ]
        avahi = subprocess.Popen(
            avahi_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        _wait_line(avahi, "Server startup complete", "avahi-daemon")
        yield {"DBUS_SYSTEM_BUS_ADDRESS": env["DBUS_SYSTEM_BUS_ADDRESS"]}
    finally:
        for daemon in (avahi, bus):
            if daemon is not None and daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(5)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(5)
            if daemon is not None and daemon.stdout is not None:
                daemon.stdout.close()


@contextlib.asynccontextmanager
async def publish_dacp(dacp_id: str, port: int, env: dict[str, str]) -> AsyncIterator[None]:
    """Announce a sender's remote control (`iTunes_Ctrl_<DACP-ID>`, `_dacp._tcp`) as a phone does."""
    proc = await asyncio.create_subprocess_exec(
        "avahi-publish",
        "-s",
        f"iTunes_Ctrl_{dacp_id}",
        "_dacp._tcp",
        str(port),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while b"Established" not in await proc.stdout.readline():
                if proc.returncode is not None:
                    raise RuntimeError("avahi-publish failed")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


# The stand-in daemon -------------------------------------------------------------------------------


def fake_program(folder: Path) -> Path:
    """An executable that runs the stand-in daemon with this interpreter (a `program` for the source)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake-shairport-sync"
    root = Path(__file__).resolve().parents[1]
    path.write_text(f'#!/bin/sh\ncd "{root}" && exec "{sys.executable}" -m harness.shairport "$@"\n')
    path.chmod(0o755)
    return path


def _setting(text: str, key: str) -> str | None:
    match = re.search(rf"\b{key}\s*=\s*(\"((?:[^\"\\]|\\.)*)\"|\d+)\s*;", text)
    if match is None:
        return None
    return match.group(2) if match.group(2) is not None else match.group(1)


def _stand_in(argv: list[str]) -> int:
    if "-V" in argv:
        print(VERSION)
        return 0
    conf = Path(argv[argv.index("-c") + 1]).read_text()
    port = int(_setting(conf, "port") or 5000)
    pipe = Path(_setting(conf, "pipe_name") or "/tmp/shairport-sync-metadata")
    with contextlib.suppress(FileExistsError):
        os.mkfifo(pipe, 0o666)
    server = socket.create_server(("127.0.0.1", port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"stand-in shairport-sync on port {port}, pipe {pipe}", file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        conn.close()


if __name__ == "__main__":
    sys.exit(_stand_in(sys.argv[1:]))
