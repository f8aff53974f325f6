"""BlueZ over D-Bus: the adapter, devices, AVRCP players and transports, and a pairing agent."""

# API as verified for BlueZ 5.66 (shared/reference/bluez-alsa.md §4). Everything goes through
# dbus_link (calls, errors as DaemonErrors); the agent is a dbus-fast service object that BlueZ
# calls, whose decisions are made by an `AgentPolicy` above it.

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from dbus_fast import DBusError as FastDBusError
from dbus_fast import Variant
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from node.adapters.dbus_link import CallError, Link, Mirror

log = logging.getLogger(__name__)

SERVICE = "org.bluez"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
PLAYER = "org.bluez.MediaPlayer1"
TRANSPORT = "org.bluez.MediaTransport1"
AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT = "org.bluez.Agent1"
AGENT_PATH = "/milo/agent"
REJECTED = "org.bluez.Error.Rejected"
CANCELED = "org.bluez.Error.Canceled"


def _uuid(short: int) -> str:
    return f"{short:08x}-0000-1000-8000-00805f9b34fb"


# What a phone streaming to us uses: A2DP (source on its side, sink on ours), AVDTP under it, AVRCP.
A2DP_SOURCE = _uuid(0x110A)
AUDIO_UUIDS = frozenset(_uuid(n) for n in (0x110A, 0x110B, 0x110C, 0x110D, 0x110E, 0x110F))
ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
PlayerCommand = Literal["Play", "Pause", "Stop", "Next", "Previous"]
# What a D-Bus method that returns nothing is annotated with: dbus-fast reads `-> None`, a string under
# `from __future__ import annotations`, as no signature at all and refuses it.
Void = Annotated[None, DBusSignature("")]


@dataclass(frozen=True)
class Device:
    """One device BlueZ knows (paired, or connected now)."""

    path: str
    address: str
    name: str
    adapter: str
    paired: bool
    connected: bool
    trusted: bool
    uuids: frozenset[str]
    icon: str = ""

    @property
    def audio_source(self) -> bool:
        """It streams audio to us (an A2DP source), or says nothing yet of what it offers."""
        return not self.uuids or A2DP_SOURCE in self.uuids


def device_of(path: str, props: dict[str, Any]) -> Device:
    address = str(props.get("Address", "")).upper()
    return Device(
        path=path,
        address=address,
        name=str(props.get("Alias") or props.get("Name") or address),
        adapter=str(props.get("Adapter", "")),
        paired=bool(props.get("Paired", False)),
        connected=bool(props.get("Connected", False)),
        trusted=bool(props.get("Trusted", False)),
        uuids=frozenset(str(u).lower() for u in props.get("UUIDs", [])),
        icon=str(props.get("Icon", "")),
    )


class Bluez:
    """The BlueZ objects of one bus, mirrored, and what the node asks of them."""

    def __init__(self, link: Link, on_change: Callable[[str | None, str | None], None]) -> None:
        self.link = link
        self.mirror = Mirror(link, SERVICE, "/", "/org/bluez", on_change)

    async def start(self) -> None:
        await self.mirror.start()

    def stop(self) -> None:
        self.mirror.stop()

    @property
    def present(self) -> bool:
        return self.mirror.present

    # Reading ---------------------------------------------------------------------------------------
    def adapters(self) -> dict[str, dict[str, Any]]:
        return self.mirror.with_interface(ADAPTER)

    def adapter(self, name: str = "") -> tuple[str, dict[str, Any]] | None:
        """`hci0` (or the first adapter when `name` is empty): its path and properties."""
        found = sorted(self.adapters().items())
        for path, props in found:
            if not name or path.rsplit("/", 1)[-1] == name:
                return path, props
        return None

    def devices(self, adapter: str | None = None) -> list[Device]:
        devices = [device_of(p, props) for p, props in self.mirror.with_interface(DEVICE).items()]
        return [d for d in devices if adapter is None or d.adapter == adapter]

    def device(self, path: str) -> Device | None:
        props = self.mirror.props(path, DEVICE)
        return device_of(path, props) if props is not None else None

    def _under(self, interface: str, device: str) -> tuple[str, dict[str, Any]] | None:
        for path, props in sorted(self.mirror.with_interface(interface).items()):
            if props.get("Device") == device or path.startswith(device + "/"):
                return path, props
        return None

    def player(self, device: str) -> tuple[str, dict[str, Any]] | None:
        """The device's AVRCP player (`org.bluez.MediaPlayer1`), when the phone exposes one."""
        return self._under(PLAYER, device)

    def transport(self, device: str) -> tuple[str, dict[str, Any]] | None:
        """The device's A2DP transport (`org.bluez.MediaTransport1`): State, Volume (0-127)."""
        return self._under(TRANSPORT, device)

    # Changing --------------------------------------------------------------------------------------
    async def set_adapter(self, path: str, **props: bool | int | str) -> None:
        """Set adapter properties (Powered, Alias, Discoverable, DiscoverableTimeout, Pairable...)."""
        for name, value in props.items():
            current = (self.mirror.props(path, ADAPTER) or {}).get(name)
            if current == value:
                continue
            await self.link.set(SERVICE, path, ADAPTER, name, _variant(value))

    async def disconnect(self, device: str) -> None:
        try:
            await self.link.call(SERVICE, device, DEVICE, "Disconnect")
        except CallError as exc:
            if exc.name != "org.bluez.Error.NotConnected":
                raise

    async def trust(self, device: str, trusted: bool = True) -> None:
        await self.link.set(SERVICE, device, DEVICE, "Trusted", Variant("b", trusted))

    async def forget(self, adapter: str, device: str) -> None:
        await self.link.call(SERVICE, adapter, ADAPTER, "RemoveDevice", "o", device)

    async def player_command(self, player: str, command: PlayerCommand) -> None:
        await self.link.call(SERVICE, player, PLAYER, command)

    async def set_volume(self, transport: str, volume: int) -> None:
        """AVRCP absolute volume, 0-127."""
        await self.link.set(SERVICE, transport, TRANSPORT, "Volume", Variant("q", max(0, min(127, volume))))

    async def register_agent(self, capability: str = "NoInputNoOutput") -> None:
        await self.link.call(
            SERVICE, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", AGENT_PATH, capability
        )
        await self.link.call(SERVICE, "/org/bluez", AGENT_MANAGER, "RequestDefaultAgent", "o", AGENT_PATH)

    async def unregister_agent(self) -> None:
        await self.link.call(SERVICE, "/org/bluez", AGENT_MANAGER, "UnregisterAgent", "o", AGENT_PATH)


def _variant(value: bool | int | str) -> Variant:
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("u", value)
    return Variant("s", value)


# The pairing agent --------------------------------------------------------------------------------
AgentKind = Literal["pairing", "passkey", "service"]


class AgentPolicy(Protocol):
    """What the agent asks the node: may `device` pair (or use `uuid`)? Answered asynchronously."""

    async def authorize(
        self, device: str, kind: AgentKind, passkey: int | None, uuid: str | None
    ) -> bool: ...

    def pin_code(self, device: str) -> str: ...

    def cancelled(self) -> None: ...


class PairingAgent(ServiceInterface):
    """`org.bluez.Agent1`, exported at AGENT_PATH: BlueZ calls it when a phone pairs or connects."""

    def __init__(self, policy: AgentPolicy) -> None:
        super().__init__(AGENT)
        self.policy = policy

    def export(self, link: Link) -> None:
        link.bus.export(AGENT_PATH, self)

    def unexport(self, link: Link) -> None:
        link.bus.unexport(AGENT_PATH, self)

    async def _decide(self, device: str, kind: AgentKind, passkey: int | None, uuid: str | None) -> None:
        if not await self.policy.authorize(device, kind, passkey, uuid):
            raise FastDBusError(REJECTED, "refused by the node's pairing policy")

    @dbus_method()
    def Release(self) -> Void:  # noqa: N802 - D-Bus member names
        log.info("bluez released the pairing agent")

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:  # noqa: N802
        await self._decide(device, "pairing", None, None)
        return self.policy.pin_code(device)

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> Void:  # noqa: N802
        log.info("pairing %s: PIN %s", device, pincode)

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802
        await self._decide(device, "pairing", None, None)
        return int(self.policy.pin_code(device) or 0) % 1_000_000

    @dbus_method()
    def DisplayPasskey(  # noqa: N802
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> Void:
        log.info("pairing %s: passkey %06d", device, passkey)

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> Void:  # noqa: N802
        await self._decide(device, "passkey", passkey, None)

    @dbus_method()
    async def RequestAuthorization(self, device: DBusObjectPath) -> Void:  # noqa: N802
        await self._decide(device, "pairing", None, None)

    @dbus_method()
    async def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> Void:  # noqa: N802
        await self._decide(device, "service", None, uuid.lower())

    @dbus_method()
    def Cancel(self) -> Void:  # noqa: N802
        self.policy.cancelled()
