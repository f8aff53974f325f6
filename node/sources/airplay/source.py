"""The AirPlay source: shairport-sync always running, its metadata on `source/airplay`, remote control."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from node.adapters import shairport
from node.adapters.alsa import alias_name
from node.adapters.shairport import (
    BuildInfo,
    Dacp,
    Item,
    MetadataPipe,
    ShairportError,
    ShairportProcess,
    ShairportSettings,
    SystemdUnit,
)
from node.framework.backoff import Backoff
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.files import write_atomic
from node.http.logos import LogoError, LogoInfo, store_logo
from node.sources import Source, SourceCommand, Transport
from node.sources.airplay.models import AirplayConfig, AirplayData, AirplayState
from node.sources.airplay.session import Session

CONFIG_FILE = "shairport-sync.conf"
PIPE_FILE = "metadata"
UNIT = "shairport-sync.service"
PLAYING = ("playing", "buffering")


class Airplay(Source[AirplayState, AirplayConfig]):
    name = "airplay"
    program = "shairport-sync (AirPlay 1 receiver)"
    loopback = None  # the next free subdevice: the pinned ones never move
    unit = UNIT
    description = "AirPlay receiver (shairport-sync): now playing, cover art, remote control of the sender"
    State = AirplayState
    Config = AirplayConfig
    Data = AirplayData

    data: AirplayData

    # Lifecycle -------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        cfg = self.config
        self._pipe: MetadataPipe | None = None
        self._process: ShairportProcess | None = None
        self._unit = SystemdUnit(UNIT)
        try:
            self._build: BuildInfo = await shairport.build_info(cfg.program)
        except ShairportError as exc:
            raise SubsystemUnavailableError(str(exc)) from None
        if "metadata" not in self._build.options:
            raise SubsystemUnavailableError(
                f"{cfg.program} {self._build.version} was built without metadata support"
            )
        folder = self.ctx.node.data_dir / "airplay"
        # Reading before shairport-sync starts: it writes only while a reader is there.
        self._pipe = MetadataPipe(folder / PIPE_FILE)
        try:
            await self._pipe.open()
            changed = self._write_config(folder / CONFIG_FILE)
            await self._start(folder / CONFIG_FILE, restart_unit=changed)
        except ShairportError as exc:
            raise SubsystemUnavailableError(str(exc)) from None

    def _write_config(self, path: Path) -> bool:
        cfg = self.config
        text = shairport.render_config(
            ShairportSettings(
                name=self._announced(),
                pipe=path.with_name(PIPE_FILE),
                port=cfg.port,
                udp_port_base=cfg.udp_port_base,
                backend=cfg.backend,
                # The alias follows routing's mode: every reopen of the device lands on the current chain.
                output_device=cfg.output_device or alias_name(self.name),
                ignore_volume_control=not cfg.sender_volume,
                session_timeout_s=cfg.session_timeout_s,
                allow_interruption=cfg.allow_interruption,
            )
        ).encode()
        if path.exists() and path.read_bytes() == text:
            return False
        try:
            write_atomic(path, text)
        except OSError as exc:
            raise ShairportError(f"cannot write {path}: {exc}") from None
        return True

    async def _start(self, config: Path, *, restart_unit: bool) -> None:
        cfg = self.config
        if cfg.service == "systemd":
            if restart_unit or not await self._unit.active():
                await self._unit.restart()
            return
        self._process = ShairportProcess(cfg.program, config, cfg.port, start_timeout=cfg.start_timeout_s)
        await self._process.start()

    async def setup(self) -> None:
        self._session = Session()
        self._cover_url: str | None = None
        self._flushed = asyncio.Event()
        self._restart_request = asyncio.Event()
        self._restart_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.state = AirplayState(
            state="idle", name=self._announced(), device=self._device(), version=self._build.version
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read_pipe(), name="airplay-metadata")
            if self._process is not None:
                group.create_task(self._supervise(self._process), name="airplay-daemon")

    async def teardown(self) -> None:
        for task in list(getattr(self, "_tasks", ())):
            task.cancel()
        if getattr(self, "_process", None) is not None:
            assert self._process is not None
            await self._process.stop()
        if getattr(self, "_pipe", None) is not None:
            assert self._pipe is not None
            self._pipe.close()

    async def on_config(self, old: AirplayConfig, new: AirplayConfig) -> bool:
        return False  # a new config file, and shairport-sync started again with it

    def _announced(self) -> str:
        return self.config.name or self.ctx.node.node_id

    def _device(self) -> str:
        if self.config.output_device:
            return self.config.output_device
        return self.pcm or alias_name(self.name)

    # The daemon ------------------------------------------------------------------------------------
    async def _supervise(self, process: ShairportProcess) -> None:
        """Restart it when it dies (with backoff) or when asked; the sender's session ends either way."""
        cfg = self.config
        backoff = Backoff(first=cfg.restart_first_s, cap=cfg.restart_cap_s)
        while True:
            exited = asyncio.ensure_future(process.wait())
            asked = asyncio.ensure_future(self._restart_request.wait())
            await asyncio.wait([exited, asked], return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            if self._restart_request.is_set() and not exited.done():
                self._restart_request.clear()
                await process.stop()
                await self._restarted(process, delay=0.0)
                continue
            await exited
            reason = process.reason()
            delay = backoff.next(time.monotonic() - process.started_at)
            self.log.warning("airplay: %s; restarting it in %.1f s", reason, delay)
            self._session.end()
            await self._publish(state="unavailable", error=f"{reason}; restarting in {delay:.1f} s")
            await self._restarted(process, delay=delay)

    async def _restarted(self, process: ShairportProcess, *, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restart_request.clear()  # asked while it was dying: this start is the one asked for
        self._session.end()
        waiters, self._restart_waiters = self._restart_waiters, []
        try:
            await process.start()
        except ShairportError as exc:
            await self._publish(state="unavailable", error=str(exc))
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        await self._publish()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _restart(self) -> None:
        """shairport-sync started again: the only way to end a session the sender does not end itself."""
        if self._process is None:
            await self._unit.restart()
            self._session.end()
            await self._publish()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._restart_waiters.append(waiter)
        self._restart_request.set()
        async with asyncio.timeout(self.config.start_timeout_s + shairport.STOP_TIMEOUT_S + 1):
            await waiter

    # Metadata --------------------------------------------------------------------------------------
    async def _read_pipe(self) -> None:
        assert self._pipe is not None
        async for item in self._pipe.items():
            try:
                await self._on_item(item)
            except Exception:
                self.log.exception("airplay: handling metadata item %s/%s failed", item.type, item.code)
        raise ShairportError("the metadata pipe was closed")

    async def _on_item(self, item: Item) -> None:
        if item.type == "ssnc" and item.code == "pfls":
            self._flushed.set()
        changes = self._session.apply(item)
        if "cover" in changes:
            self._cover_url = await self._store_cover(self._session.cover)
        if changes:
            await self._publish()

    async def _publish(self, **changes: Any) -> None:
        s = self._session
        fields: dict[str, Any] = {
            "state": s.status,
            "sender": s.sender,
            "sender_address": s.address,
            "user_agent": s.user_agent,
            "remote": s.remote() is not None,
            "volume_db": s.volume_db,
            "title": s.track.title,
            "artist": s.track.artist,
            "album": s.track.album,
            "duration_ms": s.track.duration_ms,
            "position_ms": s.position_ms(),
            "cover_url": self._cover_url if s.status != "idle" else None,
            "commands": self._commands(),
            "error": None,
        }
        fields.update(changes)
        if fields["state"] == "unavailable":
            fields["commands"] = []
        await self.set_state(**fields)

    def _commands(self) -> list[SourceCommand]:
        status = self._session.status
        if status == "idle":
            return []
        commands: list[SourceCommand] = []
        if self._session.remote() is not None:
            commands.append("pause" if status in PLAYING else "play")
            commands += ["toggle", "next", "previous"]
        commands.append("stop")  # ends the session, remote or not
        return commands

    async def _store_cover(self, image: bytes | None) -> str | None:
        if image is None:
            return None
        logos = self.ctx.node.data_dir / "logos"
        try:
            info, new = await asyncio.to_thread(_store_new, image, logos)
        except LogoError as exc:
            self.log.info("airplay: cover art not kept: %s", exc.message)
            return None
        if new:
            # Only what this source wrote is ever removed: an uploaded station logo never is.
            self.data.covers = [*self.data.covers, info.name]
            while len(self.data.covers) > self.config.covers_kept:
                old = self.data.covers.pop(0)
                with contextlib.suppress(OSError):
                    (logos / old).unlink()
            self.save_data()
        return info.url

    # Commands --------------------------------------------------------------------------------------
    async def transport(self, command: Transport) -> None:
        s = self._session
        if s.status == "idle":
            raise CommandError("unsupported", "no AirPlay sender is connected")
        if command == "stop":
            try:
                await self._restart()
            except (ShairportError, TimeoutError) as exc:
                raise CommandError("unavailable", f"shairport-sync did not start again: {exc}") from None
            return
        remote = s.remote()
        if remote is None:
            raise CommandError(
                "unsupported", f"{s.sender or 'the sender'} offers no remote control; it can only be stopped"
            )
        await self._send(remote, command)
        # The echo; the sender's answer (a flush, a new track) arrives through the pipe.
        await self.publish_state(force=True)

    async def _send(self, remote: Dacp, command: str) -> None:
        try:
            await remote.send(command, timeout=self.config.remote_timeout_s)
        except ShairportError as exc:
            raise CommandError("remote_failed", str(exc)) from None

    # Routing ---------------------------------------------------------------------------------------
    async def move_to(self, pcm: str) -> None:
        await self.set_state(device=self._device())
        if self.config.output_device or self._session.status not in PLAYING:
            return  # the device is closed: it opens on the new chain by itself
        remote = self._session.remote()
        if remote is not None:
            self._spawn(self._reopen(remote))
        elif self.config.restart_to_move:
            self._spawn(self._restart())
        # else the move happens at the sender's next pause, skip or seek

    async def _reopen(self, remote: Dacp) -> None:
        """A pause closes the ALSA device, the resume opens it again: on the new chain, session kept."""
        try:
            self._flushed.clear()
            await remote.send("pause", timeout=self.config.remote_timeout_s)
            async with asyncio.timeout(self.config.remote_timeout_s):
                await self._flushed.wait()
            await remote.send("play", timeout=self.config.remote_timeout_s)
        except (ShairportError, TimeoutError) as exc:
            self.log.warning("airplay: could not move the sender by pause and resume: %s", exc)
            if self.config.restart_to_move:
                await self._restart()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.warning("airplay: moving to %s failed: %s", self.state.device, task.exception())


def _store_new(image: bytes, logos: Path) -> tuple[LogoInfo, bool]:
    """The cover stored as a logo, and whether this call wrote it (a thread: Pillow is blocking)."""
    before = {p.name for p in logos.iterdir()} if logos.is_dir() else set()
    logos.mkdir(parents=True, exist_ok=True)
    info = store_logo(image, logos)
    return info, info.name not in before
