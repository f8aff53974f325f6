"""A fake roc-recv: roc-toolkit 0.4's command line, real UDP on its endpoints, the audio into its PCM."""

# `python -m harness.roc_recv -s rtp+rs8m://127.0.0.1:P -r rs8m://... -c rtcp://... -o alsa://PCM` binds
# the three endpoints as roc-recv does (exit status 1 and a message when it cannot), takes RTP packets of
# L16 stereo 44.1 kHz (payload type 10 of RFC 3551) on the source endpoint and writes their samples
# into the ALSA PCM (or a `file:` path), answers RTCP on the control endpoint with a receiver report, and
# counts repair packets. The audio it writes is capped (MAX_SECONDS, MAX_BYTES): it never fills a disk.
#
# With FAKE_ROC_LOG=<file> it appends JSON lines a test reads: `start` (pid, argv, output), `first_audio`
# and, at exit, `stop` with the first and last audio times (time.monotonic_ns, shared by every process
# of the machine), the first and last RTP sequence numbers written, and the packet counts.

from __future__ import annotations

import argparse
import array
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

RATE = 44100
CHANNELS = 2
FRAME = 4  # bytes: S16, stereo
RTP_HEADER = 12
MAX_SECONDS = 60.0  # of audio written, at most
MAX_BYTES = int(MAX_SECONDS * RATE * FRAME)
MAX_WALL_S = 300.0  # after this long running, nothing more is written whatever arrives
_ENDPOINT = re.compile(r"(?P<proto>[a-z0-9+]+)://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d{1,5})")
SOURCE_PROTOS = {"rtp", "rtp+rs8m", "rtp+ldpc"}
REPAIR_PROTOS = {"rs8m", "ldpc"}
CONTROL_PROTOS = {"rtcp"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """roc-recv's options (revision 544f20e): unknown ones are refused as gengetopt refuses them."""
    p = argparse.ArgumentParser(prog="roc-recv", add_help=True)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-s", "--source", action="append", default=[])
    p.add_argument("-r", "--repair", action="append", default=[])
    p.add_argument("-c", "--control", action="append", default=[])
    p.add_argument("-o", "--output")
    p.add_argument("--backup")
    p.add_argument("--io-encoding")
    p.add_argument("--io-latency")
    p.add_argument("--io-frame-len")
    p.add_argument("--miface", action="append", default=[])
    p.add_argument("--reuseaddr", action="store_true")
    for option in (
        "--target-latency", "--latency-tolerance", "--start-latency", "--min-latency", "--max-latency",
        "--latency-profile", "--no-play-timeout", "--choppy-play-timeout", "--dump", "--resampler-backend",
        "--resampler-profile", "--sess-latency",
    ):  # fmt: skip
        p.add_argument(option)
    p.add_argument("-1", "--oneshot", action="store_true")
    p.add_argument("--profiling", action="store_true")
    p.add_argument("--color")
    args = p.parse_args(argv)
    if not args.source:
        p.error("at least one --source endpoint should be specified")
    return args


def endpoint(uri: str, allowed: set[str], kind: str) -> tuple[str, int]:
    match = _ENDPOINT.fullmatch(uri)
    if match is None or match["proto"] not in allowed:
        raise SystemExit(f"roc-recv: invalid --{kind} endpoint: {uri}")
    return match["host"].strip("[]"), int(match["port"])


class Output:
    """Where the samples go: an ALSA PCM (`alsa://name`), a WAV (`file:x.wav`), or raw S16LE elsewhere."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri or "alsa://default"
        self.written = 0
        self.opened = time.monotonic()
        self._pcm: Any = None
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        if self.uri.startswith("alsa://"):
            import alsaaudio  # noqa: PLC0415 - the fake needs it only for an ALSA output

            device = self.uri.removeprefix("alsa://") or "default"
            try:
                self._pcm = alsaaudio.PCM(
                    type=alsaaudio.PCM_PLAYBACK,
                    device=device,
                    rate=RATE,
                    channels=CHANNELS,
                    format=alsaaudio.PCM_FORMAT_S16_LE,
                    periodsize=441,
                )
            except alsaaudio.ALSAAudioError as exc:
                raise SystemExit(f"roc-recv: can't open output device {device}: {exc}") from None
        elif self.uri.startswith("file:"):
            path = self.uri.removeprefix("file:")
            if path.endswith(".wav"):
                self._wav = wave.open(path, "wb")  # noqa: SIM115 - closed in close()
                self._wav.setnchannels(CHANNELS)
                self._wav.setsampwidth(2)
                self._wav.setframerate(RATE)
            else:
                self._file = Path(path).open("wb")  # noqa: SIM115 - closed in close()
        else:
            raise SystemExit(f"roc-recv: unsupported output: {self.uri}")

    def write(self, samples: bytes) -> bool:
        """Write S16LE frames; False once a cap is reached (nothing more is written)."""
        if self.written + len(samples) > MAX_BYTES or time.monotonic() - self.opened > MAX_WALL_S:
            return False
        self.written += len(samples)
        if self._pcm is not None:
            self._pcm.write(samples)
        elif self._wav is not None:
            self._wav.writeframes(samples)
        elif self._file is not None:
            self._file.write(samples)
        return True

    def close(self) -> None:
        if self._pcm is not None:
            with contextlib.suppress(Exception):
                self._pcm.close()
        if self._wav is not None:
            self._wav.close()
        if self._file is not None:
            self._file.close()


class Log:
    def __init__(self, path: str | None) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        if self.path:
            line = json.dumps({"event": event, "pid": os.getpid(), "t": time.monotonic_ns(), **fields})
            with Path(self.path).open("a") as f:
                f.write(line + "\n")


def receiver_report(ssrc: int) -> bytes:
    """RTCP RR (PT 201) with no report blocks, from a made-up receiver SSRC about `ssrc`."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc ^ 0x5A5A5A5A)


def bind(host: str, port: int, reuse: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as exc:
        s.close()
        raise SystemExit(f"roc-recv: can't bind endpoint {host}:{port}: {exc}") from None
    s.setblocking(False)
    return s


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    stop = [False]

    def handler(signum: int, frame: Any) -> None:
        stop[0] = True

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log(os.environ.get("FAKE_ROC_LOG"))
    sockets: dict[str, list[socket.socket]] = {"source": [], "repair": [], "control": []}
    for kind, uris, allowed in (
        ("source", args.source, SOURCE_PROTOS),
        ("repair", args.repair, REPAIR_PROTOS),
        ("control", args.control, CONTROL_PROTOS),
    ):
        for uri in uris:
            sockets[kind].append(bind(*endpoint(uri, allowed, kind), reuse=args.reuseaddr))
    output = Output(args.output)
    log.write("start", argv=sys.argv[1:] if argv is None else argv, output=output.uri)
    stats: dict[str, Any] = {"source": 0, "repair": 0, "control": 0, "first_audio": None, "last_audio": None}
    stats.update(first_seq=None, last_seq=None, capped=False)
    selector = selectors.DefaultSelector()
    for kind, socks in sockets.items():
        for s in socks:
            selector.register(s, selectors.EVENT_READ, kind)
    try:
        with stop_on_signals() as stop:
            while not stop[0]:
                for key, _ in selector.select(timeout=0.2):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    what: str = key.data
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        data, peer = sock.recvfrom(65535)
                        stats[what] += 1
                        if what == "source":
                            play(data, output, stats, log)
                        elif what == "control" and len(data) >= 8:
                            ssrc = struct.unpack_from("!I", data, 4)[0]
                            sock.sendto(receiver_report(ssrc), peer)
    finally:
        output.close()
        log.write("stop", **stats, written=output.written)


def play(packet: bytes, output: Output, stats: dict[str, Any], log: Log) -> None:
    if len(packet) <= RTP_HEADER or packet[0] >> 6 != 2 or packet[1] & 0x7F != 10:
        return
    seq = struct.unpack_from("!H", packet, 2)[0]
    payload = packet[RTP_HEADER:]
    payload = payload[: len(payload) - len(payload) % FRAME]  # an FEC footer, if any, is not audio
    samples = array.array("h", payload)
    samples.byteswap()  # network order (L16 is big-endian) -> S16LE
    if not output.write(samples.tobytes()):
        stats["capped"] = True
        return
    now = time.monotonic_ns()
    if stats["first_audio"] is None:
        stats["first_audio"], stats["first_seq"] = now, seq
        log.write("first_audio", seq=seq)
    stats["last_audio"], stats["last_seq"] = now, seq


def install(directory: Path) -> Path:
    """An executable `roc-recv` in `directory` that runs this fake with the command line it is given."""
    root = Path(__file__).resolve().parent.parent
    path = directory / "roc-recv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} -m harness.roc_recv "$@"\n')
    path.chmod(0o755)
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
