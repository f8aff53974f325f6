"""A KY-040 rotary encoder and its push button on GPIO through gpiozero: every detent and edge handed on."""

# gpiozero calls back from its own thread (lgpio's alert thread on a Pi) or, on mock pins, from
# whoever drives them: every event is moved onto the asyncio loop with call_soon_threadsafe. It is
# imported only when a knob is opened, so a node without one never loads it.

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from node.framework.errors import SubsystemUnavailableError

PinFactory = Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock"]
# Tried in this order by `auto`: lgpio is the one that works on every Pi, the Pi 5 included.
AUTO_ORDER: tuple[PinFactory, ...] = ("lgpio", "rpigpio", "native")
FACTORY_CLASSES: dict[str, tuple[str, str]] = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}
# What the kernel offers when a board has GPIO at all (the character devices, or the Pi's gpiomem).
GPIO_DEVICES = ("gpiochip*", "gpiomem*")
DEV = Path("/dev")


def _has_gpio_device() -> bool:
    return any(next(DEV.glob(pattern), None) is not None for pattern in GPIO_DEVICES)


def _factory(name: PinFactory) -> Any:
    """A gpiozero pin factory; raises whatever gpiozero or the pin library raises when it cannot start."""
    if name == "mock":
        from gpiozero import Device  # noqa: PLC0415 - loaded only with a knob
        from gpiozero.pins.mock import MockFactory  # noqa: PLC0415

        # Tests and the benchmark set their MockFactory as gpiozero's default to drive its pins.
        current = Device.pin_factory
        return current if isinstance(current, MockFactory) else MockFactory()
    module_name, class_name = FACTORY_CLASSES[name]
    module = __import__(module_name, fromlist=[class_name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the native factory warns that it is a fallback: we know
        return getattr(module, class_name)()


def pin_factory(name: PinFactory) -> tuple[str, Any]:
    """(the name of the factory in use, the factory); SubsystemUnavailableError saying why there is none."""
    if name != "auto":
        try:
            return name, _factory(name)
        except Exception as exc:  # ImportError, OSError, gpiozero's own: all mean "no GPIO this way"
            raise SubsystemUnavailableError(f"GPIO pin factory {name}: {exc}") from exc
    env = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if env in FACTORY_CLASSES or env == "mock":
        return pin_factory(env)  # type: ignore[arg-type]  # checked just above
    if not _has_gpio_device():
        raise SubsystemUnavailableError(f"no GPIO on this machine (no /dev/{' or /dev/'.join(GPIO_DEVICES)})")
    problems = []
    for candidate in AUTO_ORDER:
        try:
            return candidate, _factory(candidate)
        except Exception as exc:
            problems.append(f"{candidate}: {exc}")
    raise SubsystemUnavailableError("no GPIO pin factory works: " + "; ".join(problems))


class KnobPins:
    """The encoder on `clk`/`dt` and the button on `sw`, all with pull-ups (the KY-040 pulls to ground).

    `on_turn(+1 | -1)` runs on the loop once per detent (gpiozero's Gray-code state machine rides out
    contact bounce), `on_button(pressed)` once per edge of the button, bounces included: the caller
    debounces, the same way whatever pin library is underneath.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory_name: PinFactory,
        *,
        clk: int,
        dt: int,
        sw: int,
        on_turn: Callable[[int], None],
        on_button: Callable[[bool], None],
    ) -> None:
        self.factory, factory = pin_factory(factory_name)
        self._loop = loop
        self._on_turn = on_turn
        self._on_button = on_button
        from gpiozero import Button, RotaryEncoder  # noqa: PLC0415 - loaded only with a knob

        self._devices: list[Any] = []
        try:
            # max_steps=0: gpiozero's own count would stop (or wrap) at max_steps; detents are counted
            # by the caller from the callbacks instead.
            encoder = RotaryEncoder(clk, dt, max_steps=0, bounce_time=None, pin_factory=factory)
            self._devices.append(encoder)
            button = Button(sw, pull_up=True, bounce_time=None, pin_factory=factory)
            self._devices.append(button)
        except Exception as exc:  # a pin in use, not a GPIO on this board...
            self.close()
            raise SubsystemUnavailableError(
                f"GPIO {clk}/{dt}/{sw} on {self.factory}: {type(exc).__name__}: {exc}"
            ) from exc
        encoder.when_rotated_clockwise = lambda: self._hand(self._on_turn, 1)
        encoder.when_rotated_counter_clockwise = lambda: self._hand(self._on_turn, -1)
        button.when_pressed = lambda: self._hand(self._on_button, True)
        button.when_released = lambda: self._hand(self._on_button, False)

    def _hand(self, callback: Callable[[Any], None], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the node is stopping
            self._loop.call_soon_threadsafe(callback, value)

    def close(self) -> None:
        for device in self._devices:
            with contextlib.suppress(Exception):
                device.close()
        self._devices.clear()
