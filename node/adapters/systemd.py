"""systemd over D-Bus (org.freedesktop.systemd1): start, stop, restart a named unit and read its status."""

# The node runs unprivileged and drives its daemons' units through systemd's own API; polkit decides
# (the rule `milo install` writes lets the node's user start/stop/restart exactly those units). No
# systemctl, no privileged helper. A job is waited for through the Manager's JobRemoved signal, so `restart()`
# returns when systemd has finished it and says whether it worked. dbus-fast's errors stop here and
# become SystemdError subclasses.

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.framework.errors import DaemonError

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

SERVICE = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT = 10.0
JOB_TIMEOUT = 60.0  # systemd's own default start timeout is 90 s; a daemon of ours starts in seconds
_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,250}\.(service|socket|target|timer|path)$")
DENIED = (
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
)


class SystemdError(DaemonError):
    """systemd could not be reached, or refused or failed what was asked."""


class UnitNotFoundError(SystemdError):
    """There is no such unit (its file is not installed)."""


class NotAllowedError(SystemdError):
    """polkit said no: the unit is not one the node's rule names, or the rule is missing."""


class JobFailedError(SystemdError):
    """The job ran and did not end well (failed, timeout, dependency...): the unit's journal says why."""

    def __init__(self, unit: str, verb: str, result: str) -> None:
        super().__init__(f"{verb} {unit}: {result} (journalctl -u {unit})")
        self.result = result


@dataclass(frozen=True)
class UnitStatus:
    name: str
    load_state: str  # loaded, not-found, masked...
    active_state: str  # active, inactive, failed, activating, deactivating, reloading
    sub_state: str  # running, dead, exited, auto-restart...
    unit_file_state: str  # enabled, disabled, static, "" when there is no file

    @property
    def running(self) -> bool:
        return self.active_state == "active"


def check_name(unit: str) -> str:
    if not _NAME.match(unit):
        raise SystemdError(f"{unit!r} is not a unit name")
    return unit


class Systemd:
    """One connection to systemd: `async with Systemd() as sd: await sd.restart("snapserver.service")`.

    `address` is a D-Bus address (a test's private bus); empty means the system bus.
    """

    def __init__(self, address: str = "") -> None:
        self.address = address
        self._bus: MessageBus | None = None
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._done: dict[str, str] = {}  # job path -> result, for a job that ended before its reply came

    async def __aenter__(self) -> Systemd:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        # dbus-fast (~3 MB resident) is loaded by the first update or restart, not by every node.
        from dbus_fast import BusType  # noqa: PLC0415
        from dbus_fast.aio import MessageBus  # noqa: PLC0415

        try:
            bus = MessageBus(bus_address=self.address or None, bus_type=BusType.SYSTEM)
            async with asyncio.timeout(CALL_TIMEOUT):
                self._bus = await bus.connect()
        except (OSError, TimeoutError, ValueError) as exc:
            raise SystemdError(f"D-Bus {self.address or 'system bus'}: {exc}") from exc
        except Exception as exc:  # dbus-fast's own (AuthError, InvalidAddressError...)
            raise SystemdError(f"D-Bus {self.address or 'system bus'}: {exc}") from exc
        self._bus.add_message_handler(self._on_message)
        rule = f"type='signal',sender='{SERVICE}',path='{PATH}',interface='{MANAGER}',member='JobRemoved'"
        bus_api = "org.freedesktop.DBus"
        await self._call("AddMatch", "s", [rule], dest=bus_api, path="/org/freedesktop/DBus", iface=bus_api)
        # Without Subscribe, systemd sends its signals only to clients that asked for them.
        await self._call("Subscribe", "", [])

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        for future in self._jobs.values():
            future.cancel()
        self._jobs.clear()
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _on_message(self, message: Message) -> bool:
        from dbus_fast import MessageType  # noqa: PLC0415 - loaded by connect()

        if message.message_type == MessageType.SIGNAL and message.member == "JobRemoved":
            _, job, _, result = message.body
            future = self._jobs.pop(job, None)
            if future is None:
                self._done[job] = result
            elif not future.done():
                future.set_result(result)
        return False  # others may look at it too

    async def _call(
        self,
        member: str,
        sig: str,
        body: list[Any],
        *,
        dest: str = SERVICE,
        path: str = PATH,
        iface: str = MANAGER,
    ) -> Any:
        from dbus_fast import Message, MessageType  # noqa: PLC0415 - loaded by connect()

        if self._bus is None:
            raise SystemdError("not connected to systemd")
        message = Message(
            destination=dest, path=path, interface=iface, member=member, signature=sig, body=body
        )
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await self._bus.call(message)
        except TimeoutError as exc:
            raise SystemdError(f"{member}: systemd did not answer within {CALL_TIMEOUT:.0f} s") from exc
        except (OSError, EOFError) as exc:
            raise SystemdError(f"{member}: D-Bus connection lost ({exc})") from exc
        if reply is None:
            raise SystemdError(f"{member}: no reply")
        if reply.message_type == MessageType.ERROR:
            name = reply.error_name or "error"
            text = str(reply.body[0]) if reply.body else ""
            if name in DENIED:
                raise NotAllowedError(
                    f"{member} {body[0] if body else ''}: not allowed ({text}); the polkit rule is "
                    "/etc/polkit-1/rules.d/50-milo.rules (milo install writes it)"
                )
            if name == "org.freedesktop.systemd1.NoSuchUnit":
                raise UnitNotFoundError(text or f"{member}: no such unit")
            raise SystemdError(f"{member}: {name}: {text}")
        return reply.body[0] if reply.body else None

    async def _job(self, verb: str, member: str, unit: str, *, wait: bool, timeout: float) -> str:
        check_name(unit)
        job = await self._call(member, "ss", [unit, "replace"])
        if not wait:
            return "queued"
        result = self._done.pop(job, None)
        if result is None:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._jobs[job] = future
            try:
                async with asyncio.timeout(timeout):
                    result = await future
            except TimeoutError as exc:
                raise SystemdError(f"{verb} {unit}: not done within {timeout:.0f} s") from exc
            finally:
                self._jobs.pop(job, None)
        if result != "done":
            raise JobFailedError(unit, verb, result)
        return result

    async def start(self, unit: str, *, wait: bool = True, timeout: float = JOB_TIMEOUT) -> str:
        return await self._job("start", "StartUnit", unit, wait=wait, timeout=timeout)

    async def stop(self, unit: str, *, wait: bool = True, timeout: float = JOB_TIMEOUT) -> str:
        return await self._job("stop", "StopUnit", unit, wait=wait, timeout=timeout)

    async def restart(self, unit: str, *, wait: bool = True, timeout: float = JOB_TIMEOUT) -> str:
        return await self._job("restart", "RestartUnit", unit, wait=wait, timeout=timeout)

    async def status(self, unit: str) -> UnitStatus:
        """What systemd says of the unit now; an unknown unit has load_state "not-found"."""
        check_name(unit)
        path = await self._call("LoadUnit", "s", [unit])
        props = await self._call("GetAll", "s", [UNIT], path=str(path), iface=PROPERTIES)

        def text(key: str) -> str:
            value = props.get(key)
            return str(value.value) if value is not None else ""

        return UnitStatus(
            unit, text("LoadState"), text("ActiveState"), text("SubState"), text("UnitFileState")
        )
