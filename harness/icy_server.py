"""A local ICY (SHOUTcast-style) HTTP radio server looping an MP3 at its real bitrate, with failure modes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

from harness.audio import tone, write_wav

TONE_HZ = 440.0
BITRATE = 128_000  # bits/s; at 48 kHz every 1152-sample MP3 frame is exactly 384 bytes, so no padding
METAINT = 8192
STREAM, MISSING, PAGE = "/stream", "/missing", "/page"
_TICK = 0.05  # seconds per paced write: small enough that the pace looks steady to mpv's cache
_BURST = 1.0  # seconds of audio sent at once, as real servers do, so players start quickly


def make_mp3(directory: Path, seconds: float = 6.0) -> Path:
    """A constant-bitrate MP3 of a tone, without a Xing/Info frame (it would be mid-stream when looped)."""
    wav, mp3 = directory / "tone.wav", directory / "tone.mp3"
    write_wav(wav, tone(TONE_HZ, seconds, dbfs=-12), 48000)
    subprocess.run(
        ["lame", "--quiet", "-t", "--cbr", "-b", str(BITRATE // 1000), str(wav), str(mp3)],
        check=True,
        timeout=30,
    )
    return mp3


class IcyServer:
    """Serves `STREAM` (paced MP3, ICY titles), `MISSING` (404), `PAGE` (HTML); counts stream connections.

    `redirects` maps a path to the Location it answers 302 with; HEAD is answered with the headers
    alone (a stream is neither started nor counted), or with 405 when `head_allowed` is False, as
    some SHOUTcast servers do.
    """

    def __init__(self, mp3: Path, title: str = "Artist One - Song A") -> None:
        self.audio = mp3.read_bytes()
        self.title = title
        self.connections = 0
        self.sent = 0  # audio bytes over all stream connections
        # Stream connections end after this many audio bytes while `drops_left` is not 0 (None: forever).
        self.drop_after: int | None = None
        self.drops_left: int | None = None
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()
        self.redirects: dict[str, str] = {}
        self.head_allowed = True
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = STREAM) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> IcyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

    def drop(self, after_bytes: int, times: int | None = None) -> None:
        """Close the next `times` stream connections (None: all) after `after_bytes` of audio."""
        self.drop_after, self.drops_left = after_bytes, times

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.connections >= n)

    async def wait_sent(self, n: int, timeout: float = 5.0) -> None:
        """Until `n` audio bytes have gone out in total: the paced clock of whoever plays the stream."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.sent >= n)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            self.requests.append((method, path))
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            if path in self.redirects:
                location = self.redirects[path]
                writer.write(
                    f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
                )
            elif method == "HEAD" and not self.head_allowed:
                writer.write(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            elif method == "HEAD" and path == STREAM:
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n")
            elif path == STREAM:
                await self._stream(writer, icy=headers.get("icy-metadata") == "1")
            elif path == PAGE:
                body = b"<!doctype html><html><body><h1>Not a radio</h1></body></html>\n" * 20
                writer.write(
                    b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            else:
                writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such mount\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _stream(self, writer: asyncio.StreamWriter, *, icy: bool) -> None:
        async with self._changed:
            self.connections += 1
            self._changed.notify_all()
        limit = None
        if self.drop_after is not None and self.drops_left != 0:
            limit = self.drop_after
            if self.drops_left is not None:
                self.drops_left -= 1
        header = "HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n"
        header += f"icy-name: Milo Test Radio\r\nicy-genre: test\r\nicy-br: {BITRATE // 1000}\r\n"
        if icy:
            header += f"icy-metaint: {METAINT}\r\n"
        writer.write((header + "\r\n").encode())
        loop = asyncio.get_running_loop()
        per_tick = int(BITRATE / 8 * _TICK)
        sent, offset, since_meta = 0, 0, 0
        start = loop.time()
        while limit is None or sent < limit:
            # Paced against the clock, not per write: the stream neither drifts nor bursts after a stall.
            due = int(BITRATE / 8 * (_BURST + loop.time() - start)) - sent
            if due < per_tick:
                await asyncio.sleep(_TICK)
                continue
            if limit is not None:
                due = min(due, limit - sent)
            chunk = b""
            while len(chunk) < due:
                take = min(due - len(chunk), len(self.audio) - offset)
                chunk += self.audio[offset : offset + take]
                offset = (offset + take) % len(self.audio)
            sent += len(chunk)
            writer.write(self._with_metadata(chunk, since_meta) if icy else chunk)
            since_meta = (since_meta + len(chunk)) % METAINT
            await writer.drain()
            async with self._changed:
                self.sent += len(chunk)
                self._changed.notify_all()

    def _with_metadata(self, chunk: bytes, since_meta: int) -> bytes:
        """Interleave a metadata block after every `METAINT` audio bytes."""
        out = bytearray()
        while chunk:
            take = min(len(chunk), METAINT - since_meta)
            out += chunk[:take]
            chunk = chunk[take:]
            since_meta += take
            if since_meta == METAINT:
                text = f"StreamTitle='{self.title}';".encode()
                blocks = -(-len(text) // 16)
                out += bytes([blocks]) + text.ljust(blocks * 16, b"\0")
                since_meta = 0
        return bytes(out)
