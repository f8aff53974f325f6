"""The `screen` subsystem: the display's sysfs backlight, dark after a timeout unless a source is playing."""

# Activity is a command, `screen/set activity`, and only two clients send it: the node's own kiosk
# page (the web UI opened with `?kiosk=1`, which the kiosk unit does on this node's display) and the
# knob. MQTT tells a subscriber nothing of who published, so the line is drawn at the senders: the
# phone UI never sends it, and a broker ACL can keep everyone else from `screen/set`.

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from node.adapters.backlight import Backlight, find
from node.framework.bus import Message
from node.framework.errors import CommandError, DaemonError
from node.framework.subsystem import Context, Subsystem, SubsystemConfig
from node.framework.views import PlayerView, SourcesView, read_view

# brightness and timeout_s set by a command are saved (through this subsystem's own config/set, so
# the config stays their one home) this long after the last change: a slider drag is one write.
SAVE_DELAY = 1.0
BUSY = frozenset({"playing", "buffering"})
SAVED_KEYS = ("brightness", "timeout_s")
# Config keys that name or shape the device: a change opens it afresh.
DEVICE_KEYS = ("backlight", "max_brightness", "invert", "bl_power")
MAX_TIMEOUT = 86_400


class ScreenState(BaseModel):
    """Retained `<base>/screen`: the backlight now, and when it goes dark."""

    model_config = ConfigDict(extra="forbid")

    available: bool = True
    on: bool = Field(default=True, description="the backlight is lit")
    brightness: int = Field(default=100, ge=1, le=100, description="percent, while on")
    timeout_s: int = Field(default=300, description="dark after this long without activity; 0: never")
    playing: bool = Field(default=False, description="a source is playing: the screen does not sleep")
    sleeps_at: int | None = Field(
        default=None, description="Unix time in ms when it goes dark; None while playing, off, or timeout 0"
    )
    device: str = Field(default="", description="the backlight directory, e.g. /sys/class/backlight/10-0045")
    max_brightness: int = Field(default=0, description="the raw value of 100 %")
    raw: int = Field(default=0, description="the raw value written to `brightness` now")
    error: str | None = Field(
        default=None, description="why it is unavailable, or the last write that failed"
    )


class ScreenConfig(SubsystemConfig):
    backlight: str = Field(
        default="",
        max_length=300,
        description="a backlight directory, a name under /sys/class/backlight, or empty: the first there",
    )
    max_brightness: int | None = Field(
        default=None, ge=1, le=1_000_000, description="raw value of 100 %; empty: the device's max_brightness"
    )
    invert: bool = Field(default=False, description="the panel is brightest at 0 (inverted PWM)")
    bl_power: bool = Field(
        default=True, description="also switch bl_power off when dark, where the driver has it"
    )
    brightness: int = Field(default=100, ge=1, le=100, description="percent while on")
    timeout_s: int = Field(
        default=300, ge=0, le=MAX_TIMEOUT, description="dark after this long without activity; 0: never"
    )


class ScreenChange(BaseModel):
    """The JSON form: `{"brightness": 60}`, `{"timeout_s": 120}`, `{"on": false}`, `{"activity": true}`."""

    model_config = ConfigDict(extra="forbid")

    on: bool | None = None
    brightness: int | None = Field(default=None, ge=1, le=100, description="percent; also turns it on")
    timeout_s: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)
    activity: bool | None = Field(default=None, description="someone is at the screen: on, timer restarted")

    @model_validator(mode="after")
    def _something(self) -> ScreenChange:
        if all(v is None for v in (self.on, self.brightness, self.timeout_s, self.activity)):
            raise ValueError("give on, brightness, timeout_s or activity")
        return self


ScreenWord = Literal["on", "off", "toggle", "activity"]
WORDS: tuple[str, ...] = ("on", "off", "toggle", "activity")


def _wakes(old: str | None, new: str) -> bool:
    """A source that starts playing, or connects (a phone pairs, a session opens), wakes the screen."""
    if new in BUSY:
        return old not in BUSY
    return new == "connected" and old not in ("connected", "paused", *BUSY)


class Screen(Subsystem[ScreenState, ScreenConfig]):
    name = "screen"
    description = "the display's backlight: brightness, on/off, asleep after a timeout unless playing"
    State = ScreenState
    Config = ScreenConfig
    Command = TypeAdapter(ScreenWord | ScreenChange)
    watches: ClassVar[tuple[str, ...]] = ("player", "source")

    def __init__(self, ctx: Context, config: ScreenConfig) -> None:
        super().__init__(ctx, config)
        self._loop = asyncio.get_running_loop()
        self._backlight: Backlight | None = None
        self._on = True
        self._brightness = config.brightness
        self._timeout = config.timeout_s
        self._deadline: float | None = None  # loop time when it goes dark
        self._sleeps_at: int | None = None
        self._moved = asyncio.Event()  # the deadline changed: the timer looks again
        self._player_busy = False
        self._sources: dict[str, str] = {}
        self._error: str | None = None
        # Values commands set and not saved yet, and saved values whose config echo has not come back.
        self._unsaved: dict[str, int] = {}
        self._saving: dict[str, int] = {}
        self._save_wanted = asyncio.Event()

    # While it does not run, its own state says so (available: false, with the reason).
    absent_model: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def absent_state(cls, status: str, reason: str) -> BaseModel:
        return ScreenState(available=False, on=False, error=reason)

    # Life ------------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        cfg = self.config
        self._backlight = Backlight(
            find(cfg.backlight), max_brightness=cfg.max_brightness, invert=cfg.invert, use_power=cfg.bl_power
        )

    async def setup(self) -> None:
        # On at start: whoever just booted the node is looking at it.
        self._write(on=True)
        self._rearm()
        self.state = self._current()

    async def run(self) -> None:
        saver = asyncio.create_task(self._save_loop(), name="screen-save")
        try:
            await self._timer()
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver

    async def teardown(self) -> None:
        if self._unsaved:
            with contextlib.suppress(Exception):  # a stop must not fail on a lost broker
                await self._save()

    async def on_config(self, old: ScreenConfig, new: ScreenConfig) -> bool:
        if any(getattr(old, key) != getattr(new, key) for key in DEVICE_KEYS):
            return False
        for key in SAVED_KEYS:
            value = getattr(new, key)
            if key in self._saving and self._saving[key] == value:
                del self._saving[key]  # our own save coming back: what it says is applied already
                continue
            if value != getattr(old, key):
                # Someone changed the setting itself: newer than any command not saved yet.
                self._unsaved.pop(key, None)
                await self._apply(key, value)
        await self._publish()
        return True

    # Commands --------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        word = text.strip().lower()
        if word in WORDS:
            return word
        raise CommandError(
            "invalid_payload",
            f"{text[:40]!r}: expected {', '.join(WORDS)}, or JSON with on/brightness/timeout_s/activity",
        )

    async def on_command(self, command: Any) -> None:
        if isinstance(command, ScreenChange):
            change = command
        elif command == "toggle":
            change = ScreenChange(on=not self._on)
        elif command == "activity":
            change = ScreenChange(activity=True)
        else:
            change = ScreenChange(on=command == "on")
        if change.timeout_s is not None:
            self._timeout = change.timeout_s
            self._remember("timeout_s", change.timeout_s)
        if change.brightness is not None:
            self._brightness = change.brightness
            self._remember("brightness", change.brightness)
        try:
            if change.on is False:
                self._write(on=False)
            elif change.on or change.activity or change.brightness is not None:
                self._write(on=True)
        except DaemonError as exc:
            self._error = str(exc)
            await self._publish()
            raise CommandError("backlight_error", str(exc)) from exc
        self._rearm()
        # The echo is the acknowledgement, also of an activity that changed nothing visible.
        await self._publish(force=True)

    # The node's sources ----------------------------------------------------------------------------
    async def on_topic(self, message: Message, path: str) -> None:
        woken = False
        if path == "player":
            player = read_view(PlayerView, message.payload, self.log)
            if player is None:
                return
            busy = player.state in BUSY
            woken = busy and not self._player_busy
            self._player_busy = busy
        elif path == "source":
            sources = read_view(SourcesView, message.payload, self.log)
            if sources is None:
                return
            woken = any(_wakes(self._sources.get(n), s) for n, s in sources.states.items())
            self._sources = dict(sources.states)
        else:
            return
        if woken and not self._on:
            await self._write_or_report(on=True)
        self._rearm()
        await self._publish()

    @property
    def _busy(self) -> bool:
        return self._player_busy or any(s in BUSY for s in self._sources.values())

    # The backlight ---------------------------------------------------------------------------------
    def _require(self) -> Backlight:
        if self._backlight is None:
            raise DaemonError("the backlight is not open")
        return self._backlight

    def _write(self, *, on: bool) -> None:
        """Light or darken the panel; raises DaemonError when sysfs refuses."""
        backlight = self._require()
        if on:
            backlight.show(self._brightness)
        else:
            backlight.dark()
        self._on = on
        self._error = None

    async def _write_or_report(self, *, on: bool) -> None:
        """`_write` where no command asked for it (the timer, a source): a failure is an error record."""
        try:
            self._write(on=on)
        except DaemonError as exc:
            self._error = str(exc)
            await self.ctx.report(
                self.ctx.topics.of(self.state_topic()), b"", "backlight_error", f"screen: {exc}"
            )

    async def _apply(self, key: str, value: int) -> None:
        """A setting changed through the config: in effect at once."""
        if key == "brightness":
            self._brightness = value
            if self._on:
                await self._write_or_report(on=True)
        else:
            self._timeout = value
            self._rearm()

    # The timer -------------------------------------------------------------------------------------
    def _rearm(self) -> None:
        """Go dark `timeout` from now, unless it is dark already, a source plays, or there is no timeout."""
        if not self._on or self._busy or self._timeout <= 0:
            self._deadline = self._sleeps_at = None
        else:
            self._deadline = self._loop.time() + self._timeout
            self._sleeps_at = int((time.time() + self._timeout) * 1000)
        self._moved.set()

    async def _timer(self) -> None:
        while True:
            self._moved.clear()
            if self._deadline is None:
                await self._moved.wait()
                continue
            delay = self._deadline - self._loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._moved.wait(), delay)
                continue
            self._deadline = self._sleeps_at = None
            await self._write_or_report(on=False)
            await self._publish()

    # Publishing and saving -------------------------------------------------------------------------
    def _current(self) -> ScreenState:
        backlight = self._require()
        return ScreenState(
            on=self._on,
            brightness=self._brightness,
            timeout_s=self._timeout,
            playing=self._busy,
            sleeps_at=self._sleeps_at,
            device=str(backlight.path),
            max_brightness=backlight.max,
            raw=backlight.raw,
            error=self._error,
        )

    async def _publish(self, *, force: bool = False) -> None:
        self.state = self._current()
        await self.publish_state(force=force)

    def _remember(self, key: str, value: int) -> None:
        self._unsaved[key] = value
        self._save_wanted.set()

    async def _save_loop(self) -> None:
        while True:
            await self._save_wanted.wait()
            await asyncio.sleep(SAVE_DELAY)
            self._save_wanted.clear()
            await self._save()

    async def _save(self) -> None:
        """Send what commands changed to this subsystem's own config/set: validated, persisted, echoed."""
        update, self._unsaved = self._unsaved, {}
        update = {key: value for key, value in update.items() if getattr(self.config, key) != value}
        if not update:
            return
        self._saving.update(update)
        topic = self.ctx.topics.of(f"{self.state_topic()}/config/set")
        await self.ctx.bus.publish(topic, json.dumps(update).encode())
