"""The Bluetooth subsystem: BlueZ and bluez-alsa over D-Bus, kept in line with its policy and topics."""

# One job read whole: every change BlueZ or bluez-alsa signal marks the source dirty, and one
# `_reconcile` brings the world in line (adapter visibility, the agent, which phones stay, one
# bluealsa-aplay per streaming phone, the volume) and derives the state from what is mirrored.

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from node.adapters import dbus_address
from node.adapters.alsa import alias_name
from node.framework.bus import Message
from node.framework.errors import CommandError, DaemonError, SubsystemUnavailableError
from node.framework.views import VolumeView, read_view
from node.sources import Source, SourceCommand, Transport, commands_of
from node.sources.bluetooth.models import (
    Accept,
    BluetoothConfig,
    BluetoothState,
    Disconnect,
    Forget,
    Pairable,
    PairedDevice,
    PendingPairing,
    Phone,
)
from node.sources.bluetooth.pairing import Pairing

if TYPE_CHECKING:
    from node.adapters.bluealsa import Aplay, BlueAlsa, Pcm
    from node.adapters.bluez import Bluez, Device, PairingAgent, PlayerCommand
    from node.adapters.dbus_link import Link

RECONNECT_FIRST_S = 0.2
# A BlueZ-side timeout a little past our own: our timer closes the window, BlueZ's only if we died.
WINDOW_MARGIN_S = 5
# A volume we sent to `volume/set` counts over older `volume` states for this long (a phone's
# slider sends bursts; the states that answer them lag behind).
VOLUME_PENDING_S = 2.0
APLAY_RETRY_CAP_S = 10.0
MEMBERS: dict[str, PlayerCommand] = {
    "play": "Play",
    "pause": "Pause",
    "stop": "Stop",
    "next": "Next",
    "previous": "Previous",
}


def to_percent(raw: int) -> int:
    """AVRCP absolute volume (0-127) in % of the node's volume."""
    return round(max(0, min(127, raw)) * 100 / 127)


def to_raw(percent: int) -> int:
    """The node's % as AVRCP absolute volume; to_percent(to_raw(p)) == p for every p."""
    return round(max(0, min(100, percent)) * 127 / 100)


@dataclass
class Session:
    """One connection to D-Bus and what the node keeps on it."""

    link: Link
    bluez: Bluez
    bluealsa: BlueAlsa
    agent: PairingAgent

    def close(self) -> None:
        self.bluez.stop()
        self.bluealsa.stop()
        with contextlib.suppress(Exception):
            self.agent.unexport(self.link)
        self.link.close()


@dataclass
class Retry:
    fails: int = 0
    not_before: float = 0.0


class Bluetooth(Source[BluetoothState, BluetoothConfig]):
    name = "bluetooth"
    program = "BlueZ and bluez-alsa over D-Bus; bluealsa-aplay"
    loopback = 0
    unit = "bluealsa.service"
    description = "Bluetooth A2DP receiver (BlueZ, bluez-alsa): pairing, phones, AVRCP control and volume"
    State = BluetoothState
    Config = BluetoothConfig
    Command = commands_of(Disconnect, Pairable, Forget, Accept)
    watches: ClassVar[tuple[str, ...]] = ("volume",)

    def __init__(self, ctx: Any, config: BluetoothConfig) -> None:
        super().__init__(ctx, config)
        self._session: Session | None = None
        self._dirty = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._aplays: dict[str, Aplay] = {}  # device path -> its player process
        self._retries: dict[str, Retry] = {}
        self._order: dict[str, float] = {}  # device path -> when it was first seen connected
        self._dropping: set[str] = set()  # devices being disconnected by the policy
        self._trusting: set[str] = set()
        self._delegated: set[str] = set()  # PCMs whose volume bluez-alsa no longer applies itself
        self._agent_owner: str | None = None  # BlueZ's unique name the agent is registered with
        self._version_owner: str | None = None
        self._version: str | None = None
        self._window_until: float | None = None  # time.time() when the pairing window closes
        self._window: asyncio.Task[None] | None = None
        self._current: str | None = None  # the device path `device` shows
        self._node_volume: int | None = None
        self._sent_volume: tuple[int, float] | None = None
        self._phone_volume: dict[str, int] = {}  # transport path -> last raw volume seen or set
        self.move_gap_ms: float | None = None  # the last move's stop-to-start time of bluealsa-aplay
        self.pairing = Pairing(config, self._bluez, self._publish_pending, self.log)

    def _bluez(self) -> Bluez | None:
        return self._session.bluez if self._session is not None else None

    # Lifecycle -------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        if shutil.which(self.config.aplay) is None:
            raise SubsystemUnavailableError(
                f"{self.config.aplay} is not installed (apt install bluez-alsa-utils)"
            )
        try:
            self._session = await self._open()
        except DaemonError as exc:
            raise SubsystemUnavailableError(str(exc)) from None
        missing = self._missing(self._session)
        if missing:
            raise SubsystemUnavailableError(missing)

    async def setup(self) -> None:
        self._dirty.clear()
        try:
            await self._reconcile()
        except DaemonError as exc:
            # A call that failed is tried again on the next change; a lost bus is run()'s to handle.
            self.log.warning("bluetooth: %s", exc)
            self._dirty.set()

    async def run(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            session = self._session
            if session is None:
                try:
                    session = await self._open()
                except DaemonError as exc:
                    await self._unavailable(str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.config.reconnect_cap_s)
                    continue
                self.log.info(
                    "bluetooth: D-Bus reached again at %s", self.config.dbus_address or "system bus"
                )
                self._session = session
                self._dirty.set()
            delay = RECONNECT_FIRST_S
            await self._serve(session)
            await self._drop_session()
            await self._unavailable("the connection to D-Bus was lost")

    async def teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._window is not None:
            self._window.cancel()
        self.pairing.close()
        await self._drop_session()

    async def on_config(self, old: BluetoothConfig, new: BluetoothConfig) -> bool:
        return False  # a new session with the new settings

    async def _open(self) -> Session:
        absent = dbus_address.missing(self.config.dbus_address)
        if absent is not None:
            raise absent
        # dbus-fast and the adapters on it (~3 MB resident) are loaded once there is a bus to talk to.
        from node.adapters.bluealsa import BlueAlsa  # noqa: PLC0415
        from node.adapters.bluez import Bluez, PairingAgent  # noqa: PLC0415
        from node.adapters.dbus_link import Link  # noqa: PLC0415

        link = await Link.open(self.config.dbus_address)
        session = Session(
            link=link,
            bluez=Bluez(link, self._changed),
            bluealsa=BlueAlsa(link, self.config.bluealsa_suffix, self._changed),
            agent=PairingAgent(self.pairing),
        )
        try:
            session.agent.export(link)
            await session.bluez.start()
            await session.bluealsa.start()
        except DaemonError:
            session.close()
            raise
        return session

    async def _drop_session(self) -> None:
        session, self._session = self._session, None
        await self._stop_aplays()
        self._agent_owner = self._version_owner = None
        self._phone_volume.clear()
        self._delegated.clear()
        if session is not None:
            session.close()

    def _changed(self, path: str | None, interface: str | None) -> None:
        self._dirty.set()

    async def _serve(self, session: Session) -> None:
        """Reconcile on every change until the connection is gone."""
        closed = asyncio.ensure_future(session.link.closed())
        try:
            while not closed.done():
                dirty = asyncio.ensure_future(self._dirty.wait())
                await asyncio.wait({closed, dirty}, return_when=asyncio.FIRST_COMPLETED)
                if not dirty.done():
                    dirty.cancel()
                    continue
                self._dirty.clear()
                try:
                    await self._reconcile()
                except DaemonError as exc:
                    # Next change tries again; a lost connection ends the loop through `closed`.
                    self.log.warning("bluetooth: %s", exc)
        finally:
            closed.cancel()

    def _missing(self, session: Session) -> str | None:
        """Why the source cannot work now, or None."""
        if not session.bluez.present:
            return "bluetoothd is not running (no org.bluez on D-Bus)"
        if session.bluez.adapter(self.config.adapter) is None:
            which = f" {self.config.adapter}" if self.config.adapter else ""
            return f"no Bluetooth adapter{which}"
        if not session.bluealsa.present:
            return f"bluealsa is not running (no {session.bluealsa.service} on D-Bus)"
        return None

    async def _unavailable(self, reason: str) -> None:
        await self._stop_aplays()
        self._current = None
        await self.set_state(
            state="unavailable",
            error=reason,
            device=None,
            devices=[],
            commands=[],
            title=None,
            artist=None,
            album=None,
            duration_ms=None,
            position_ms=None,
            pending_pairing=None,
            output=None,
        )

    # Reconciling -----------------------------------------------------------------------------------
    async def _reconcile(self) -> None:
        session = self._session
        if session is None:
            return
        missing = self._missing(session)
        if missing:
            self._agent_owner = None
            await self._unavailable(missing)
            return
        found = session.bluez.adapter(self.config.adapter)
        assert found is not None
        adapter_path, _ = found
        await self._apply_adapter(session, adapter_path)
        await self._ensure_agent(session)
        await self._read_version(session)
        phones = self._keep(session, self._connected(session, adapter_path))
        await self._trust(session, adapter_path)
        pcms = {pcm.device: pcm for pcm in session.bluealsa.from_phones()}
        await self._audio(session, phones, pcms)
        shown = [(d, self._phone(session, d, pcms.get(d.path))) for d in phones]
        current = next((pair for pair in shown if pair[1].state == "playing"), shown[0] if shown else None)
        self._current = current[0].path if current else None
        await self._volume_from_phone(session)
        await self._publish(session, adapter_path, shown, current)

    async def _apply_adapter(self, session: Session, path: str) -> None:
        await session.bluez.set_adapter(path, Powered=True, Alias=self.config.alias or self.ctx.node.node_id)
        if self.config.visibility == "always":
            await session.bluez.set_adapter(
                path, DiscoverableTimeout=0, PairableTimeout=0, Discoverable=True, Pairable=True
            )
        elif self._window_until is None:
            await session.bluez.set_adapter(path, Discoverable=False, Pairable=False)
        else:
            await session.bluez.set_adapter(path, Discoverable=True, Pairable=True)

    async def _ensure_agent(self, session: Session) -> None:
        owner = session.bluez.mirror.owner
        if owner is None or owner == self._agent_owner:
            return
        # A bluetoothd that restarted forgot the agent: registered again with each new instance.
        await session.bluez.register_agent()
        self._agent_owner = owner
        self.log.info("bluetooth: pairing agent registered (pairing = %s)", self.config.pairing)

    async def _read_version(self, session: Session) -> None:
        owner = session.bluealsa.mirror.owner
        if owner == self._version_owner:
            return
        try:
            self._version = await session.bluealsa.version()
        except DaemonError as exc:
            self.log.info("bluetooth: bluealsa's version is not readable: %s", exc)
            self._version = None
        self._version_owner = owner

    def _connected(self, session: Session, adapter: str) -> list[Device]:
        """The connected audio sources of the adapter, newest first."""
        phones = [d for d in session.bluez.devices(adapter) if d.connected and d.audio_source]
        now = time.monotonic()
        for gone in set(self._order) - {d.path for d in phones}:
            del self._order[gone]
            self._dropping.discard(gone)
        for phone in phones:
            self._order.setdefault(phone.path, now)
        return sorted(phones, key=lambda d: (-self._order[d.path], d.path))

    def _keep(self, session: Session, phones: list[Device]) -> list[Device]:
        """The phones the policy keeps; the others are disconnected (once each)."""
        if self.config.connections == "several" or len(phones) <= 1:
            return phones
        keep = phones[0] if self.config.connections == "newest" else phones[-1]
        for phone in phones:
            if phone.path != keep.path and phone.path not in self._dropping:
                self._dropping.add(phone.path)
                self.log.info(
                    "bluetooth: %s disconnected: %s is %s (connections = %s)",
                    phone.name,
                    keep.name,
                    "newer" if self.config.connections == "newest" else "already connected",
                    self.config.connections,
                )
                self._spawn(self._quietly(session.bluez.disconnect(phone.path)))
        return [keep]

    async def _trust(self, session: Session, adapter: str) -> None:
        if not self.config.trust:
            return
        for device in session.bluez.devices(adapter):
            if device.paired and not device.trusted and device.path not in self._trusting:
                self._trusting.add(device.path)
                await self._quietly(session.bluez.trust(device.path))

    async def _audio(self, session: Session, phones: list[Device], pcms: dict[str, Pcm]) -> None:
        """One bluealsa-aplay per kept phone that has an A2DP PCM; none for any other."""
        from node.adapters.bluealsa import Aplay  # noqa: PLC0415 - loaded with the session (_open)

        wanted = {p.path: p for p in phones if p.path in pcms}
        for path in list(self._aplays):
            if path not in wanted:
                await self._aplays.pop(path).stop()
                self._retries.pop(path, None)
        for path, phone in wanted.items():
            pcm = pcms[path]
            if self.config.volume_sync and pcm.soft_volume and pcm.path not in self._delegated:
                # The node's volume applies: bluez-alsa must not scale the samples by the phone's as well.
                self._delegated.add(pcm.path)
                await self._quietly(session.bluealsa.delegate_volume(pcm.path))
            aplay = self._aplays.get(path)
            if aplay is None:
                aplay = Aplay(
                    self.config.aplay,
                    phone.address,
                    suffix=self.config.bluealsa_suffix,
                    extra=self.config.aplay_args,
                )
                self._aplays[path] = aplay
            retry = self._retries.setdefault(path, Retry())
            if not aplay.running and time.monotonic() >= retry.not_before:
                await aplay.start(self._output())
                self._spawn(self._watch_aplay(path, aplay))

    async def _watch_aplay(self, path: str, aplay: Aplay) -> None:
        proc = aplay.proc
        code = await aplay.exited()
        if proc is None or aplay.proc is not proc or self._aplays.get(path) is not aplay:
            return  # stopped or restarted on purpose
        retry = self._retries.setdefault(path, Retry())
        retry.fails += 1
        delay = min(0.5 * 2 ** (retry.fails - 1), APLAY_RETRY_CAP_S)
        retry.not_before = time.monotonic() + delay
        self.log.warning(
            "bluetooth: bluealsa-aplay for %s exited (%s); again in %.1f s", aplay.address, code, delay
        )
        aplay.proc = None
        await asyncio.sleep(delay)
        self._dirty.set()

    def _output(self) -> str:
        return self.pcm or alias_name(self.name)

    async def _stop_aplays(self) -> None:
        aplays, self._aplays = self._aplays, {}
        self._retries.clear()
        for aplay in aplays.values():
            await aplay.stop()

    # State -----------------------------------------------------------------------------------------
    def _phone(self, session: Session, device: Device, pcm: Pcm | None) -> Phone:
        player = session.bluez.player(device.path)
        transport = session.bluez.transport(device.path)
        status = str(player[1].get("Status", "")) if player else ""
        active = transport is not None and transport[1].get("State") == "active"
        # AVRCP's status first: a paused phone keeps its transport active for a while.
        state: Literal["connected", "playing", "paused"] = "connected"
        if status == "paused":
            state = "paused"
        elif pcm is not None and (status == "playing" or (active and status != "stopped")):
            state = "playing"
        raw = transport[1].get("Volume") if transport else None
        return Phone(
            address=device.address,
            name=device.name,
            codec=pcm.codec or None if pcm else None,
            sample_rate=pcm.sampling or None if pcm else None,
            volume=to_percent(int(raw)) if isinstance(raw, int) else None,
            state=state,
            player=str(player[1].get("Name") or "") or None if player else None,
        )

    async def _publish(
        self,
        session: Session,
        adapter_path: str,
        shown: list[tuple[Device, Phone]],
        current: tuple[Device, Phone] | None,
    ) -> None:
        adapter = session.bluez.mirror.props(adapter_path, "org.bluez.Adapter1") or {}
        paired = sorted(
            (
                PairedDevice(address=d.address, name=d.name, connected=d.connected, trusted=d.trusted)
                for d in session.bluez.devices(adapter_path)
                if d.paired
            ),
            key=lambda d: (d.name.lower(), d.address),
        )
        changes: dict[str, Any] = {
            "error": None,
            "alias": adapter.get("Alias"),
            "adapter": adapter.get("Address"),
            "discoverable": bool(adapter.get("Discoverable", False)),
            "pairable": bool(adapter.get("Pairable", False)),
            "pairable_until": int(self._window_until * 1000) if self._window_until else None,
            "devices": [phone for _, phone in shown],
            "device": current[1] if current else None,
            "paired": paired,
            "pending_pairing": self.pairing.pending,
            "output": next((a.pcm for a in self._aplays.values() if a.running), None),
            "bluealsa": self._version,
        }
        changes.update(
            self._playing(session, current[0] if current else None, current[1] if current else None)
        )
        await self.set_state(**changes)

    def _playing(self, session: Session, device: Device | None, phone: Phone | None) -> dict[str, Any]:
        """state, metadata and commands from the current phone."""
        if device is None or phone is None:
            return {
                "state": "idle",
                "title": None,
                "artist": None,
                "album": None,
                "duration_ms": None,
                "position_ms": None,
                "commands": [],
            }
        player = session.bluez.player(device.path)
        props = player[1] if player else {}
        track = props.get("Track") or {}
        commands: list[SourceCommand] = []
        if player is not None:
            commands = ["pause", "stop"] if phone.state == "playing" else ["play"]
            commands += ["toggle", "next", "previous"]
        duration, position = track.get("Duration"), props.get("Position")
        return {
            "state": phone.state,
            "title": track.get("Title") or None,
            "artist": track.get("Artist") or None,
            "album": track.get("Album") or None,
            "duration_ms": int(duration) if duration else None,
            "position_ms": int(position) if isinstance(position, int) else None,
            "commands": commands,
        }

    async def _publish_pending(self, pending: PendingPairing | None) -> None:
        await self.set_state(pending_pairing=pending)

    # Volume ----------------------------------------------------------------------------------------
    async def _volume_from_phone(self, session: Session) -> None:
        """A phone that moved its volume moves the node's (through `volume/set`, like any client)."""
        if not self.config.volume_sync or self._current is None:
            return
        found = session.bluez.transport(self._current)
        raw = found[1].get("Volume") if found else None
        if found is None or not isinstance(raw, int):
            return
        path = found[0]
        last = self._phone_volume.get(path)
        self._phone_volume[path] = raw
        if last is None:
            # Just connected: the phone's slider takes the node's volume, not the other way round.
            await self._volume_to_phones()
            return
        if raw == last:
            return
        percent = to_percent(raw)
        if percent == self._node_volume:
            return
        self._sent_volume = (percent, time.monotonic())
        payload = json.dumps({"percent": percent}).encode()
        await self.ctx.bus.publish(self.ctx.topics.of("volume/set"), payload)

    async def _volume_to_phones(self) -> None:
        session, percent = self._session, self._node_volume
        if session is None or percent is None or not self.config.volume_sync:
            return
        for path in list(self._order):
            found = session.bluez.transport(path)
            if found is None or not isinstance(found[1].get("Volume"), int):
                continue
            if to_percent(self._phone_volume.get(found[0], found[1]["Volume"])) == percent:
                continue
            self._phone_volume[found[0]] = to_raw(percent)  # its echo is no change of the phone's
            await self._quietly(session.bluez.set_volume(found[0], to_raw(percent)))

    async def on_source_topic(self, message: Message, path: str) -> None:
        if path != "volume":
            return
        view = read_view(VolumeView, message.payload, self.log)
        if view is None:
            return
        self._node_volume = view.percent
        if self._sent_volume is not None:
            sent, at = self._sent_volume
            if view.percent == sent or time.monotonic() - at > VOLUME_PENDING_S:
                self._sent_volume = None
            else:
                return  # an older state than the phone's latest change: the phone is not moved back
        await self._volume_to_phones()

    # Routing ---------------------------------------------------------------------------------------
    async def move_to(self, pcm: str) -> None:
        # bluealsa-aplay has no way to change its output: a restart, while BlueZ and bluez-alsa keep
        # the phone connected and its PCM open for the next player.
        for aplay in list(self._aplays.values()):
            if aplay.running:
                await aplay.start(pcm)
                self.move_gap_ms = (aplay.started_at - aplay.stopped_at) * 1000
                self.log.info("bluetooth: moved to %s (player restarted in %.0f ms)", pcm, self.move_gap_ms)
        if self._aplays:
            await self.set_state(output=pcm)

    # Commands --------------------------------------------------------------------------------------
    def parse_source_text(self, text: str) -> Any:
        words = {
            "disconnect": {"disconnect": True},
            "pairable": {"pairable": self.config.pairable_window_s},
            "accept": {"accept": True},
            "refuse": {"accept": False},
        }
        return words.get(text.strip().lower(), text)

    def _ready(self) -> tuple[Session, str]:
        session = self._session
        if session is None or self._missing(session):
            reason = self.state.error or "Bluetooth is not available"
            raise CommandError("unavailable", reason)
        found = session.bluez.adapter(self.config.adapter)
        assert found is not None
        return session, found[0]

    async def _call(self, call: Any) -> None:
        try:
            await call
        except DaemonError as exc:
            raise CommandError("bluetooth_error", str(exc)) from None

    async def on_command(self, command: Any) -> None:
        await super().on_command(command)
        await self.publish_state(force=True)  # the echo that acknowledges it

    async def on_source_command(self, command: Any) -> None:
        if isinstance(command, Accept):
            self.pairing.answer(command.accept)
            return
        session, adapter = self._ready()
        if isinstance(command, Pairable):
            await self._pairable(session, adapter, command.pairable)
        elif isinstance(command, Disconnect):
            phones = [d for d in session.bluez.devices(adapter) if d.connected]
            if command.disconnect is not True:
                phones = [d for d in phones if d.address == command.disconnect]
            if not phones:
                raise CommandError("not_connected", "no such phone is connected")
            for phone in phones:
                await self._call(session.bluez.disconnect(phone.path))
        elif isinstance(command, Forget):
            known = [d for d in session.bluez.devices(adapter) if d.address == command.forget]
            if not known:
                raise CommandError("unknown_device", f"no device {command.forget} is known")
            await self._call(session.bluez.forget(adapter, known[0].path))
        await self._reconcile()

    async def _pairable(self, session: Session, adapter: str, seconds: int) -> None:
        if self.config.visibility == "always":
            return  # always open already: the echo says so
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if seconds == 0:
            self._window_until = None
            await self._call(session.bluez.set_adapter(adapter, Discoverable=False, Pairable=False))
            return
        self._window_until = time.time() + seconds
        timeout = seconds + WINDOW_MARGIN_S
        await self._call(
            session.bluez.set_adapter(
                adapter,
                DiscoverableTimeout=timeout,
                PairableTimeout=timeout,
                Discoverable=True,
                Pairable=True,
            )
        )
        self._window = asyncio.create_task(self._close_window(seconds))
        self.log.info("bluetooth: pairable for %d s", seconds)

    async def _close_window(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._window_until = None
        self._window = None
        self.log.info("bluetooth: pairing window closed")
        self._dirty.set()

    async def transport(self, command: Transport) -> None:
        command = self.toggled(command)
        if command in ("pause", "stop") and self.state.state not in ("playing", "paused"):
            return  # nothing plays: the player pausing every other source is no error
        session, _ = self._ready()
        if self._current is None:
            raise CommandError("not_connected", "no phone is connected")
        player = session.bluez.player(self._current)
        if player is None:
            raise CommandError("unsupported", "the phone offers no remote control (AVRCP)")
        await self._call(session.bluez.player_command(player[0], MEMBERS[command]))

    # Helpers ---------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, call: Any) -> None:
        try:
            await call
        except DaemonError as exc:
            self.log.warning("bluetooth: %s", exc)
