"""The `volume` subsystem: one ALSA mixer control as a 0-100 % volume with mute, or the multiroom master."""

# Over 500 lines on purpose: one job (a control, bursts of commands, the multiroom master) that reads
# better whole than split across modules that would each need the others' state.

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)

from node.adapters.mixer import MixerControl, open_control
from node.framework.bus import Message
from node.framework.errors import CommandError, DaemonError, SubsystemUnavailableError
from node.framework.payloads import RELATIVE
from node.framework.subsystem import Context, Subsystem, SubsystemConfig
from node.framework.views import MultiroomClientView, MultiroomView, RoutingView, read_view

# During a burst (a knob, a slider drag) the state goes out at most once per interval, and the
# value reached at the end of the burst always goes out last.
PUBLISH_INTERVAL = 0.02
# Data is written this long after the first unsaved change: a knob turn costs one fsync'd file,
# not one per detent.
SAVE_DELAY = 1.0
# A client volume we commanded counts over the one the multiroom state reports until the report
# catches up or the command is this old (the client may have refused it).
PENDING_TTL = 2.0
KEYWORDS = ("mute", "unmute", "toggle_mute", "up", "down")


def _round(x: float) -> int:
    """Half up, the same way for every value (`round` goes to even: 0.5 -> 0 but 1.5 -> 2)."""
    return math.floor(x + 0.5)


# Models -------------------------------------------------------------------------------------------
class VolumeState(BaseModel):
    """Retained `<base>/volume`: what the mixer holds now (or, in multiroom, the clients' master)."""

    model_config = ConfigDict(extra="forbid")

    percent: int = Field(default=0, ge=0, le=100, description="0-100 over the ALSA window")
    muted: bool = False
    limit_max: int = Field(default=100, description="highest percent a command may set")
    step: int = Field(default=5, description="percent moved by `up` / `down`")
    device: str = Field(default="", description="ALSA ctl device in use, e.g. hw:sndrpihifiberry, pulse")
    control: str = Field(default="", description="mixer control in use, e.g. Digital, Master")
    raw: int = Field(default=0, description="the control's raw value now")
    raw_min: int = Field(default=0, description="the control's raw range")
    raw_max: int = 0
    window_raw_min: int = Field(default=0, description="raw value of 0 %")
    window_raw_max: int = Field(default=0, description="raw value of 100 %")
    steps: int = Field(default=0, description="raw steps between 0 % and 100 %")
    multiroom: bool = Field(default=False, description="percent is the mean of the multiroom clients")


class VolumeConfig(SubsystemConfig):
    device: str = Field(
        default="", max_length=200, description="ALSA ctl device (hw:sndrpihifiberry, pulse); empty: auto"
    )
    control: str = Field(default="", max_length=100, description="mixer control (Digital); empty: auto")
    window_min: float = Field(
        default=0.0, ge=0.0, le=100.0, description="0 % is this far up the control's raw range, in %"
    )
    window_max: float = Field(
        default=100.0, ge=0.0, le=100.0, description="100 % is this far up the control's raw range, in %"
    )
    limit_max: int = Field(default=100, ge=1, le=100, description="highest percent a command may set")
    step: int = Field(default=5, ge=1, le=50, description="percent moved by `up` / `down`")
    startup: Literal["restore", "fixed"] = Field(
        default="restore", description="at start: the last applied volume, or startup_percent"
    )
    startup_percent: int = Field(
        default=30, ge=0, le=100, description="volume at start when startup = fixed (capped by limit_max)"
    )

    @model_validator(mode="after")
    def _window(self) -> VolumeConfig:
        if self.window_min >= self.window_max:
            raise ValueError(f"window_min ({self.window_min}) must be below window_max ({self.window_max})")
        return self


class VolumeData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: int | None = Field(default=None, ge=0, le=100)
    muted: bool = False


Percent = Annotated[int, Field(ge=0, le=100, description="absolute volume")]
Keyword = Literal["mute", "unmute", "toggle_mute", "up", "down"]


class VolumeChange(BaseModel):
    """The JSON form of a command: `{"percent": 40}`, `{"delta": -2}`, `{"muted": true}`, or a mix."""

    model_config = ConfigDict(extra="forbid")

    percent: Percent | None = None
    delta: int | None = Field(default=None, ge=-100, le=100, description="relative change in percent")
    muted: bool | None = None

    @model_validator(mode="after")
    def _one_volume(self) -> VolumeChange:
        if self.percent is not None and self.delta is not None:
            raise ValueError("give percent or delta, not both")
        if self.percent is None and self.delta is None and self.muted is None:
            raise ValueError("give percent, delta or muted")
        return self


def _form(value: Any) -> str | None:
    # bool is an int to Python and pydantic: `true` must not mean 1 %.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "percent"
    if isinstance(value, dict | VolumeChange):
        return "change"
    if isinstance(value, str):
        return "keyword"
    return None


VolumeCommand = Annotated[
    Annotated[Percent, Tag("percent")]
    | Annotated[VolumeChange, Tag("change")]
    | Annotated[Keyword, Tag("keyword")],
    Discriminator(
        _form,
        custom_error_type="invalid_command",
        custom_error_message="expected a percent, +N/-N, a keyword or a JSON object",
    ),
]


@dataclass
class _Pending:
    volume: int
    muted: bool
    at: float


# ALSA ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """Percent <-> raw: 0-100 % maps linearly onto the window [low, high] of the control's raw range."""

    raw_min: int
    raw_max: int
    low: int
    high: int

    @classmethod
    def of(cls, raw_min: int, raw_max: int, window_min: float, window_max: float) -> Scale:
        span = raw_max - raw_min
        return cls(
            raw_min,
            raw_max,
            raw_min + _round(span * window_min / 100),
            raw_min + _round(span * window_max / 100),
        )

    @property
    def steps(self) -> int:
        return self.high - self.low

    def to_raw(self, percent: int) -> int:
        return self.low + _round(self.steps * percent / 100)

    def to_percent(self, raw: int) -> int:
        return min(100, max(0, _round((raw - self.low) * 100 / self.steps)))


# The subsystem ------------------------------------------------------------------------------------
class Volume(Subsystem[VolumeState, VolumeConfig]):
    """The node's one volume: commands apply to the mixer at once; the state follows, coalesced."""

    name = "volume"
    description = "volume and mute of the DAC's mixer control, or the master of the multiroom clients"
    State = VolumeState
    Config = VolumeConfig
    Data = VolumeData
    Command = TypeAdapter(VolumeCommand)
    watches = ("routing", "multiroom")
    data: VolumeData

    def __init__(self, ctx: Context, config: VolumeConfig) -> None:
        super().__init__(ctx, config)
        self._mixer: MixerControl | None = None
        self._scale = Scale(0, 1, 0, 1)
        # Local mixer: what the latest command asked for, and what the mixer was last set to / read at.
        self._target: tuple[int, bool] = (0, False)
        self._applied: tuple[int, bool] = (0, False)
        self._raw = 0
        self._switch_muted = False
        self._saved: tuple[int | None, bool] = (self.data.percent, self.data.muted)
        self._set_up = False
        self._multiroom = False
        self._clients: dict[str, MultiroomClientView] = {}
        self._pending: dict[str, _Pending] = {}
        self._outbox: dict[str, dict[str, Any]] = {}
        self._write_wanted = asyncio.Event()
        self._publish_wanted = asyncio.Event()
        # The next coalesced publish goes out even unchanged: it acknowledges the commands before it.
        self._echo_wanted = False
        self._save_wanted = asyncio.Event()
        self._failure: asyncio.Future[None] | None = None
        self._readers: list[int] = []

    # Life ------------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        self._mixer = open_control(self.config.device, self.config.control)
        self._scale = Scale.of(
            self._mixer.raw_min, self._mixer.raw_max, self.config.window_min, self.config.window_max
        )
        if self._scale.steps < 1:
            raise SubsystemUnavailableError(
                f"the window {self.config.window_min}-{self.config.window_max} % of "
                f"{self._mixer.control!r} (raw {self._mixer.raw_min}..{self._mixer.raw_max}) holds no step"
            )

    async def setup(self) -> None:
        mixer = self._require_mixer()
        self._raw, self._switch_muted = mixer.read()
        current = self._scale.to_percent(self._raw), self._switch_muted
        self._applied = current
        if self.config.startup == "fixed":
            wanted = self.config.startup_percent, False
        elif self.data.percent is not None:
            wanted = self.data.percent, self.data.muted
        else:
            wanted = current
        self._target = min(wanted[0], self.config.limit_max), wanted[1]
        self._write()
        self._set_up = True
        self.state = VolumeState(
            percent=self._applied[0],
            muted=self._applied[1],
            limit_max=self.config.limit_max,
            step=self.config.step,
            device=mixer.device,
            control=mixer.control,
            raw=self._raw,
            raw_min=self._scale.raw_min,
            raw_max=self._scale.raw_max,
            window_raw_min=self._scale.low,
            window_raw_max=self._scale.high,
            steps=self._scale.steps,
            multiroom=self._multiroom,
        )
        self._publish_wanted.clear()  # the runner publishes this first state itself

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        # Changes made by others (amixer, go-librespot, snapclient) arrive as ALSA ctl events.
        for fd in self._require_mixer().fds():
            loop.add_reader(fd, self._on_mixer_event)
            self._readers.append(fd)
        tasks = [
            asyncio.create_task(self._write_loop(), name="volume-write"),
            asyncio.create_task(self._publish_loop(), name="volume-publish"),
            asyncio.create_task(self._save_loop(), name="volume-save"),
        ]
        try:
            done, _ = await asyncio.wait([self._failure, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()
            raise DaemonError("the volume loops ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._remove_readers()

    async def teardown(self) -> None:
        self._remove_readers()
        if self._set_up:
            try:
                self._save()
            except OSError:
                self.log.exception("volume: could not save the last volume")
        if self._mixer is not None:
            self._mixer.close()
            self._mixer = None

    async def on_config(self, old: VolumeConfig, new: VolumeConfig) -> bool:
        if (new.device, new.control) != (old.device, old.control):
            return False  # another control: detect and open it afresh
        scale = Scale.of(self._scale.raw_min, self._scale.raw_max, new.window_min, new.window_max)
        if scale.steps < 1:
            return False  # the restart reports why as `unavailable`
        self._scale = scale
        self._target = min(self._target[0], new.limit_max), self._target[1]
        self.state = self.state.model_copy(
            update={
                "limit_max": new.limit_max,
                "step": new.step,
                "window_raw_min": scale.low,
                "window_raw_max": scale.high,
                "steps": scale.steps,
            }
        )
        # The same percent lands on another raw value in the new window.
        self._write()
        self._changed(save=False)
        return True

    # Commands --------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        word = text.strip().lower()
        if RELATIVE.match(word):
            amount = float(word)
            if not amount.is_integer():
                raise CommandError("invalid_payload", f"{text!r}: relative steps are whole percent")
            return {"delta": int(amount)}
        # ASCII only: "①".isdigit() is true and int() refuses it.
        if word.isascii() and word.isdigit():
            return int(word)
        if word in KEYWORDS:
            return word
        raise CommandError(
            "invalid_payload",
            f"{text[:40]!r}: expected 0-100, +N/-N, {', '.join(KEYWORDS)}, or JSON with percent/delta/muted",
        )

    async def on_command(self, command: Any) -> None:
        percent: int | None = None
        delta: int | None = None
        muted: bool | None = None
        if isinstance(command, VolumeChange):
            percent, delta, muted = command.percent, command.delta, command.muted
        elif isinstance(command, int):
            percent = command
        elif command in ("mute", "unmute"):
            muted = command == "mute"
        elif command == "toggle_mute":
            # From the latest command, not the published state: two toggles in one burst cancel out.
            muted = not (self.state.muted if self._multiroom else self._target[1])
        else:
            delta = self.config.step if command == "up" else -self.config.step
        if percent is not None and percent > self.config.limit_max:
            raise CommandError("over_limit", f"{percent} % is over the limit of {self.config.limit_max} %")
        if self._multiroom:
            self._command_clients(percent, delta, muted)
            return
        current, current_muted = self._target
        if delta is not None:
            percent = self._stepped(current, delta)
        self._target = (current if percent is None else percent), (current_muted if muted is None else muted)
        # Applied by the write loop, so that commands queued behind a slow write fold into one.
        self._write_wanted.set()

    async def acknowledge(self) -> None:
        # Commands are applied by the write loop and the state goes out coalesced: the echo rides on
        # the next publish, with the value the burst reached, instead of a stale state now.
        self._echo_wanted = True
        if self._multiroom:
            self._publish_wanted.set()
        else:
            self._write_wanted.set()

    def _stepped(self, current: int, delta: int) -> int:
        """Relative steps stay within 0..limit; a step up from above the limit does not pull it down."""
        if delta > 0:
            return min(current + delta, max(current, self.config.limit_max))
        return max(current + delta, 0)

    # The local mixer -------------------------------------------------------------------------------
    def _require_mixer(self) -> MixerControl:
        if self._mixer is None:
            raise DaemonError("the mixer is not open")
        return self._mixer

    def _write(self) -> None:
        """Bring the mixer to `_target` and record it as applied."""
        mixer = self._require_mixer()
        percent, muted = self._target
        raw = self._scale.to_raw(percent)
        if mixer.switchable:
            # Mute before a volume change and unmute after it, so no step is ever heard on the way.
            if muted and not self._switch_muted:
                mixer.write_mute(True)
            if raw != self._raw:
                mixer.write_volume(raw)
            if not muted and self._switch_muted:
                mixer.write_mute(False)
            self._switch_muted = muted
        else:
            # No switch: silence is the control's lowest value (below the window, which may not be
            # silent); the percent is kept to come back to.
            raw = self._scale.raw_min if muted else raw
            if raw != self._raw:
                mixer.write_volume(raw)
        self._raw = raw
        changed = self._applied != self._target
        self._applied = self._target
        if changed or self.state.raw != raw:
            self._changed(save=True)
        elif self._echo_wanted:
            self._publish_wanted.set()

    async def _write_loop(self) -> None:
        while True:
            await self._write_wanted.wait()
            self._write_wanted.clear()
            started = time.perf_counter()
            self._write()
            # A sound server's ctl plug-in blocks for milliseconds per write (a card's ioctl for
            # microseconds). Resting as long again lets the commands that queued up meanwhile
            # arrive and fold into the next write, instead of one write per command falling behind.
            await asyncio.sleep(time.perf_counter() - started)

    def _on_mixer_event(self) -> None:
        mixer = self._mixer
        if mixer is None:
            return
        try:
            mixer.handle_events()
            raw, switch_muted = mixer.read()
        except DaemonError as exc:
            # The descriptor stays readable once the device or server is gone: stop watching it.
            self._remove_readers()
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(exc)
            return
        if (raw, switch_muted) == (self._raw, self._switch_muted):
            return  # our own write coming back, or nothing that matters here
        # Recorded even when ignored, so the next write compares against what the mixer really holds.
        self._raw, self._switch_muted = raw, switch_muted
        if self._target != self._applied:
            return  # a command is about to be written over it
        percent = self._scale.to_percent(raw)
        # Without a switch, any move away from the muted level is someone turning it up again.
        muted = switch_muted if mixer.switchable else False
        self._target = self._applied = percent, muted
        if not self._multiroom and (percent > self.config.limit_max or raw > self._scale.high):
            # A cap that any other mixer client could pass would protect no speaker.
            self._target = min(percent, self.config.limit_max), muted
            self._write()
            return
        self._changed(save=True)

    def _remove_readers(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop = asyncio.get_running_loop()
            for fd in self._readers:
                loop.remove_reader(fd)
        self._readers.clear()

    # Multiroom -------------------------------------------------------------------------------------
    def _view(self) -> list[MultiroomClientView]:
        """The clients as they are once what we sent them is applied."""
        out = []
        for reported in self._clients.values():
            pending = self._pending.get(reported.id)
            if pending is None:
                out.append(reported)
            else:
                out.append(reported.model_copy(update={"volume": pending.volume, "muted": pending.muted}))
        return out

    def _master(self) -> tuple[int, bool] | None:
        connected = [c for c in self._view() if c.connected]
        if not connected:
            return None
        audible = [c.volume for c in connected if not c.muted]
        if not audible:
            return self.state.percent, True
        return _round(statistics.fmean(audible)), False

    def _command_clients(self, percent: int | None, delta: int | None, muted: bool | None) -> None:
        master = self._master()
        if master is None:
            raise CommandError("no_clients", "multiroom is on and no client is connected")
        current = master[0]
        if delta is not None:
            percent = self._stepped(current, delta)
        shift = 0 if percent is None else percent - current
        now = time.monotonic()
        for client in self._view():
            if not client.connected:
                continue
            update: dict[str, Any] = {}
            volume = min(100, max(0, client.volume + shift))
            if volume != client.volume:
                update["volume"] = volume
            if muted is not None and muted != client.muted:
                update["muted"] = muted
            if update:
                new_muted = client.muted if muted is None else muted
                self._pending[client.id] = _Pending(volume, new_muted, now)
                self._outbox.setdefault(client.id, {}).update(update)
        self._changed(save=False)

    async def on_topic(self, message: Message, path: str) -> None:
        if path == "routing":
            routing = read_view(RoutingView, message.payload, self.log)
            if routing is None:
                return
            if routing.multiroom != self._multiroom:
                self._multiroom = routing.multiroom
                self._changed(save=False)
        elif path == "multiroom":
            state = read_view(MultiroomView, message.payload, self.log)
            if state is None:
                return
            self._clients = {c.id: c for c in state.clients}
            now = time.monotonic()
            for cid, pending in list(self._pending.items()):
                reported = self._clients.get(cid)
                if (
                    reported is None
                    or (reported.volume, reported.muted) == (pending.volume, pending.muted)
                    or now - pending.at > PENDING_TTL
                ):
                    del self._pending[cid]
            if self._multiroom:
                self._changed(save=False)

    # Publishing and saving -------------------------------------------------------------------------
    def _changed(self, *, save: bool) -> None:
        """Fold the applied values into the state and have it published (and saved) soon."""
        percent, muted = self._applied
        if self._multiroom:
            percent, muted = self._master() or (self.state.percent, self.state.muted)
        self.state = self.state.model_copy(
            update={"percent": percent, "muted": muted, "raw": self._raw, "multiroom": self._multiroom}
        )
        self._publish_wanted.set()
        if save:
            self._save_wanted.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            outbox, self._outbox = self._outbox, {}
            for cid, update in outbox.items():
                topic = self.ctx.topics.of(f"multiroom/client/{cid}/set")
                await self.ctx.bus.publish(topic, json.dumps(update).encode())
            if self._echo_wanted:
                self._echo_wanted = False
                await self.echo()
            else:
                await self.publish_state()
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def _save_loop(self) -> None:
        while True:
            await self._save_wanted.wait()
            await asyncio.sleep(SAVE_DELAY)
            self._save_wanted.clear()
            try:
                self._save()
            except OSError:
                self.log.exception("volume: could not save the last volume")

    def _save(self) -> None:
        wanted = self._applied
        if wanted == self._saved:
            return
        self.data = VolumeData(percent=wanted[0], muted=wanted[1])
        self.save_data()
        self._saved = wanted
