"""The `multiroom` subsystem: snapserver, this node's snapclient, and every client, over JSON-RPC events."""

# Over 500 lines on purpose: one job (the server's picture kept current and acted on) whose parts share
# the one client table; split, each part would need the others' state.

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from node.adapters.child import Child
from node.adapters.snapcast import (
    PRISTINE,
    Control,
    Event,
    NotConnectedError,
    ServerConfig,
    SnapcastError,
    Stream,
    SystemdUnit,
    alsa_stream,
    client_argv,
    render_server_conf,
)
from node.framework.backoff import Backoff
from node.framework.bus import Message
from node.framework.errors import CommandError, DaemonError, SubsystemUnavailableError, format_validation
from node.framework.files import write_atomic
from node.framework.payloads import RELATIVE, decode_command
from node.framework.subsystem import Context, Subsystem
from node.framework.views import ActiveSourceView, RoutingView, read_view
from node.subsystems.multiroom.models import (
    PRESETS,
    ClientChange,
    ClientCommand,
    MultiroomCommand,
    MultiroomConfig,
    MultiroomData,
    MultiroomState,
    Remembered,
    ServerSettings,
    ServerStatus,
    Settings,
    preset_of,
)
from node.subsystems.multiroom.table import Client, Table

CLIENT_SET = "multiroom/client/+/set"
# How long setup waits for the first full status, so the first retained state already lists the clients.
FIRST_STATUS_TIMEOUT = 1.5
# The clients' remembered settings are written this long after a change: a knob turn is one write.
SAVE_DELAY = 1.0
CLIENT_COMMAND: TypeAdapter[Any] = TypeAdapter(ClientCommand)


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def _remembered(client: Client) -> Remembered:
    return Remembered(name=client.name, volume=client.volume, muted=client.muted, latency=client.latency)


def _not_retained(message: Message) -> None:
    if message.retain:
        # A retained command would be replayed at every start ("ghost switching"): never act on it.
        raise CommandError("retained_command", "commands must not be retained; ignored")


class Multiroom(Subsystem[MultiroomState, MultiroomConfig]):
    """Runs (or reaches) snapserver, follows it through notifications, and plays on the DAC when on."""

    name = "multiroom"
    description = "Snapcast multiroom: the server, this node's own client, satellites that join by themselves"
    State = MultiroomState
    Config = MultiroomConfig
    Data = MultiroomData
    Command = TypeAdapter(MultiroomCommand)
    watches = ("routing", "source", CLIENT_SET)
    data: MultiroomData

    def __init__(self, ctx: Context, config: MultiroomConfig) -> None:
        super().__init__(ctx, config)
        self.table = Table()
        self.host_id = config.host_id or ctx.node.node_id
        self._dir = ctx.node.data_dir / "snapserver"
        self._control = Control(
            config.server_host, config.control_port, self._on_event, timeout=config.rpc_timeout_s
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Child | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._restarts = 0  # of snapservers replaced since start (a settings change starts a new one)
        self._client: Child | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._client_argv: list[str] = []
        self._unit_client_on: bool | None = None
        self._unit_opts = ""
        self._multiroom = False
        self._output = ""
        self._active = "none"
        self._connected = False
        self._epoch = 0  # control connections made so far
        self._refresh_wanted = False
        self._status_epoch = -1  # the connection whose full status is loaded
        self._checked: set[str] = set()  # clients looked at since this connection was made
        # Unknown clients in the very first status were there before Milo: taken as they are.
        self._adopting = True
        # After snapserver died (not restarted on purpose), what it reports is its last clean save:
        # every client gets back what Milo last saw.
        self._restarting = False
        # snapclient 0.26 can hang for good (no more reconnection attempts) when its server goes away
        # during its handshake: a second settings change right after a restart did that to about one
        # client in ten here. So restarts are spaced by `settle_s`; changes meanwhile are coalesced.
        self._started_at = 0.0
        self._pending_restart: asyncio.Task[None] | None = None
        self._restart_epoch: int | None = None  # the control connection up when the last restart began
        self._lost_unexpectedly = False
        self._restore_all = False
        self._failure: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._first_status = asyncio.Event()
        self._save_wanted = asyncio.Event()

    # Life ------------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        c = self.config
        if c.manage == "child" and shutil.which(c.snapserver) is None:
            raise SubsystemUnavailableError(f"{c.snapserver} is not installed (apt install snapserver)")
        if c.manage != "systemd" and c.local_client and shutil.which(c.snapclient) is None:
            raise SubsystemUnavailableError(f"{c.snapclient} is not installed (apt install snapclient)")
        unknown = sorted(set(c.streams) - {s.name for s in self.ctx.node.sources})
        if unknown:
            self.log.warning("multiroom: streams names sources the node does not have: %s", unknown)

    async def setup(self) -> None:
        self.state = self._build()
        if self.config.manage != "external":
            self._write_conf()
        if self.config.manage == "child":
            self._start_server()
        elif self.config.manage == "systemd":
            await self._unit("snapserver.service").start()
        self._started_at = asyncio.get_running_loop().time()
        self._tasks.append(asyncio.create_task(self._control.run(), name="multiroom-control"))
        # The first retained state lists the clients already (a few ms when the server runs).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_STATUS_TIMEOUT):
                while not self._first_status.is_set():
                    await self._wake.wait()
                    self._wake.clear()
                    if self._server is not None and self._server.last_exit:
                        break  # it cannot start (no Loopback?): no status to wait for, the node goes on
                    await self._settle()
        self.state = self._build()

    async def run(self) -> None:
        self._tasks += [
            asyncio.create_task(self._work(), name="multiroom-work"),
            asyncio.create_task(self._save_loop(), name="multiroom-save"),
        ]
        for task in self._tasks:
            self._watch(task)
        self._wake.set()
        await self._failed()

    def _failed(self) -> asyncio.Future[None]:
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A task of ours that ends by itself (a program that cannot be started) crashes the subsystem."""

        def ended(done: asyncio.Task[None]) -> None:
            if done.cancelled() or self._failed().done():
                return
            exc = done.exception() or DaemonError(f"{done.get_name()} ended")
            self._failed().set_exception(exc)

        task.add_done_callback(ended)

    async def teardown(self) -> None:
        tasks = [*self._tasks, self._server_task, self._client_task, self._pending_restart]
        self._tasks, self._server_task, self._client_task = [], None, None
        self._pending_restart = None
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        if self.config.manage == "systemd":
            with contextlib.suppress(DaemonError):
                await self._unit("snapclient.service").stop()
        self._remember(save_now=True)

    async def on_config(self, old: MultiroomConfig, new: MultiroomConfig) -> bool:
        return False  # ports, programs, streams: start afresh with them

    # The server ------------------------------------------------------------------------------------
    def _streams(self) -> list[Stream]:
        c = self.config
        out = []
        for source in self.ctx.node.sources:
            if source.name in c.streams:
                out.append(Stream(source.name, c.streams[source.name]))
            else:
                device = f"hw:{c.loopback_card},{c.loopback_capture_device},{source.subdevice}"
                out.append(alsa_stream(source.name, device))
        return out

    def _write_conf(self) -> Path:
        c, s = self.config, self.data.settings
        self._dir.mkdir(parents=True, exist_ok=True)
        conf = ServerConfig(
            datadir=str(self._dir.resolve()),
            streams=self._streams(),
            bind=c.bind,
            stream_port=c.stream_port,
            control_port=c.control_port,
            http_port=c.http_port,
            sample_format=c.sample_format,
            codec=s.codec,
            chunk_ms=s.chunk_ms,
            buffer_ms=s.buffer_ms,
        )
        path = self._dir / "snapserver.conf"
        write_atomic(path, render_server_conf(conf).encode())
        return path

    def _backoff(self) -> Backoff:
        return Backoff(first=self.config.restart_first_s, cap=self.config.restart_cap_s, healthy=30.0)

    def _start_server(self) -> None:
        if self._server is not None:
            self._restarts += self._server.restarts
        argv = [self.config.snapserver, "-c", str(self._dir / "snapserver.conf")]
        self._server = Child(
            "snapserver",
            lambda: argv,
            log=self.log,
            backoff=self._backoff(),
            on_exit=lambda _code, _delay: self._wake.set(),
        )
        self._server_task = asyncio.create_task(self._server.run(), name="multiroom-snapserver")
        self._watch(self._server_task)

    async def _restart_server(self) -> None:
        self._write_conf()
        if self._pending_restart is not None:
            return  # the restart already waiting reads the file just written
        wait = self._started_at + self.config.settle_s - asyncio.get_running_loop().time()
        if wait <= 0:
            await self._restart_now()
            return
        self.log.info("multiroom: new settings; snapserver restarts in %.1f s", wait)
        self._pending_restart = asyncio.create_task(self._restart_later(wait), name="multiroom-restart")

    async def _restart_later(self, wait: float) -> None:
        await asyncio.sleep(wait)  # spacing restarts, see __init__
        try:
            await self._restart_now()
        except DaemonError as exc:
            self.log.warning("multiroom: could not restart snapserver: %s", exc)
        finally:
            self._pending_restart = None
            self._wake.set()

    async def _restart_now(self) -> None:
        self._restarting = True
        self._restart_epoch = self._epoch
        self._started_at = asyncio.get_running_loop().time()
        if self.config.manage == "systemd":
            await self._unit("snapserver.service").restart()
            return
        task, self._server_task = self._server_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._start_server()

    def _unit(self, unit: str) -> SystemdUnit:
        return SystemdUnit(unit, systemctl=self.config.systemctl)

    # Events from the server (synchronous, in the order it sent them) -----------------------------
    def _on_event(self, event: Event) -> None:
        if event.kind == "connected":
            self._connected = True
            self._epoch += 1
            self._checked.clear()
            self._refresh_wanted = True
            self._restore_all = self._lost_unexpectedly and self.config.manage != "external"
            self._lost_unexpectedly = self._restarting = False
        elif event.kind == "lost":
            self._connected = False
            self._lost_unexpectedly = not self._restarting
            self.table.mark_disconnected()
        elif not self.table.apply(event.method, event.params):
            self._refresh_wanted = True
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._settle()
            await self._sync_local_client()
            self._remember()
            self.state = self._build()
            await self.publish_state()

    async def _settle(self) -> None:
        """Load what is missing, then make the server what Milo wants: streams, new clients, lost ones."""
        if not self._connected:
            return
        try:
            if self._refresh_wanted:
                self._refresh_wanted = False
                epoch = self._epoch
                try:
                    await self._control.call("Server.GetStatus", None, self._load)
                except BaseException:
                    # Not loaded (a timeout, or setup's wait running out): ask again soon.
                    self._refresh_wanted = True
                    asyncio.get_running_loop().call_later(0.5, self._wake.set)
                    raise
                self._status_epoch = epoch
                self._first_status.set()
            await self._welcome_clients()
            await self._follow_stream()
        except SnapcastError as exc:
            self.log.info("multiroom: %s", exc)

    def _load(self, result: Any) -> None:
        if isinstance(result, dict) and isinstance(result.get("server"), dict):
            self.table.load(result["server"])

    async def _welcome_clients(self) -> None:
        """Each client the first time this connection shows it: a new one starts at the mean of the
        others; a known one gets back what snapserver lost (0.26 writes server.json only on a clean
        stop, so a crash brings back older settings, or none: `PRISTINE`)."""
        for client in list(self.table.clients.values()):
            if client.id in self._checked:
                continue
            self._checked.add(client.id)
            known = self.data.clients.get(client.id)
            if known is None:
                if not self._adopting:
                    await self._start_volume(client)
                continue
            mine = _remembered(client)
            if mine == known or not (self._restore_all or mine.model_dump() == PRISTINE):
                continue
            self.log.info("multiroom: giving %s back its settings (snapserver lost them)", client.id)
            if (mine.volume, mine.muted) != (known.volume, known.muted):
                await self._set_volume(client, known.volume, known.muted)
            if mine.latency != known.latency:
                await self._set_latency(client, known.latency)
            if mine.name != known.name:
                await self._set_name(client, known.name)
        self._adopting = False

    async def _start_volume(self, client: Client) -> None:
        others = [
            c.volume
            for c in self.table.clients.values()
            if c.id != client.id and c.connected and not self._muted(c)
        ]
        volume = _round(statistics.fmean(others)) if others else self.config.initial_volume
        if volume is not None and volume != client.volume:
            self.log.info("multiroom: new client %s starts at %d %%", client.id, volume)
            await self._set_volume(client, volume, client.muted)

    def _muted(self, client: Client) -> bool:
        group = self.table.group_of(client)
        return client.muted or bool(group and group.muted)

    def _target_stream(self) -> str | None:
        if self._active in self.table.streams:
            return self._active
        return self.data.stream if self.data.stream in self.table.streams else None

    async def _follow_stream(self) -> None:
        """Every group plays the active source's stream: whatever plays here plays in every room."""
        target = self._target_stream()
        if target is None:
            return
        for group in list(self.table.groups.values()):
            if group.stream != target:

                def done(_: Any, group_id: str = group.id) -> None:
                    if group_id in self.table.groups:
                        self.table.groups[group_id].stream = target

                await self._control.call("Group.SetStream", {"id": group.id, "stream_id": target}, done)

    # The local client ------------------------------------------------------------------------------
    def _local_argv(self, logsink: str | None = "stderr") -> list[str]:
        c = self.config
        soundcard = c.client_soundcard or self._output or "default"
        if not c.client_soundcard and soundcard.startswith("hw:"):
            # Every source has moved to the Loopback: the client has the DAC to itself, and a plug
            # converts 48000:16:2 to whatever the card takes.
            soundcard = "plug" + soundcard
        return client_argv(
            c.snapclient,
            host="127.0.0.1" if c.manage != "external" else c.server_host,
            port=c.stream_port,
            host_id=self.host_id,
            soundcard=soundcard,
            player=c.client_player,
            mixer=c.client_mixer,
            latency=c.client_pcm_latency,
            logsink=logsink,
        )

    async def _sync_local_client(self) -> None:
        want = self._multiroom and self.config.local_client
        if self.config.manage == "systemd":
            await self._sync_client_unit(want)
            return
        argv = self._local_argv() if want else []
        if argv == self._client_argv and (self._client_task is None) == (not want):
            return
        task, self._client_task = self._client_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._client, self._client_argv = None, argv
        if want:
            self._client = Child("snapclient", lambda: argv, log=self.log, backoff=self._backoff())
            self._client_task = asyncio.create_task(self._client.run(), name="multiroom-snapclient")
            self._watch(self._client_task)

    async def _sync_client_unit(self, want: bool) -> None:
        # The unit reads its options from the data dir, so the node can point it at another card.
        opts = " ".join(self._local_argv(logsink=None)[1:])  # the unit adds --logsink=system
        if (want, opts) == (self._unit_client_on, self._unit_opts):
            return
        write_atomic(self.ctx.node.data_dir / "snapclient.env", f"SNAPCLIENT_OPTS={opts}\n".encode())
        unit = self._unit("snapclient.service")
        try:
            if want and self._unit_client_on:
                await unit.restart()  # running with other options
            else:
                await (unit.start() if want else unit.stop())
        except DaemonError as exc:
            self.log.warning("multiroom: %s", exc)
            return
        self._unit_client_on, self._unit_opts = want, opts

    # Commands --------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        word = text.strip().lower()
        if word in PRESETS:
            return {"preset": word}
        if word in ("on", "off"):
            return {"enabled": word == "on"}
        presets = ", ".join(PRESETS)
        raise CommandError("invalid_payload", f"{text[:40]!r}: expected a preset ({presets}), on, off, JSON")

    async def on_command(self, command: Any) -> None:
        if not isinstance(command, MultiroomCommand):
            raise CommandError("invalid_payload", "expected {preset | buffer_ms, codec, chunk_ms | enabled}")
        if command.enabled is not None:
            payload = json.dumps({"multiroom": command.enabled}).encode()
            await self.ctx.bus.publish(self.ctx.topics.of("routing/set"), payload)
        wanted = self.data.settings
        if command.preset is not None:
            wanted = PRESETS[command.preset]
        else:
            fields = command.model_dump(include=set(Settings.model_fields))
            given = {k: v for k, v in fields.items() if v is not None}
            wanted = wanted.model_copy(update=given)
        wanted = Settings.model_validate(wanted.model_dump())
        if wanted.codec == "opus" and not self.config.sample_format.startswith("48000:"):
            raise CommandError("invalid_payload", "opus takes 48 kHz only: change sample_format first")
        if wanted != self.data.settings:
            if self.config.manage == "external":
                raise CommandError("read_only", "snapserver is run by someone else: read-only here")
            self.data = self.data.model_copy(update={"settings": wanted})
            self.save_data()
            await self._restart_server()
        self.state = self._build()
        await self.publish_state(force=True)

    async def on_topic(self, message: Message, path: str) -> None:
        if path == "routing":
            routing = read_view(RoutingView, message.payload, self.log)
            if routing is not None:
                self._multiroom, self._output = routing.multiroom, routing.output
        elif path == "source":
            source = read_view(ActiveSourceView, message.payload, self.log)
            if source is not None and source.active != self._active:
                self._active = source.active
                if source.active in self.table.streams and source.active != self.data.stream:
                    self.data = self.data.model_copy(update={"stream": source.active})
                    self._save_wanted.set()
        elif path.startswith("multiroom/client/") and path.endswith("/set"):
            await self._client_message(message, path.removeprefix("multiroom/client/").removesuffix("/set"))
            return
        self._wake.set()

    async def _client_message(self, message: Message, key: str) -> None:
        if message.retain and not message.payload:
            return  # someone clearing a retained command off the broker: nothing to answer
        try:
            _not_retained(message)
            value = decode_command(message.payload)
            if isinstance(value, str):
                value = self._client_text(value)
            try:
                command = CLIENT_COMMAND.validate_python(value)
            except ValidationError as exc:
                raise CommandError("invalid_payload", format_validation(exc, ClientChange)) from exc
            await self._client_command(key, command)
        except CommandError as exc:
            await self.ctx.report(message.topic, message.payload, exc.code, exc.message)

    @staticmethod
    def _client_text(text: str) -> Any:
        word = text.strip().lower()
        if RELATIVE.match(word) and float(word).is_integer():
            return {"delta": int(float(word))}
        if word.isdigit():
            return int(word)
        return word

    async def _client_command(self, key: str, command: Any) -> None:
        client = self.table.by_key(key)
        if client is None:
            known = ", ".join(sorted(c.id for c in self.table.states(self.host_id))) or "none"
            raise CommandError("unknown_client", f"no multiroom client {key!r} (known: {known})")
        if isinstance(command, int):
            command = ClientChange(volume=command)
        elif isinstance(command, str):
            muted = not self._muted(client) if command == "toggle_mute" else command == "mute"
            command = ClientChange(muted=muted)
        assert isinstance(command, ClientChange)
        buffer = self.data.settings.buffer_ms
        if command.latency is not None and command.latency > buffer:
            over = f"latency {command.latency} ms is over the buffer ({buffer} ms)"
            raise CommandError("invalid_payload", over)
        try:
            if command.forget:
                await self._forget(client)
            if command.name is not None:
                await self._set_name(client, command.name)
            volume = command.volume
            if command.delta is not None:
                volume = min(100, max(0, client.volume + command.delta))
            if volume is not None or command.muted is not None:
                await self._set_volume(client, client.volume if volume is None else volume, command.muted)
            if command.latency is not None:
                await self._set_latency(client, command.latency)
        except NotConnectedError as exc:
            raise CommandError("unavailable", f"snapserver is not reachable: {exc}") from exc
        except SnapcastError as exc:
            code = "unknown_client" if exc.data == "Client not found" else "snapcast_error"
            raise CommandError(code, f"snapserver: {exc}") from exc
        self._remember()
        self.state = self._build()
        await self.publish_state(force=True)  # the echo that acknowledges it

    # Changes on the server (each folds its result into the table in order) ------------------------
    async def _set_volume(self, client: Client, volume: int, muted: bool | None) -> None:
        params: dict[str, Any] = {"percent": volume}
        if muted is not None:
            params["muted"] = muted

        def done(result: Any) -> None:
            got = result.get("volume") if isinstance(result, dict) else None
            now = self.table.clients.get(client.id)  # a Server.OnUpdate may have replaced it meanwhile
            if isinstance(got, dict) and now is not None:
                now.volume = min(100, max(0, int(got.get("percent", volume))))
                now.muted = bool(got.get("muted", now.muted))

        await self._control.call("Client.SetVolume", {"id": client.id, "volume": params}, done)
        group = self.table.group_of(client)
        if muted is False and group is not None and group.muted:
            # Muted by its group (another controller's group mute): unmuting the client must be heard.
            def unmuted(_: Any) -> None:
                if group.id in self.table.groups:
                    self.table.groups[group.id].muted = False

            await self._control.call("Group.SetMute", {"id": group.id, "mute": False}, unmuted)

    async def _set_latency(self, client: Client, latency: int) -> None:
        def done(result: Any) -> None:
            now = self.table.clients.get(client.id)
            if isinstance(result, dict) and isinstance(result.get("latency"), int) and now is not None:
                now.latency = result["latency"]

        await self._control.call("Client.SetLatency", {"id": client.id, "latency": latency}, done)

    async def _set_name(self, client: Client, name: str) -> None:
        def done(result: Any) -> None:
            now = self.table.clients.get(client.id)
            if isinstance(result, dict) and isinstance(result.get("name"), str) and now is not None:
                now.name = result["name"]

        await self._control.call("Client.SetName", {"id": client.id, "name": name}, done)

    async def _forget(self, client: Client) -> None:
        if client.connected:
            raise CommandError("connected", f"{client.id} is connected: only a gone client can be forgotten")
        await self._control.call("Server.DeleteClient", {"id": client.id}, self._load)
        self.data.clients.pop(client.id, None)
        self._save_wanted.set()

    # State and memory ------------------------------------------------------------------------------
    def _server_status(self) -> ServerStatus:
        if self._connected:
            return "running" if self._status_epoch == self._epoch else "starting"
        if self.config.manage == "external":
            return "unreachable"
        return "restarting" if self._epoch else "starting"

    def _build(self) -> MultiroomState:
        c, s = self.config, self.data.settings
        server = self._server
        error = None if self._connected else (self._control.last_error or None)
        if server is not None and server.last_exit and not self._connected:
            error = server.last_exit
        return MultiroomState(
            enabled=self._multiroom,
            server=self._server_status(),
            version=self.table.version,
            managed=c.manage,
            error=error,
            restarts=self._restarts + (server.restarts if server is not None else 0),
            # Until the status of a connection made after the restart is loaded.
            applying=self._pending_restart is not None
            or (self._restart_epoch is not None and self._status_epoch <= self._restart_epoch),
            stream_port=c.stream_port,
            control_port=c.control_port,
            settings=ServerSettings(**s.model_dump(), preset=preset_of(s), sample_format=c.sample_format),
            stream=self._target_stream(),
            streams=self.table.stream_states(),
            local_client=self.host_id,
            local_running=self._client_task is not None or bool(self._unit_client_on),
            clients=self.table.states(self.host_id),
        )

    def _remember(self, *, save_now: bool = False) -> None:
        """Keep each looked-at client's settings, to give them back if snapserver loses them."""
        changed = False
        clients = dict(self.data.clients)
        for client in self.table.clients.values():
            if client.id not in self._checked:
                continue  # not yet compared with what was remembered: it may be a crash's blank
            now = _remembered(client)
            if clients.get(client.id) != now:
                clients[client.id] = now
                changed = True
        if changed:
            self.data = self.data.model_copy(update={"clients": clients})
            self._save_wanted.set()
        if save_now and self._save_wanted.is_set():
            self._save()

    async def _save_loop(self) -> None:
        while True:
            await self._save_wanted.wait()
            await asyncio.sleep(SAVE_DELAY)
            self._save()

    def _save(self) -> None:
        self._save_wanted.clear()
        try:
            self.save_data()
        except OSError:
            self.log.exception("multiroom: could not save the clients' settings")
