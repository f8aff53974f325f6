"""The `info` subsystem: version, host, addresses, uptime, temperature and every subsystem's status."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import platform
import socket
import struct
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from node import SCHEMA_VERSION
from node.adapters import versions
from node.framework.bus import Message
from node.framework.subsystem import Status, Subsystem, SubsystemConfig
from node.framework.views import SnapclientsView, read_view

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
# Raspberry Pi firmware's under-voltage / throttling bit field (absent elsewhere).
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


class SubsystemStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    detail: str = ""


class SnapclientInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    host: str = ""
    version: str | None = Field(default=None, description="snapclient version; null: not reported yet")
    connected: bool = False
    local: bool = Field(default=False, description="this node's own client")


class InfoState(BaseModel):
    """Retained `<base>/info`: what this node is and how its parts are doing."""

    model_config = ConfigDict(extra="forbid")

    node_id: str = ""
    version: str = ""
    schema_version: int = SCHEMA_VERSION
    host: str = ""
    platform: str = ""
    python: str = ""
    addresses: list[str] = Field(default_factory=list, description="non-loopback IP addresses")
    broker: str = Field(default="", description="'embedded' or the external broker's URL (no password)")
    mqtt_port: int | None = None
    http_port: int | None = None
    started_at: float = Field(default=0.0, description="Unix time the node started")
    uptime_s: int = 0
    cpu_temp_c: float | None = None
    throttled: str | None = Field(default=None, description="Raspberry Pi get_throttled bits, hex")
    rss_mb: float | None = None
    subsystems: dict[str, SubsystemStatus] = Field(default_factory=dict)
    versions: dict[str, str | None] = Field(
        default_factory=dict,
        description="each program the node drives, from its own --version or the package database; "
        "null: not installed (read once, in the background, after start)",
    )
    satellites: dict[str, SnapclientInfo] = Field(
        default_factory=dict,
        description="every snapclient the multiroom server knows (this node's own too), by client id, "
        "with the version snapserver reports for it",
    )
    notices: list[str] = Field(default_factory=list, description="problems found since start, newest last")


class InfoConfig(SubsystemConfig):
    refresh_s: int = Field(
        default=60, ge=5, le=3600, description="how often uptime/temperature are refreshed"
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


SIOCGIFADDR = 0x8915
IF_INET6 = Path("/proc/net/if_inet6")


def _ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no IPv4 address on that interface
            return None
    return socket.inet_ntoa(packed[20:24])


def addresses() -> list[str]:
    """Non-loopback, non-link-local addresses, read from the kernel (psutil costs 1 MB resident for this)."""
    found = {a for _, name in socket.if_nameindex() if (a := _ipv4(name)) and not a.startswith("127.")}
    text = _read(IF_INET6) or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "00":  # scope global
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return sorted(found)


def rss_mb() -> float | None:
    statm = _read(Path("/proc/self/statm"))
    return round(int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1) if statm else None


class Info(Subsystem[InfoState, InfoConfig]):
    name = "info"
    description = "version, host, addresses, uptime, CPU temperature and the status of every subsystem"
    State = InfoState
    Config = InfoConfig
    watches = ("multiroom",)  # its clients' snapclient versions (read through a view: no import)

    def _snapshot(self) -> dict[str, Any]:
        node = self.ctx.node
        temp = _read(THERMAL)
        return {
            "node_id": node.node_id,
            "version": node.version,
            "host": socket.gethostname(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "addresses": addresses(),
            "broker": node.broker,
            "mqtt_port": node.mqtt_port,
            "http_port": node.http_port,
            "started_at": round(node.started, 3),
            "uptime_s": int(time.time() - node.started),
            "cpu_temp_c": round(int(temp) / 1000, 1) if temp and temp.lstrip("-").isdigit() else None,
            "throttled": _read(THROTTLED),
            "rss_mb": rss_mb(),
            "subsystems": {
                name: {"status": status, "detail": detail}
                for name, (status, detail) in node.board.entries.items()
            },
            "versions": dict(self._versions),
            "satellites": dict(self._satellites),
            "notices": list(node.board.notices),
        }

    _versions: dict[str, str | None]
    _satellites: dict[str, SnapclientInfo]

    async def setup(self) -> None:
        self._versions = {}
        self._satellites = {}
        self._changed = asyncio.Event()
        self.state = InfoState.model_validate(self._snapshot())

    async def _read_versions(self, changed: asyncio.Event) -> None:
        # Programs are asked in threads (versions.collect): a slow one delays only this field.
        self._versions = await versions.collect()
        changed.set()

    async def on_get(self) -> None:
        # Only the clock moves between refreshes; addresses, memory and temperature cost file reads
        # (a quarter of a round trip) and are refreshed every refresh_s and on status changes.
        self.state = self.state.model_copy(update={"uptime_s": int(time.time() - self.ctx.node.started)})

    async def on_topic(self, message: Message, path: str) -> None:
        seen = read_view(SnapclientsView, message.payload, self.log) if message.payload else None
        clients = seen.clients if seen is not None else []
        satellites = {
            c.id: SnapclientInfo(
                name=c.name, host=c.host, version=c.version or None, connected=c.connected, local=c.local
            )
            for c in clients
        }
        if satellites != self._satellites:
            self._satellites = satellites
            self._changed.set()

    async def run(self) -> None:
        changed = self._changed
        unlisten = self.ctx.node.board.listen(changed.set)
        reader = asyncio.create_task(self._read_versions(changed)) if not self._versions else None
        try:
            while True:
                # Status changes are published at once; uptime and temperature every refresh_s.
                changed.clear()
                await self.set_state(**self._snapshot())
                # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that
                # arrives as the event is set, and the runner's restart then waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.refresh_s):
                        await changed.wait()
        finally:
            unlisten()
            if reader is not None:
                reader.cancel()

    async def on_config(self, old: InfoConfig, new: InfoConfig) -> bool:
        return False  # restart: the refresh loop picks the new period up
