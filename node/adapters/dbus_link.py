"""A connection to a D-Bus bus (dbus-fast): calls, properties, signals, mirrors of ObjectManager trees."""

# BlueZ and bluez-alsa are both driven through this. Every dbus-fast exception stops at this edge and
# becomes a DaemonError subclass, so the source above it never imports dbus-fast's errors.

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from node.adapters.dbus_address import BusError, describe
from node.framework.errors import DaemonError

log = logging.getLogger(__name__)

DBUS = "org.freedesktop.DBus"
PROPERTIES = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
# A daemon that answers nothing in this long is as good as gone (BlueZ answers in milliseconds).
CALL_TIMEOUT = 10.0

Objects = dict[str, dict[str, dict[str, Any]]]  # path -> interface -> property -> value


class CallError(DaemonError):
    """A D-Bus call answered with an error: `name` is the D-Bus error name, e.g. org.bluez.Error.Failed."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


def unwrap(value: Any) -> Any:
    """Plain Python values out of dbus-fast's Variants, however deeply nested (a Track is a{sv})."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _cancelled() -> None:
    """Re-raise a cancellation that Python 3.11's wait_for turned into the call's own error.

    When the task is cancelled just as the connection breaks, wait_for returns the inner future's
    exception instead of CancelledError; converted into a DaemonError, the cancellation would be lost
    and whoever cancelled (a node stopping) would wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def connect(address: str = "") -> MessageBus:
    """A connected bus: `address` (e.g. unix:path=/run/x.sock), or the system bus when it is empty."""
    bus = MessageBus(bus_address=address or None, bus_type=BusType.SYSTEM)
    try:
        return await asyncio.wait_for(bus.connect(), CALL_TIMEOUT)
    except Exception as exc:  # dbus-fast raises OSError, AuthError, InvalidAddressError, EOFError...
        with contextlib.suppress(Exception):
            bus.disconnect()
        raise BusError(f"cannot connect to {describe(address)}: {exc or type(exc).__name__}") from None


class Link:
    """Calls and signals over one bus connection, with errors as DaemonErrors."""

    def __init__(self, bus: MessageBus, address: str = "") -> None:
        self.bus = bus
        self.address = address
        self._handlers: list[Callable[[Message], None]] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def open(cls, address: str = "") -> Link:
        return cls(await connect(address), address)

    @property
    def connected(self) -> bool:
        return bool(self.bus.connected)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.bus.disconnect()

    async def closed(self) -> None:
        """Returns when the connection is gone (the daemon stopped, or `close`)."""
        with contextlib.suppress(Exception):
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    # Calls -----------------------------------------------------------------------------------------
    async def call(
        self,
        service: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        *args: Any,
        timeout: float = CALL_TIMEOUT,
    ) -> list[Any]:
        message = Message(
            destination=service,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(args),
        )
        try:
            reply = await asyncio.wait_for(self.bus.call(message), timeout)
        except TimeoutError:
            _cancelled()
            raise CallError("timeout", f"{service} {path} {member}: no answer in {timeout:.0f} s") from None
        except Exception as exc:
            _cancelled()
            raise BusError(f"{describe(self.address)}: {type(exc).__name__} {exc}".rstrip()) from None
        if reply is None:
            raise BusError(f"{describe(self.address)}: no reply to {member}")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise CallError(reply.error_name or "error", text)
        return list(reply.body)

    async def get_all(self, service: str, path: str, interface: str) -> dict[str, Any]:
        (props,) = await self.call(service, path, PROPERTIES, "GetAll", "s", interface)
        result: dict[str, Any] = unwrap(props)
        return result

    async def get(self, service: str, path: str, interface: str, name: str) -> Any:
        (value,) = await self.call(service, path, PROPERTIES, "Get", "ss", interface, name)
        return unwrap(value)

    async def set(self, service: str, path: str, interface: str, name: str, value: Variant) -> None:
        await self.call(service, path, PROPERTIES, "Set", "ssv", interface, name, value)

    async def managed_objects(self, service: str, path: str) -> Objects:
        (objects,) = await self.call(service, path, OBJECT_MANAGER, "GetManagedObjects")
        result: Objects = unwrap(objects)
        return result

    async def owner(self, name: str) -> str | None:
        """The unique name owning `name` now, or None when nobody does."""
        try:
            (unique,) = await self.call(DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", name)
        except CallError as exc:
            if exc.name == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise
        return str(unique)

    async def match(self, rule: str) -> None:
        await self.call(DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", rule)

    # Signals ---------------------------------------------------------------------------------------
    def listen(self, handler: Callable[[Message], None]) -> Callable[[], None]:
        """Every signal this connection receives goes to `handler`; returns how to stop."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def _dispatch(self, message: Message) -> bool | None:
        if message.message_type != MessageType.SIGNAL:
            return None
        for handler in list(self._handlers):
            try:
                handler(message)
            except Exception:
                log.exception("handling the D-Bus signal %s.%s failed", message.interface, message.member)
        return None


class Mirror:
    """What one service's ObjectManager holds, kept current from its signals.

    `objects` is path -> interface -> properties (plain values). `on_change(path, interface)` is
    called after every change (`path` None: the whole tree was reloaded or the service vanished).
    The service may vanish and come back (a daemon restart): `present` says which, and the tree is
    reloaded when it returns.
    """

    def __init__(
        self,
        link: Link,
        service: str,
        root: str,
        namespace: str,
        on_change: Callable[[str | None, str | None], None],
    ) -> None:
        self.link = link
        self.service = service
        self.root = root
        self.namespace = namespace
        self.on_change = on_change
        self.objects: Objects = {}
        self.owner: str | None = None
        self._reload: asyncio.Task[None] | None = None
        self._stop: Callable[[], None] | None = None

    @property
    def present(self) -> bool:
        return self.owner is not None

    async def start(self) -> None:
        """Watch the service's signals, then read its whole tree (signals older than that are superseded)."""
        self._stop = self.link.listen(self._signal)
        sender = f"sender='{self.service}'"
        await self.link.match(f"type='signal',{sender},interface='{OBJECT_MANAGER}'")
        await self.link.match(
            f"type='signal',{sender},interface='{PROPERTIES}',member='PropertiesChanged',"
            f"path_namespace='{self.namespace}'"
        )
        await self.link.match(
            f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{self.service}'"
        )
        await self.load()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._reload is not None:
            self._reload.cancel()

    async def load(self) -> None:
        self.owner = await self.link.owner(self.service)
        self.objects = await self.link.managed_objects(self.service, self.root) if self.owner else {}
        self.on_change(None, None)

    def with_interface(self, interface: str) -> dict[str, dict[str, Any]]:
        """path -> properties of every object that has `interface`."""
        return {path: ifaces[interface] for path, ifaces in self.objects.items() if interface in ifaces}

    def props(self, path: str, interface: str) -> dict[str, Any] | None:
        return self.objects.get(path, {}).get(interface)

    def _signal(self, message: Message) -> None:
        if message.interface == DBUS and message.member == "NameOwnerChanged":
            name, _old, new = message.body
            if name == self.service:
                self._owner_changed(new or None)
            return
        if self.owner is None or message.sender != self.owner:
            return
        if message.interface == OBJECT_MANAGER:
            self._tree_signal(message)
        elif message.interface == PROPERTIES and message.member == "PropertiesChanged":
            path = message.path or ""
            interface, changed, invalidated = message.body
            props = self.objects.get(path, {}).get(interface)
            if props is None:
                return
            props.update(unwrap(changed))
            for name in invalidated:
                props.pop(name, None)
            self.on_change(path, interface)

    def _tree_signal(self, message: Message) -> None:
        if message.member == "InterfacesAdded":
            path, interfaces = message.body
            if not self._ours(path):
                return
            self.objects.setdefault(path, {}).update(unwrap(interfaces))
            for interface in interfaces:
                self.on_change(path, interface)
        elif message.member == "InterfacesRemoved":
            path, interfaces = message.body
            known = self.objects.get(path)
            if known is None:
                return
            for interface in interfaces:
                known.pop(interface, None)
            if not known:
                del self.objects[path]
            for interface in interfaces:
                self.on_change(path, interface)

    def _ours(self, path: str) -> bool:
        return path == self.namespace or path.startswith(self.namespace.rstrip("/") + "/")

    def _owner_changed(self, owner: str | None) -> None:
        self.owner = owner
        if owner is None:
            self.objects = {}
            self.on_change(None, None)
            return
        # Back (a restart): its tree is read again, off the signal handler.
        if self._reload is not None:
            self._reload.cancel()
        self._reload = asyncio.create_task(self._load_quietly())

    async def _load_quietly(self) -> None:
        try:
            await self.load()
        except DaemonError as exc:
            log.warning("%s came back but its objects cannot be read: %s", self.service, exc)
