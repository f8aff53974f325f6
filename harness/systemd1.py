"""A private dbus-daemon and a fake org.freedesktop.systemd1 on it: units, jobs, JobRemoved, polkit's no."""

# The node's systemd adapter speaks the real Manager API (StartUnit/StopUnit/RestartUnit return a job,
# JobRemoved says how it ended, LoadUnit + Properties.GetAll give the state); this fake answers the
# same calls on a bus of the test's own, never the machine's system bus. `allowed` plays polkit: a job
# on a unit outside it is refused with AccessDenied, as the rule `milo install` writes refuses it.

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from harness.dbus import PrivateBus

Void = Annotated[None, DBusSignature("")]
SERVICE = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"


class DBusDaemon(PrivateBus):
    """The test's own bus, where the fake systemd1 owns its name."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, ["org.freedesktop.systemd1"])


def unit_path(name: str) -> str:
    """systemd's object path of a unit: every byte but [A-Za-z0-9] as _xx (snapserver_2eservice)."""
    escaped = "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)
    return f"{PATH}/unit/{escaped}"


@dataclass
class FakeUnit:
    name: str
    active: bool = False
    enabled: bool = True
    fails: bool = False  # its start and restart jobs end "failed", as a daemon that exits at once
    loaded: bool = True
    jobs: list[str] = field(default_factory=list)  # "start", "stop", "restart", in order
    # Decided when a job runs: whether the daemon dies at once (a broken new version), or what a
    # oneshot unit does (an update's step: True is success).
    fails_when: Callable[[], bool] | None = None
    on_start: Callable[[], Awaitable[bool]] | None = None

    def broken(self) -> bool:
        return self.fails or (self.fails_when is not None and self.fails_when())

    @property
    def active_state(self) -> str:
        if not self.loaded:
            return "inactive"
        return "active" if self.active else ("failed" if self.broken() and self.jobs else "inactive")


class _Unit(ServiceInterface):
    def __init__(self, unit: FakeUnit) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.unit = unit

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:  # noqa: N802 - D-Bus names
        return self.unit.name

    @dbus_property(access=PropertyAccess.READ)
    def LoadState(self) -> DBusStr:  # noqa: N802
        return "loaded" if self.unit.loaded else "not-found"

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:  # noqa: N802
        return self.unit.active_state

    @dbus_property(access=PropertyAccess.READ)
    def SubState(self) -> DBusStr:  # noqa: N802
        return {"active": "running", "failed": "failed"}.get(self.unit.active_state, "dead")

    @dbus_property(access=PropertyAccess.READ)
    def UnitFileState(self) -> DBusStr:  # noqa: N802
        if not self.unit.loaded:
            return ""
        return "enabled" if self.unit.enabled else "disabled"


class _Manager(ServiceInterface):
    def __init__(self, fake: FakeSystemd) -> None:
        super().__init__(MANAGER)
        self.fake = fake

    def _job(self, verb: str, name: str) -> str:
        unit = self.fake.units.get(name)
        if unit is None or not unit.loaded:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not found.")
        if name not in self.fake.allowed:
            raise DBusError("org.freedesktop.DBus.Error.AccessDenied", f"Access denied to {verb} {name}")
        return self.fake.queue(unit, verb)

    @dbus_method()
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:  # noqa: N802
        return self._job("start", name)

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:  # noqa: N802
        return self._job("stop", name)

    @dbus_method()
    def RestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:  # noqa: N802
        return self._job("restart", name)

    @dbus_method()
    def LoadUnit(self, name: DBusStr) -> DBusObjectPath:  # noqa: N802
        if name not in self.fake.units:
            self.fake.add(FakeUnit(name, loaded=False))
        return unit_path(name)

    @dbus_method()
    def Subscribe(self) -> Void:  # noqa: N802
        self.fake.subscribed += 1


class FakeSystemd:
    """Units by name; `allowed` are those polkit lets the caller drive (the rule's list)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.units: dict[str, FakeUnit] = {}
        self.allowed: set[str] = set()
        self.subscribed = 0
        self.bus: MessageBus | None = None
        self._next_job = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeSystemd:
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.export(PATH, _Manager(self))
        for unit in self.units.values():
            self.bus.export(unit_path(unit.name), _Unit(unit))
        await self.bus.request_name(SERVICE)
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self.bus = None

    def add(self, unit: FakeUnit, *, allowed: bool = False) -> FakeUnit:
        self.units[unit.name] = unit
        if allowed:
            self.allowed.add(unit.name)
        if self.bus is not None:
            self.bus.export(unit_path(unit.name), _Unit(unit))
        return unit

    def queue(self, unit: FakeUnit, verb: str) -> str:
        """Like systemd: the job's path now, the job itself on the next turn of the loop, then JobRemoved."""
        self._next_job += 1
        job_id, path = self._next_job, f"{PATH}/job/{self._next_job}"
        # After this call returns, so the reply goes out first, as systemd's does.
        asyncio.get_running_loop().call_soon(self._spawn, unit, verb, job_id, path)
        return path

    def _spawn(self, unit: FakeUnit, verb: str, job_id: int, path: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(unit, verb, job_id, path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, unit: FakeUnit, verb: str, job_id: int, path: str) -> None:
        unit.jobs.append(verb)
        if verb == "stop":
            unit.active, result = False, "done"
        elif unit.on_start is not None:
            unit.active, result = False, "done" if await unit.on_start() else "failed"
        elif unit.broken():
            unit.active, result = False, "failed"
        else:
            unit.active, result = True, "done"
        assert self.bus is not None
        signal = Message.new_signal(PATH, MANAGER, "JobRemoved", "uoss", [job_id, path, unit.name, result])
        await self.bus.send(signal)
