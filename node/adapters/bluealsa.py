"""bluez-alsa over D-Bus (its PCMs, mirrored) and the bluealsa-aplay processes that play them into ALSA."""

# API as verified for bluez-alsa 4.0.0 (shared/reference/bluez-alsa.md §2-3): PCMs are objects under
# /org/bluealsa with `org.bluealsa.PCM1`, announced through the ObjectManager there. A phone streaming
# to the node is the PCM with Transport "A2DP-sink" and Mode "source" (we capture from it).

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from node.adapters.dbus_link import Link, Mirror
from node.framework.errors import DaemonError

log = logging.getLogger(__name__)

SERVICE = "org.bluealsa"
ROOT = "/org/bluealsa"
MANAGER = "org.bluealsa.Manager1"
PCM = "org.bluealsa.PCM1"
STOP_TIMEOUT = 3.0


class AplayError(DaemonError):
    """bluealsa-aplay could not be started."""


def service_name(suffix: str = "") -> str:
    """`org.bluealsa`, or `org.bluealsa.<suffix>` for a daemon started with `-B <suffix>`."""
    return f"{SERVICE}.{suffix}" if suffix else SERVICE


def decode_volume(raw: int) -> tuple[int, bool]:
    """PCM1 `Volume` (ch1 high byte, ch2 low byte, bit 7 mute, 0-127) as (percent of the left, muted)."""
    left = (raw >> 8) & 0x7F
    return round(left * 100 / 127), bool(raw & 0x8080)


@dataclass(frozen=True)
class Pcm:
    """One bluez-alsa PCM."""

    path: str
    device: str  # the BlueZ device path
    transport: str  # A2DP-sink, A2DP-source, HFP-AG...
    mode: str  # source (we capture) or sink (we play)
    codec: str
    sampling: int
    channels: int
    sequence: int
    soft_volume: bool

    @property
    def from_phone(self) -> bool:
        """Audio a phone streams to us: what bluealsa-aplay plays."""
        return self.transport.startswith("A2DP") and self.mode == "source"


def pcm_of(path: str, props: dict[str, Any]) -> Pcm:
    codec = str(props.get("Codec", ""))
    return Pcm(
        path=path,
        device=str(props.get("Device", "")),
        transport=str(props.get("Transport", "")),
        mode=str(props.get("Mode", "")),
        codec="" if codec == "<null>" else codec,
        sampling=int(props.get("Sampling", 0) or 0),
        channels=int(props.get("Channels", 0) or 0),
        sequence=int(props.get("Sequence", 0) or 0),
        soft_volume=bool(props.get("SoftVolume", True)),
    )


class BlueAlsa:
    """The bluez-alsa daemon of one bus: its version and its PCMs, mirrored."""

    def __init__(self, link: Link, suffix: str, on_change: Callable[[str | None, str | None], None]) -> None:
        self.link = link
        self.service = service_name(suffix)
        self.mirror = Mirror(link, self.service, ROOT, ROOT, on_change)

    async def start(self) -> None:
        await self.mirror.start()

    def stop(self) -> None:
        self.mirror.stop()

    @property
    def present(self) -> bool:
        return self.mirror.present

    async def version(self) -> str:
        return str(await self.link.get(self.service, ROOT, MANAGER, "Version"))

    def pcms(self) -> list[Pcm]:
        return sorted(
            (pcm_of(path, props) for path, props in self.mirror.with_interface(PCM).items()),
            key=lambda p: (p.sequence, p.path),
        )

    def from_phones(self) -> list[Pcm]:
        return [p for p in self.pcms() if p.from_phone]

    async def delegate_volume(self, pcm: str) -> None:
        """SoftVolume off: bluez-alsa stops scaling samples by the phone's volume (the node applies it)."""
        await self.link.set(self.service, pcm, PCM, "SoftVolume", Variant("b", False))


def aplay_command(
    program: str, pcm: str, address: str, *, suffix: str = "", extra: Sequence[str] = ()
) -> list[str]:
    """bluealsa-aplay for one device into one ALSA PCM (4.0.0 options)."""
    command = [program, f"--pcm={pcm}"]
    if suffix:
        command.append(f"--dbus={suffix}")
    return [*command, *extra, address]


class Aplay:
    """One bluealsa-aplay process: started, stopped, and restarted onto another PCM.

    bluealsa-aplay cannot change its output while it runs, so a move is a restart; the phone's
    connection is bluez-alsa's and BlueZ's, and a restarted player just opens the PCM again.
    """

    def __init__(
        self,
        program: str,
        address: str,
        *,
        suffix: str = "",
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.program = program
        self.address = address
        self.suffix = suffix
        self.extra = list(extra)
        self.env = env
        self.pcm = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0  # when the previous process was stopped: the start of a move's gap

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, pcm: str) -> None:
        await self.stop()
        command = aplay_command(self.program, pcm, self.address, suffix=self.suffix, extra=self.extra)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # a Ctrl-C on the node's terminal is the node's to handle
            )
        except OSError as exc:
            self.proc = None
            raise AplayError(f"cannot start {self.program}: {exc}") from None
        self.pcm = pcm
        self.started_at = time.monotonic()
        log.info("bluealsa-aplay for %s into %s (pid %s)", self.address, pcm, self.proc.pid)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.stopped_at = time.monotonic()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def exited(self) -> int | None:
        """Waits for the current process to end; its exit code (None when none runs)."""
        proc = self.proc
        if proc is None:
            return None
        return await proc.wait()
