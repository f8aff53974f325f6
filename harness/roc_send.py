"""A ROC sender for tests: paced RTP L16 packets of a tone, repair packets and RTCP, as roc-vad sends them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import struct
import time

RATE = 44100
PAYLOAD_TYPE = 10  # L16 stereo 44.1 kHz (RFC 3551), what the fake roc-recv plays
REPAIR_EVERY = 5  # one repair packet per this many source packets (RS8M's ratio is about that)
RTCP_EVERY_S = 1.0


def tone_payload(freq: float, start: int, frames: int, dbfs: float = -20.0) -> bytes:
    amplitude = 10 ** (dbfs / 20) * 32767
    out = bytearray()
    for i in range(start, start + frames):
        value = int(amplitude * math.sin(2 * math.pi * freq * i / RATE))
        out += struct.pack("!hh", value, value)  # network order, both channels
    return bytes(out)


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.count += 1


class RocSender:
    """Streams to (host, source, repair, control) from one local UDP socket until stopped."""

    def __init__(
        self,
        host: str,
        ports: tuple[int, int, int],
        *,
        freq: float = 400.0,  # a whole number of periods per 10 ms packet: one payload, sent again and again
        packet_ms: int = 10,
        local: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.host = host
        self.ports = ports
        self.freq = freq
        self.frames = RATE * packet_ms // 1000
        self.interval = packet_ms / 1000
        self.local = local
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.seq = 0
        self.sent = 0
        self._replies = _Replies()
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._payloads: list[bytes] = []

    @property
    def replies(self) -> int:
        """RTCP answers that came back (through the node's relay, when there is one)."""
        return self._replies.count

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self) -> RocSender:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self._replies, local_addr=self.local)
        periods = self.freq * self.frames / RATE
        if periods != int(periods):
            raise ValueError(f"{self.freq} Hz is not a whole number of periods in a packet")
        self._payloads = [tone_payload(self.freq, 0, self.frames)]
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()

    async def _run(self) -> None:
        assert self._transport is not None
        source, repair, control = self.ports
        start = time.monotonic()
        last_rtcp = -RTCP_EVERY_S
        while True:
            payload = self._payloads[self.seq % len(self._payloads)]
            header = struct.pack(
                "!BBHII",
                0x80,
                PAYLOAD_TYPE,
                self.seq & 0xFFFF,
                (self.seq * self.frames) & 0xFFFFFFFF,
                self.ssrc,
            )
            self._transport.sendto(header + payload, (self.host, source))
            if self.seq % REPAIR_EVERY == REPAIR_EVERY - 1:
                self._transport.sendto(os.urandom(len(payload) // 2), (self.host, repair))
            elapsed = time.monotonic() - start
            if elapsed - last_rtcp >= RTCP_EVERY_S:
                last_rtcp = elapsed
                report = struct.pack("!BBHIQII", 0x80, 200, 6, self.ssrc, 0, self.seq * self.frames, self.seq)
                self._transport.sendto(report + struct.pack("!I", self.sent), (self.host, control))
            self.seq += 1
            self.sent += 1
            # Paced on the clock, not on the sleeps: a late wake-up does not slow the stream down.
            await asyncio.sleep(max(0.0, start + self.seq * self.interval - time.monotonic()))
