"""The `roc` source: a Mac's roc-vad stream played by roc-recv, behind a node relay that sees who sends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node.adapters.alsa import alias_name
from node.adapters.child import Child, describe_exit, executable
from node.adapters.roc import RocPorts, RocRelay, free_udp_ports, recv_argv, sender_name, wait_bound
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.sources import Source, SourceCommand, SourceConfig, SourceState, Transport, commands_of

INSTALL_HINT = "build roc-toolkit 0.4 on the Pi (README: Spotify and ROC), or set roc.binary"
UNIT = "roc-recv.service"


class RocSenderInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    name: str | None = Field(default=None, description="its mDNS name, else its reverse DNS name")
    since: float = Field(description="epoch seconds it started streaming")


class RocState(SourceState):
    """Retained `source/roc`: `playing` while a sender streams, with who it is."""

    sender: str | None = Field(default=None, description="the address of the sender being played")
    sender_name: str | None = None
    senders: list[RocSenderInfo] = Field(default_factory=list, description="everyone streaming now")
    device: str = Field(default="", description="the ALSA PCM roc-recv plays into")
    restarts: int = Field(default=0, description="times roc-recv died and was started again")


class RocConfig(SourceConfig):
    """`[roc]`: the ports a Mac sends to, roc-recv, and how senders are told apart."""

    binary: str = Field(default="roc-recv", max_length=1000, description="its path, or a name on PATH")
    manage: Literal["child", "systemd"] = Field(
        default="child",
        description="child: the node starts it (moves without a gap); systemd: roc-recv.service runs it",
    )
    bind: str = Field(default="0.0.0.0", max_length=255, description="where the Mac's packets arrive")
    source_port: int = Field(default=10001, ge=1, le=65535, description="RTP + RS8M source packets")
    repair_port: int = Field(default=10002, ge=1, le=65535, description="RS8M repair packets")
    control_port: int = Field(default=10003, ge=1, le=65535, description="RTCP")
    unit_ports: list[int] = Field(
        default_factory=lambda: [10011, 10012, 10013],
        min_length=3,
        max_length=3,
        description="with manage = systemd: the unit's loopback ports (source, repair, control)",
    )
    sender_timeout_s: float = Field(
        default=1.5, gt=0, le=60, description="silence after which a sender is gone"
    )
    handover_s: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="on a routing move, how long the old receiver plays out its buffer",
    )
    resolve_names: bool = Field(default=True, description="look senders' names up (mDNS, then reverse DNS)")
    mdns_port: int = Field(default=5353, ge=1, le=65535)
    target_latency_ms: int = Field(
        default=0, ge=0, le=10_000, description="roc-recv --target-latency; 0: auto"
    )
    extra_args: list[str] = Field(default_factory=list, max_length=20, description="more roc-recv options")
    start_timeout_s: float = Field(
        default=5, gt=0, le=60, description="for a started roc-recv to bind its ports"
    )


@dataclass(eq=False)
class _Receiver:
    """One roc-recv the node runs: the PCM it plays into and the loopback ports it listens on."""

    child: Child
    task: asyncio.Task[None]
    ports: RocPorts
    pcm: str

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Roc(Source[RocState, RocConfig]):
    name = "roc"
    program = "roc-recv (behind the node's UDP relay)"
    loopback = 1
    unit = UNIT
    description = "audio from a Mac (roc-vad) through roc-recv; the sender's address and name"
    State = RocState
    Config = RocConfig
    Command = commands_of()

    _receiver: _Receiver | None

    # Lifecycle -------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        cfg = self.config
        if cfg.manage == "child" and executable(cfg.binary) is None:
            raise SubsystemUnavailableError(f"roc-recv not found ({cfg.binary}): {INSTALL_HINT}")
        # The public ports are the node's own (the relay): taken by another program, nothing can play.
        public = RocPorts(cfg.source_port, cfg.repair_port, cfg.control_port)
        self.relay = RocRelay(cfg.bind, public, timeout=cfg.sender_timeout_s, on_change=self._changed)
        try:
            await self.relay.start()
        except OSError as exc:
            raise SubsystemUnavailableError(f"cannot receive on {cfg.bind} ports {public}: {exc}") from None

    async def setup(self) -> None:
        cfg = self.config
        self._receiver = None
        self._retiring: set[_Receiver] = set()  # moved away from, playing out their buffer
        self._tasks: set[asyncio.Task[Any]] = set()
        self._names: dict[str, str | None] = {}
        self._want = ""  # the PCM the receiver should play into
        self._mover: asyncio.Task[None] | None = None
        self._receiver_error: str | None = None
        self._unit_pcm = ""  # with manage = systemd: the PCM the unit opened (milo_roc follows it)
        self.state = RocState(device=self._device())
        if cfg.manage == "systemd":
            self.relay.target = RocPorts(*cfg.unit_ports)
        await self._refresh()  # a sender that streamed before the node started is already heard

    async def run(self) -> None:
        if self.config.manage == "child":
            # Started once routing's retained state is in (priming): on its PCM, not moved at once.
            self._want = self._want or self._device()
            self._ensure_receiver()
        await super().run()

    async def teardown(self) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.close()
        for task in [*getattr(self, "_tasks", ()), getattr(self, "_mover", None)]:
            if task is not None:
                task.cancel()
        receivers = [getattr(self, "_receiver", None), *getattr(self, "_retiring", ())]
        for receiver in receivers:
            if receiver is not None:
                await receiver.stop()

    async def on_config(self, old: RocConfig, new: RocConfig) -> bool:
        if {k for k in RocConfig.model_fields if getattr(old, k) != getattr(new, k)} <= {"resolve_names"}:
            self._names.clear()
            await self._refresh()
            return True
        return False

    def _device(self) -> str:
        return self.pcm or alias_name(self.name)

    # The receiver ------------------------------------------------------------------------------------
    async def _start_receiver(self, pcm: str) -> _Receiver:
        """A roc-recv on fresh loopback ports, playing into `pcm`, once it listens (or the timeout)."""
        cfg = self.config
        ports = RocPorts(*free_udp_ports(3))
        binary = executable(cfg.binary) or cfg.binary
        extra = [
            *([f"--target-latency={cfg.target_latency_ms}ms"] if cfg.target_latency_ms else []),
            *cfg.extra_args,
        ]
        receiver: _Receiver | None = None

        async def died(code: int, delay: float) -> None:
            if receiver is self._receiver:
                self._receiver_error = (
                    f"roc-recv exited with {describe_exit(code)}; started again in {delay:.1f} s"
                )
                await self.set_state(restarts=self.state.restarts + 1)
                await self._refresh()

        async def started(pid: int) -> None:
            if receiver is self._receiver and self._receiver_error:
                self._receiver_error = None
                await self._refresh()

        child = Child(
            "roc-recv",
            lambda: recv_argv(binary, ports, pcm, extra=extra),
            log=self.log,
            on_start=started,
            on_exit=died,
        )
        task = asyncio.create_task(child.run(), name=f"roc-recv-{pcm}")
        receiver = _Receiver(child, task, ports, pcm)
        listening = [ports.source, ports.repair, ports.control]
        try:
            bound = await wait_bound(listening, cfg.start_timeout_s, alive=lambda: not task.done())
        except asyncio.CancelledError:
            await receiver.stop()  # torn down meanwhile: this one is nobody's
            raise
        if not bound:
            self.log.warning("roc: roc-recv on %s does not listen after %.0f s", pcm, cfg.start_timeout_s)
        return receiver

    async def move_to(self, pcm: str) -> None:
        self._want = pcm
        await self.set_state(device=pcm)
        if self.config.manage == "systemd":
            if self._unit_pcm and self._unit_pcm != pcm:
                self._spawn(self._restart_unit())
            self._unit_pcm = pcm
        elif self._receiver is not None:
            self._ensure_receiver()

    def _ensure_receiver(self) -> None:
        if self._mover is None or self._mover.done():
            self._mover = asyncio.create_task(self._move(), name="roc-move")

    async def _move(self) -> None:
        """Make before break: the new receiver takes the stream between two packets, the old plays out."""
        while self._receiver is None or self._receiver.pcm != self._want:
            started = time.monotonic()
            new = await self._start_receiver(self._want)
            old, self._receiver = self._receiver, new
            self.relay.target = new.ports
            listening = (time.monotonic() - started) * 1000
            self.log.info("roc: receiving into %s (roc-recv listening after %.0f ms)", new.pcm, listening)
            if old is not None:
                self._retiring.add(old)
                self._spawn(self._retire(old))

    async def _retire(self, old: _Receiver) -> None:
        await asyncio.sleep(self.config.handover_s)  # what it buffered is still being played
        await old.stop()
        self._retiring.discard(old)

    async def _restart_unit(self) -> None:
        # The unit plays into milo_roc, which follows the mode: a restart is the only way it moves.
        proc = await asyncio.create_subprocess_exec(
            "systemctl",
            "try-restart",
            UNIT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode:
            self.log.warning(
                "roc: systemctl try-restart %s failed: %s", UNIT, err.decode(errors="replace").strip()
            )

    # Senders -----------------------------------------------------------------------------------------
    def _changed(self) -> None:
        if getattr(self, "_tasks", None) is not None:  # before setup, setup's own refresh will see it
            self._spawn(self._refresh())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self) -> None:
        streaming = self.relay.streaming()
        if not streaming and not self.relay.forwarding:
            self.relay.forwarding = True  # a pause lasts until the stream ends; the next one plays
        senders = [
            RocSenderInfo(address=s.address, name=self._name(s.address), since=s.first_seen)
            for s in streaming
        ]
        state: Any = "idle"
        if self._receiver_error:
            state = "error"
        elif senders:
            state = "playing" if self.relay.forwarding else "paused"
        first = senders[0] if senders else None
        await self.set_state(
            state=state,
            error=self._receiver_error,
            sender=first.address if first else None,
            sender_name=first.name if first else None,
            senders=senders,
            title=(first.name or first.address) if first else None,
            artist=first.address if first and first.name else None,
            commands=commands_for(state),
        )

    def _name(self, address: str) -> str | None:
        if not self.config.resolve_names:
            return None
        if address not in self._names:
            self._names[address] = None
            self._spawn(self._resolve(address))
        return self._names[address]

    async def _resolve(self, address: str) -> None:
        name = await sender_name(address, mdns_port=self.config.mdns_port)
        if name:
            self._names[address] = name
            await self._refresh()

    # Commands ----------------------------------------------------------------------------------------
    async def transport(self, command: Transport) -> None:
        command = self.toggled(command)
        if command == "pause" and self.state.state == "playing":
            self.relay.forwarding = False  # the sender streams on; roc-recv gets nothing and plays silence
        elif command == "play" and self.state.state == "paused":
            self.relay.forwarding = True
        else:
            raise CommandError("unsupported", f"roc is {self.state.state}: it cannot {command} now")
        await self._refresh()

    async def on_get(self) -> None:
        await self._refresh()


def commands_for(state: str) -> list[SourceCommand]:
    if state == "playing":
        return ["pause"]
    if state == "paused":
        return ["play"]
    return []
