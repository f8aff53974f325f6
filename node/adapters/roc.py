"""roc-recv: its command line, the node's UDP relay ahead of it (who streams, handovers), senders' names."""

# roc-recv tells nothing about its senders but in -vvv logs (shared/reference/roc.md): its --dump CSV says
# that something is received, not from whom. So the node owns the public ports itself and relays each
# datagram to roc-recv on loopback, one upstream socket per sender (roc-recv still sees one peer per
# sender, and its RTCP answers find their way back). That relay is also what makes a routing move cheap:
# a second roc-recv on the new PCM is started, the stream is switched to it between two packets, and
# the old one plays out its buffer before it is stopped.

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RocPorts",
    "RocRelay",
    "Sender",
    "free_udp_ports",
    "mdns_name",
    "recv_argv",
    "sender_name",
    "udp_bound",
    "wait_bound",
]

logger = logging.getLogger(__name__)

ENDPOINTS = ("source", "repair", "control")
MAX_DATAGRAM = 65535
# Datagrams of a new sender that arrive while its upstream socket is being opened (a few ms).
EARLY_PACKETS = 64
# A sender that was quiet this long has its upstream socket closed (it is a new peer when it comes back).
FORGET_AFTER = 60.0


@dataclass(frozen=True)
class RocPorts:
    source: int
    repair: int
    control: int

    def of(self, endpoint: str) -> int:
        port: int = getattr(self, endpoint)
        return port

    def endpoint_of(self, port: int) -> str | None:
        return next((e for e in ENDPOINTS if self.of(e) == port), None)


def recv_argv(
    binary: str, ports: RocPorts, pcm: str, *, host: str = "127.0.0.1", extra: Sequence[str] = ()
) -> list[str]:
    """The roc-recv command line (roc-toolkit 0.4, reference revision 544f20e) for one output PCM."""
    return [
        binary,
        "-s",
        f"rtp+rs8m://{host}:{ports.source}",
        "-r",
        f"rs8m://{host}:{ports.repair}",
        "-c",
        f"rtcp://{host}:{ports.control}",
        "-o",
        f"alsa://{pcm}",
        *extra,
    ]


def free_udp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` UDP ports nothing is bound to on `host` now (a program started next binds them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def udp_bound(ports: Sequence[int], proc: Path = Path("/proc/net")) -> bool:
    """Whether some socket is bound to each of these UDP ports (what a started roc-recv does first)."""
    bound: set[int] = set()
    for name in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in (proc / name).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 1 and ":" in fields[1]:
                    bound.add(int(fields[1].rsplit(":", 1)[1], 16))
    return all(p in bound for p in ports)


async def wait_bound(ports: Sequence[int], timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Until `ports` are bound (True), the timeout, or `alive()` is False (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if udp_bound(ports):
            return True
        await asyncio.sleep(0.01)  # a process start: nothing to be told by, so looked at briefly
    return udp_bound(ports)


# The relay -----------------------------------------------------------------------------------------------
@dataclass
class Sender:
    """One peer (address, port) streaming to the public ports."""

    address: str
    port: int
    first_seen: float  # time.time()
    last_seen: float  # time.monotonic()
    packets: int = 0
    octets: int = 0
    upstream: asyncio.DatagramTransport | None = None
    early: list[tuple[str, bytes]] = field(default_factory=list)
    opening: bool = False


class _Public(asyncio.DatagramProtocol):
    def __init__(self, relay: RocRelay, endpoint: str) -> None:
        self.relay = relay
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay._from_sender(self.endpoint, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("roc relay: %s socket: %s", self.endpoint, exc)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: RocRelay, sender: Sender) -> None:
        self.relay = relay
        self.sender = sender

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay._from_receiver(self.sender, data, int(addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ECONNREFUSED after a datagram to a port roc-recv does not (yet) listen on: nothing to do.
        logger.debug("roc relay: upstream of %s: %s", self.sender.address, exc)


class RocRelay:
    """The public ROC ports, relayed to whichever roc-recv `target` names.

    `streaming()` lists the senders heard from within `timeout` seconds; `on_change` is called when that
    list changes (a sender starts, or goes quiet). While `forwarding` is False the packets are dropped
    (the source's `pause`): roc-recv then plays silence, and the sender keeps streaming.
    """

    def __init__(
        self,
        bind: str,
        public: RocPorts,
        *,
        timeout: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.bind = bind
        self.public = public
        self.timeout = timeout
        self.on_change = on_change
        self.target: RocPorts | None = None
        self.forwarding = True
        self.senders: dict[tuple[str, int], Sender] = {}
        self.relayed = 0  # datagrams sent on to roc-recv
        self.dropped = 0  # datagrams with nowhere to go (no receiver yet, or paused)
        self._public: dict[str, asyncio.DatagramTransport] = {}
        self._active: set[tuple[str, int]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind the public ports; OSError when one is taken."""
        self._loop = asyncio.get_running_loop()
        try:
            for endpoint in ENDPOINTS:
                transport, _ = await self._loop.create_datagram_endpoint(
                    lambda e=endpoint: _Public(self, e),  # type: ignore[misc]
                    local_addr=(self.bind, self.public.of(endpoint)),
                )
                self._public[endpoint] = transport
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in self._public.values():
            transport.close()
        self._public.clear()
        for sender in self.senders.values():
            if sender.upstream is not None:
                sender.upstream.close()
        self.senders.clear()
        self._active.clear()

    def streaming(self) -> list[Sender]:
        """The senders heard from within `timeout`, the longest streaming first."""
        now = time.monotonic()
        live = [s for s in self.senders.values() if now - s.last_seen <= self.timeout]
        return sorted(live, key=lambda s: s.first_seen)

    # Datagrams ------------------------------------------------------------------------------------
    def _from_sender(self, endpoint: str, data: bytes, peer: tuple[str, int]) -> None:
        now = time.monotonic()
        sender = self.senders.get(peer)
        if sender is None or now - sender.last_seen > self.timeout:
            if sender is None:
                sender = self.senders[peer] = Sender(peer[0], peer[1], first_seen=time.time(), last_seen=now)
            else:
                sender.first_seen = time.time()
        sender.last_seen = now
        sender.packets += 1
        sender.octets += len(data)
        if peer not in self._active:
            self._active.add(peer)
            self._arm()
            self.on_change()
        if not self.forwarding or self.target is None:
            self.dropped += 1
            return
        if sender.upstream is None:
            if len(sender.early) < EARLY_PACKETS:
                sender.early.append((endpoint, data))
            if not sender.opening:
                sender.opening = True
                assert self._loop is not None
                self._loop.create_task(self._open_upstream(sender))
            return
        sender.upstream.sendto(data, ("127.0.0.1", self.target.of(endpoint)))
        self.relayed += 1

    async def _open_upstream(self, sender: Sender) -> None:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Upstream(self, sender), local_addr=("127.0.0.1", 0)
            )
        except OSError as exc:
            logger.warning("roc relay: no upstream socket for %s: %s", sender.address, exc)
            sender.opening = False
            return
        if (sender.address, sender.port) not in self.senders:
            transport.close()  # closed meanwhile
            return
        sender.upstream, sender.opening = transport, False
        early, sender.early = sender.early, []
        for endpoint, data in early:
            if self.target is not None and self.forwarding:
                transport.sendto(data, ("127.0.0.1", self.target.of(endpoint)))
                self.relayed += 1

    def _from_receiver(self, sender: Sender, data: bytes, port: int) -> None:
        # roc-recv answers (RTCP) from one of its ports: back to the sender from the matching public one.
        endpoint = self.target.endpoint_of(port) if self.target is not None else None
        if endpoint is None:
            return  # an old receiver's last word after a handover
        public = self._public.get(endpoint)
        if public is not None:
            public.sendto(data, (sender.address, sender.port))

    # Who is streaming -----------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.timeout, self._sweep)

    def _sweep(self) -> None:
        """Once a timeout after the first packet, then as needed: who went quiet (a timer, not a poll)."""
        self._timer = None
        now = time.monotonic()
        quiet = {p for p in self._active if now - self.senders[p].last_seen > self.timeout}
        for peer, sender in list(self.senders.items()):
            if now - sender.last_seen > FORGET_AFTER:
                if sender.upstream is not None:
                    sender.upstream.close()
                del self.senders[peer]
        self._active -= quiet
        if self._active or any(s.upstream is not None for s in self.senders.values()):
            ends = (self.senders[p].last_seen + self.timeout for p in self._active)
            due = min(ends, default=now + FORGET_AFTER)
            assert self._loop is not None
            self._timer = self._loop.call_later(max(0.01, due - now + 0.001), self._sweep)
        if quiet:
            self.on_change()


# Names -----------------------------------------------------------------------------------------------
def _ptr_name(address: str) -> str:
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _read_name(packet: bytes, offset: int, depth: int = 0) -> tuple[str, int]:
    labels: list[str] = []
    while True:
        if offset >= len(packet) or depth > 10:
            raise ValueError("truncated name")
        length = packet[offset]
        if length & 0xC0 == 0xC0:  # a compression pointer
            pointer = struct.unpack_from("!H", packet, offset)[0] & 0x3FFF
            rest, _ = _read_name(packet, pointer, depth + 1)
            labels.append(rest)
            return ".".join(x for x in labels if x), offset + 2
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        labels.append(packet[offset : offset + length].decode(errors="replace"))
        offset += length


def ptr_answer(packet: bytes, query_id: int, name: str) -> str | None:
    """The PTR target for `name` in a DNS answer, None if it holds none."""
    if len(packet) < 12:
        return None
    ident, flags, qd, an = struct.unpack_from("!HHHH", packet)
    if flags & 0x8000 == 0 or ident not in (query_id, 0):
        return None
    offset = 12
    for _ in range(qd):
        _, offset = _read_name(packet, offset)
        offset += 4
    for _ in range(an):
        owner, offset = _read_name(packet, offset)
        kind, _, _, length = struct.unpack_from("!HHIH", packet, offset)
        offset += 10
        if kind == 12 and owner.lower() == name.lower():
            target, _ = _read_name(packet, offset)
            return target
        offset += length
    return None


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, query_id: int, name: str) -> None:
        self.query_id = query_id
        self.name = name
        self.found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        with contextlib.suppress(ValueError, struct.error):
            target = ptr_answer(data, self.query_id, self.name)
            if target and not self.found.done():
                self.found.set_result(target)


async def mdns_name(address: str, *, port: int = 5353, timeout: float = 1.0) -> str | None:
    """The host's own mDNS name for `address` (a Mac answers `MacBook-Pro.local`), asked of it directly.

    A one-shot query sent by unicast to the host's port 5353 (RFC 6762 §5.5, §6.7): no multicast group
    to join, and only that host answers.
    """
    name = _ptr_name(address)
    query_id = int(time.monotonic_ns() & 0xFFFF)
    query = struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", 12, 1)
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Answer(query_id, name), remote_addr=(address, port)
        )
    except OSError:
        return None
    try:
        transport.sendto(query)
        async with asyncio.timeout(timeout):
            return (await protocol.found).rstrip(".")
    except TimeoutError:
        return None
    finally:
        transport.close()


async def sender_name(address: str, *, mdns_port: int = 5353, timeout: float = 1.0) -> str | None:
    """A name for a sender: its mDNS name (what a Mac calls itself), else reverse DNS, else None."""
    found = await mdns_name(address, port=mdns_port, timeout=timeout)
    if found:
        return found.removesuffix(".local")
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            host, _ = await loop.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, TimeoutError):
        return None
    return host or None
