"""Bluetooth without a radio: a private dbus-daemon, the real bluealsa, fakes of BlueZ, bluez-alsa, aplay."""

# BlueZ cannot run here (no adapter, no AF_BLUETOOTH) and bluez-alsa 4.0 never creates a PCM without
# one (shared/reference/testing-without-hardware.md §4), so: the real bluealsa daemon shows that the
# node reads the real Manager1; FakeBluez and FakeBlueAlsa export the same objects and signals with
# dbus-fast on the same private bus, and a fake phone connects, streams, changes its volume.

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from harness.dbus import PrivateBus as BusDaemon
from harness.waits import WAIT, until
from node.adapters.bluez import Void

A2DP_SOURCE = "0000110a-0000-1000-8000-00805f9b34fb"
AVRCP = "0000110e-0000-1000-8000-00805f9b34fb"
AVDTP = "0000110d-0000-1000-8000-00805f9b34fb"
HANDS_FREE = "0000111e-0000-1000-8000-00805f9b34fb"


# The private bus -----------------------------------------------------------------------------------
class PrivateBus(BusDaemon):
    """The test's own bus, where the fake BlueZ and bluez-alsa (real or fake) own their names."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, ["org.bluez", "org.bluealsa.*"])


class BlueAlsaDaemon:
    """The real bluealsa on the private bus (it starts without an adapter; it never gets a PCM)."""

    def __init__(self, bus: PrivateBus, suffix: str = "") -> None:
        self.bus = bus
        self.suffix = suffix
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self) -> BlueAlsaDaemon:
        exe = shutil.which("bluealsa") or "/usr/bin/bluealsa"
        command = [exe, "-p", "a2dp-sink", *(["-B", self.suffix] if self.suffix else [])]
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address}
        self.proc = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                if "Registering D-Bus manager" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(WAIT) or self.proc.poll() is not None:
            raise RuntimeError("bluealsa did not start: " + "".join(self.lines))
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# Exporting objects with properties -----------------------------------------------------------------
class Props(ServiceInterface):
    """A D-Bus interface whose properties live in `values`; `update` changes them as the daemon would."""

    SPEC: ClassVar[dict[str, tuple[str, bool]]] = {}  # name -> (signature, writable)

    def __init__(self, name: str, **values: Any) -> None:
        super().__init__(name)
        self.values: dict[str, Any] = dict(values)
        self.written: list[tuple[str, Any]] = []  # what clients set, in order
        self.on_write: Callable[[str, Any], None] = lambda name, value: None

    def update(self, **changes: Any) -> None:
        self.values.update(changes)
        self.emit_properties_changed(changes)


def props_class(name: str, spec: dict[str, tuple[str, bool]]) -> type[Props]:
    """A Props subclass with one dbus-fast property per entry of `spec`."""
    namespace: dict[str, Any] = {"SPEC": spec}
    for prop, (signature, writable) in spec.items():
        namespace[prop] = _property(prop, signature, writable)
    return type(name, (Props,), namespace)


def _property(name: str, signature: str, writable: bool) -> Any:
    def getter(self: Props) -> Any:
        return self.values[name]

    getter.__annotations__ = {"return": signature}
    getter.__name__ = name
    access = PropertyAccess.READWRITE if writable else PropertyAccess.READ
    prop = dbus_property(access=access, name=name)(getter)
    if not writable:
        return prop

    def setter(self: Props, value: Any) -> None:
        self.values[name] = value
        self.written.append((name, value))
        self.emit_properties_changed({name: value})
        self.on_write(name, value)

    setter.__annotations__ = {"value": signature, "return": None}
    setter.__name__ = name
    return prop.setter(setter)


_AdapterProps = props_class(
    "_AdapterProps",
    {
        "Address": ("s", False),
        "Name": ("s", False),
        "Alias": ("s", True),
        "Powered": ("b", True),
        "Discoverable": ("b", True),
        "DiscoverableTimeout": ("u", True),
        "Pairable": ("b", True),
        "PairableTimeout": ("u", True),
        "Discovering": ("b", False),
        "UUIDs": ("as", False),
    },
)
_DeviceProps = props_class(
    "_DeviceProps",
    {
        "Address": ("s", False),
        "Name": ("s", False),
        "Alias": ("s", True),
        "Icon": ("s", False),
        "Class": ("u", False),
        "Paired": ("b", False),
        "Bonded": ("b", False),
        "Connected": ("b", False),
        "Trusted": ("b", True),
        "Blocked": ("b", True),
        "Adapter": ("o", False),
        "UUIDs": ("as", False),
        "ServicesResolved": ("b", False),
    },
)
_PlayerProps = props_class(
    "_PlayerProps",
    {
        "Status": ("s", False),
        "Position": ("u", False),
        "Track": ("a{sv}", False),
        "Device": ("o", False),
        "Name": ("s", False),
        "Type": ("s", False),
    },
)
_TransportProps = props_class(
    "_TransportProps",
    {
        "Device": ("o", False),
        "UUID": ("s", False),
        "Codec": ("y", False),
        "State": ("s", False),
        "Delay": ("q", False),
        "Volume": ("q", True),
    },
)
_ManagerProps = props_class(
    "_ManagerProps",
    {"Version": ("s", False), "Adapters": ("as", False), "Profiles": ("as", False), "Codecs": ("as", False)},
)
_PcmProps = props_class(
    "_PcmProps",
    {
        "Device": ("o", False),
        "Sequence": ("u", False),
        "Transport": ("s", False),
        "Mode": ("s", False),
        "Format": ("q", False),
        "Channels": ("y", False),
        "Sampling": ("u", False),
        "Codec": ("s", False),
        "Delay": ("q", False),
        "SoftVolume": ("b", True),
        "Volume": ("q", True),
    },
)


class Adapter(_AdapterProps):  # type: ignore[misc,valid-type]
    def __init__(self, fake: FakeBluez, address: str) -> None:
        super().__init__(
            "org.bluez.Adapter1",
            Address=address,
            Name="fake-host",
            Alias="fake-host",
            Powered=False,
            Discoverable=False,
            DiscoverableTimeout=180,
            Pairable=True,
            PairableTimeout=0,
            Discovering=False,
            UUIDs=[],
        )
        self.fake = fake

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath) -> Void:  # noqa: N802 - D-Bus names
        self.fake.removed.append(device)
        phone = self.fake.phones_by_path.get(device)
        if phone is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "no such device")
        phone.drop()
        self.fake.remove(phone)


class AgentManager(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.AgentManager1")
        self.agent: tuple[str, str] | None = None  # (sender, path)
        self.capability = ""
        self.default = False
        self.registered = asyncio.Event()

    @dbus_method()
    def RegisterAgent(self, agent: DBusObjectPath, capability: DBusStr) -> Void:  # noqa: N802
        raise DBusError("org.freedesktop.DBus.Error.Failed", "replaced in FakeBluez")

    @dbus_method()
    def RequestDefaultAgent(self, agent: DBusObjectPath) -> Void:  # noqa: N802
        self.default = True

    @dbus_method()
    def UnregisterAgent(self, agent: DBusObjectPath) -> Void:  # noqa: N802
        self.agent = None


class Device(_DeviceProps):  # type: ignore[misc,valid-type]
    def __init__(self, phone: FakePhone, **values: Any) -> None:
        super().__init__("org.bluez.Device1", **values)
        self.phone = phone
        self.disconnects = 0

    @dbus_method()
    def Disconnect(self) -> Void:  # noqa: N802
        self.disconnects += 1
        if not self.values["Connected"]:
            raise DBusError("org.bluez.Error.NotConnected", "Not Connected")
        self.phone.drop()

    @dbus_method()
    def Connect(self) -> Void:  # noqa: N802
        raise DBusError("org.bluez.Error.Failed", "the fake phone connects by itself")


class Player(_PlayerProps):  # type: ignore[misc,valid-type]
    """AVRCP player of a phone: the node's transport commands land here (`calls`)."""

    def __init__(self, **values: Any) -> None:
        super().__init__("org.bluez.MediaPlayer1", **values)
        self.calls: list[str] = []
        self.called = asyncio.Event()

    def _called(self, name: str, status: str | None = None) -> None:
        self.calls.append(name)
        self.called.set()
        if status is not None:
            self.update(Status=status)

    @dbus_method()
    def Play(self) -> Void:  # noqa: N802
        self._called("Play", "playing")

    @dbus_method()
    def Pause(self) -> Void:  # noqa: N802
        self._called("Pause", "paused")

    @dbus_method()
    def Stop(self) -> Void:  # noqa: N802
        self._called("Stop", "stopped")

    @dbus_method()
    def Next(self) -> Void:  # noqa: N802
        self._called("Next")

    @dbus_method()
    def Previous(self) -> Void:  # noqa: N802
        self._called("Previous")


class Transport(_TransportProps):  # type: ignore[misc,valid-type]
    pass


class Manager(_ManagerProps):  # type: ignore[misc,valid-type]
    pass


class PcmObject(_PcmProps):  # type: ignore[misc,valid-type]
    pass


# BlueZ -----------------------------------------------------------------------------------------------
def device_path(address: str, adapter: str = "/org/bluez/hci0") -> str:
    return f"{adapter}/dev_{address.replace(':', '_')}"


class FakeBluez:
    """`org.bluez` on a bus: one adapter, the agent manager, and the fake phones added to it."""

    def __init__(self, address: str, adapter_address: str = "00:1A:7D:DA:71:13") -> None:
        self.address = address
        self.adapter_address = adapter_address
        self.bus: MessageBus | None = None
        self.adapter_path = "/org/bluez/hci0"
        self.adapter = Adapter(self, adapter_address)
        self.agents = AgentManager()
        self.phones_by_path: dict[str, FakePhone] = {}
        self.removed: list[str] = []
        self.bluealsa: FakeBlueAlsa | None = None
        self.with_adapter = True

    async def start(self, *, adapter: bool = True) -> FakeBluez:
        self.with_adapter = adapter
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.add_message_handler(self._register_agent)
        self.bus.export("/org/bluez", self.agents)
        if adapter:
            self.bus.export(self.adapter_path, self.adapter)
        await self.bus.request_name("org.bluez")
        return self

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self.bus = None

    async def restart(self) -> FakeBluez:
        """A new bluetoothd on a (new) bus: the same adapter and paired phones, nothing connected."""
        await self.stop()
        self.agents.agent = None
        self.agents.registered = asyncio.Event()
        for phone in self.phones_by_path.values():
            phone.reset()
        await self.start(adapter=self.with_adapter)
        for phone in self.phones_by_path.values():
            phone.export()
        return self

    def _register_agent(self, message: Message) -> Message | None:
        # RegisterAgent needs the caller's unique name, which dbus-fast's service methods do not see.
        if message.interface == "org.bluez.AgentManager1" and message.member == "RegisterAgent":
            self.agents.agent = (message.sender or "", message.body[0])
            self.agents.capability = message.body[1]
            self.agents.registered.set()
            return Message.new_method_return(message)
        return None

    def add_phone(self, address: str, name: str, uuids: list[str] | None = None) -> FakePhone:
        phone = FakePhone(self, address, name, uuids if uuids is not None else [A2DP_SOURCE, AVRCP])
        self.phones_by_path[phone.path] = phone
        phone.export()
        return phone

    def remove(self, phone: FakePhone) -> None:
        self.phones_by_path.pop(phone.path, None)
        phone.unexport()

    async def wait_agent(self) -> tuple[str, str]:
        await asyncio.wait_for(self.agents.registered.wait(), WAIT)
        assert self.agents.agent is not None
        return self.agents.agent

    async def call_agent(self, member: str, signature: str, *body: Any) -> Message:
        """Call the node's agent as bluetoothd does; the reply (an ERROR for a refusal)."""
        assert self.bus is not None
        sender, path = await self.wait_agent()
        message = Message(
            destination=sender,
            path=path,
            interface="org.bluez.Agent1",
            member=member,
            signature=signature,
            body=list(body),
        )
        reply = await asyncio.wait_for(self.bus.call(message), 60)
        assert reply is not None
        return reply


@dataclass
class FakePhone:
    """A phone that pairs with the node, connects, streams, and moves its volume slider."""

    fake: FakeBluez
    address: str
    name: str
    uuids: list[str]
    device: Device = field(init=False)
    player: Player | None = None
    transport: Transport | None = None
    pcm: PcmObject | None = None
    exported: bool = False

    def __post_init__(self) -> None:
        self.path = device_path(self.address, self.fake.adapter_path)
        self.device = Device(
            self,
            Address=self.address,
            Name=self.name,
            Alias=self.name,
            Icon="phone",
            Class=0x5A020C,
            Paired=False,
            Bonded=False,
            Connected=False,
            Trusted=False,
            Blocked=False,
            Adapter=self.fake.adapter_path,
            UUIDs=list(self.uuids),
            ServicesResolved=False,
        )

    @property
    def bus(self) -> MessageBus:
        assert self.fake.bus is not None
        return self.fake.bus

    def export(self) -> None:
        self.bus.export(self.path, self.device)
        self.exported = True

    def unexport(self) -> None:
        with contextlib.suppress(Exception):
            self.bus.unexport(self.path, self.device)
        self.exported = False

    def reset(self) -> None:
        """bluetoothd restarted: the pairing is kept, the connection is not."""
        self.device.values.update(Connected=False, ServicesResolved=False)
        self.player = self.transport = None
        if self.pcm is not None and self.fake.bluealsa is not None:
            self.fake.bluealsa.remove_pcm(self)

    async def pair(self, passkey: int | None = 123456) -> bool:
        """Pair as a phone does with a NoInputNoOutput node: the agent is asked; True if accepted."""
        if passkey is None:
            reply = await self.fake.call_agent("RequestAuthorization", "o", self.path)
        else:
            reply = await self.fake.call_agent("RequestConfirmation", "ou", self.path, passkey)
        if reply.message_type == MessageType.ERROR:
            return False
        self.device.update(Paired=True, Bonded=True)
        return True

    async def connect(self, *, volume: int = 64) -> bool:
        """Connect A2DP and AVRCP; an untrusted phone's service is authorized by the agent first."""
        if not self.device.values["Trusted"]:
            reply = await self.fake.call_agent("AuthorizeService", "os", self.path, AVDTP)
            if reply.message_type == MessageType.ERROR:
                return False
        self.device.update(Connected=True, ServicesResolved=True)
        self.transport = Transport(
            "org.bluez.MediaTransport1",
            Device=self.path,
            UUID="0000110b-0000-1000-8000-00805f9b34fb",
            Codec=0,
            State="idle",
            Delay=0,
            Volume=volume,
        )
        self.bus.export(f"{self.path}/sep1/fd0", self.transport)
        self.player = Player(
            Status="stopped", Position=0, Track={}, Device=self.path, Name="Music", Type="Audio"
        )
        self.bus.export(f"{self.path}/player0", self.player)
        return True

    def play(
        self, title: str = "Song", artist: str = "Artist", album: str = "Album", duration: int = 200_000
    ) -> None:
        """Start streaming: the transport goes active, AVRCP says playing, bluez-alsa gets its PCM."""
        assert self.transport is not None and self.player is not None
        self.transport.update(State="active")
        track = {
            "Title": Variant("s", title),
            "Artist": Variant("s", artist),
            "Album": Variant("s", album),
            "Duration": Variant("u", duration),
        }
        self.player.update(Status="playing", Track=track, Position=0)
        if self.fake.bluealsa is not None and self.pcm is None:
            self.fake.bluealsa.add_pcm(self)

    def pause(self) -> None:
        assert self.transport is not None and self.player is not None
        self.player.update(Status="paused")
        self.transport.update(State="idle")

    def set_volume(self, volume: int) -> None:
        """The phone's own volume slider (AVRCP absolute volume, 0-127)."""
        assert self.transport is not None
        self.transport.update(Volume=volume)

    def drop(self) -> None:
        """The connection ends (the phone went away, or the node disconnected it)."""
        if self.fake.bluealsa is not None and self.pcm is not None:
            self.fake.bluealsa.remove_pcm(self)
        for obj, path in ((self.player, f"{self.path}/player0"), (self.transport, f"{self.path}/sep1/fd0")):
            if obj is not None:
                with contextlib.suppress(Exception):
                    self.bus.unexport(path, obj)
        self.player = self.transport = None
        self.device.update(Connected=False, ServicesResolved=False)


# bluez-alsa ------------------------------------------------------------------------------------------
class FakeBlueAlsa:
    """`org.bluealsa[.suffix]` with Manager1 and the PCM1 objects a real one creates when a phone streams."""

    def __init__(self, address: str, bluez: FakeBluez, suffix: str = "") -> None:
        self.address = address
        self.service = f"org.bluealsa.{suffix}" if suffix else "org.bluealsa"
        self.bus: MessageBus | None = None
        self.manager = Manager(
            "org.bluealsa.Manager1",
            Version="v4.0.0 (fake)",
            Adapters=["hci0"],
            Profiles=["A2DP-sink"],
            Codecs=["A2DP-sink:SBC"],
        )
        self.sequence = 0
        bluez.bluealsa = self

    async def start(self) -> FakeBlueAlsa:
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.export("/org/bluealsa", self.manager)
        await self.bus.request_name(self.service)
        return self

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self.bus = None

    def pcm_path(self, phone: FakePhone) -> str:
        return f"/org/bluealsa/hci0/dev_{phone.address.replace(':', '_')}/a2dpsnk/source"

    def add_pcm(self, phone: FakePhone, codec: str = "SBC") -> PcmObject:
        assert self.bus is not None
        self.sequence += 1
        pcm = PcmObject(
            "org.bluealsa.PCM1",
            Device=phone.path,
            Sequence=self.sequence,
            Transport="A2DP-sink",
            Mode="source",
            Format=0x8210,
            Channels=2,
            Sampling=44100,
            Codec=codec,
            Delay=150,
            SoftVolume=True,
            Volume=0x7F7F,
        )
        phone.pcm = pcm
        self.bus.export(self.pcm_path(phone), pcm)
        return pcm

    def remove_pcm(self, phone: FakePhone) -> None:
        if phone.pcm is not None and self.bus is not None:
            with contextlib.suppress(Exception):
                self.bus.unexport(self.pcm_path(phone), phone.pcm)
        phone.pcm = None


# bluealsa-aplay ---------------------------------------------------------------------------------------
FAKE_APLAY = '''#!{python}
"""Stands in for bluealsa-aplay: records how it was started and stopped (one JSON line each); no audio."""
import json, os, signal, sys, time
LOG = {log!r}
def note(**event):
    with open(LOG, "a") as f:
        f.write(json.dumps({{"pid": os.getpid(), "t": time.time(), **event}}) + "\\n")
def stop(signum, frame):
    note(event="stop", signal=signum)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
args = sys.argv[1:]
pcm = next((a.split("=", 1)[1] for a in args if a.startswith("--pcm=")), None)
dbus = next((a.split("=", 1)[1] for a in args if a.startswith("--dbus=")), None)
note(event="start", pcm=pcm, dbus=dbus, address=args[-1] if args else None, args=args)
signal.pause() if {stay!r} else sys.exit(3)
'''


@dataclass
class FakeAplay:
    """A fake bluealsa-aplay script and what it recorded."""

    path: Path
    log: Path

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def starts(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "start"]

    def running(self) -> list[dict[str, Any]]:
        stopped = {e["pid"] for e in self.events() if e["event"] == "stop"}
        return [e for e in self.starts() if e["pid"] not in stopped]

    async def wait(self, check: Callable[[FakeAplay], bool], timeout: float = WAIT) -> None:
        """Until `check` holds (the script writes its log on its own schedule, so this one is polled)."""
        await until(lambda: check(self), timeout, lambda: f"fake bluealsa-aplay: {self.events()}")


def fake_aplay(workdir: Path, *, stays: bool = True) -> FakeAplay:
    """Write the script (it runs until SIGTERM, or exits at once with 3 when `stays` is False)."""
    path = workdir / "fake-bluealsa-aplay"
    log = workdir / "aplay.log"
    path.write_text(FAKE_APLAY.format(python=sys.executable, log=str(log), stay=stays))
    path.chmod(0o755)
    return FakeAplay(path, log)
