"""A display backlight in sysfs (/sys/class/backlight/<name>): brightness, its maximum, bl_power."""

from __future__ import annotations

import os
from pathlib import Path

from node.framework.errors import DaemonError, SubsystemUnavailableError

SYSFS = Path("/sys/class/backlight")
# bl_power takes the framebuffer blanking levels: 0 is FB_BLANK_UNBLANK, 4 FB_BLANK_POWERDOWN.
POWER_ON, POWER_OFF = 0, 4


def find(spec: str, root: Path = SYSFS) -> Path:
    """The backlight directory `spec` names: a path, a name under `root`, or empty for the first there."""
    if spec:
        path = Path(spec) if "/" in spec else root / spec
        if not path.is_dir():
            raise SubsystemUnavailableError(f"no backlight at {path}")
        return path
    try:
        found = sorted(p for p in root.iterdir() if (p / "brightness").exists())
    except OSError:
        found = []
    if not found:
        raise SubsystemUnavailableError(f"no backlight in {root} (a display without backlight control?)")
    return found[0]


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise DaemonError(f"reading {path}: {exc}") from exc


def _write_int(path: Path, value: int) -> None:
    try:
        # sysfs takes one write of the whole value; no temp file and rename there.
        with path.open("w") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        raise DaemonError(f"writing {value} to {path}: {exc.strerror or exc}") from exc


class Backlight:
    """One backlight in raw units 0..max; `invert` for panels where 0 is the brightest."""

    def __init__(self, path: Path, *, max_brightness: int | None, invert: bool, use_power: bool) -> None:
        self.path = path
        self.invert = invert
        brightness = path / "brightness"
        if not brightness.is_file():
            raise SubsystemUnavailableError(f"{path} has no brightness file")
        if not os.access(brightness, os.W_OK):
            raise SubsystemUnavailableError(
                f"{brightness} is not writable by this user (a udev rule giving the video group "
                "write access to the backlight is the usual fix)"
            )
        try:
            self.max = max_brightness or _read_int(path / "max_brightness")
        except DaemonError as exc:
            raise SubsystemUnavailableError(f"{exc}; set max_brightness in the config") from exc
        if self.max < 1:
            raise SubsystemUnavailableError(f"{path}: max_brightness is {self.max}")
        power = path / "bl_power"
        self._power = power if use_power and power.is_file() and os.access(power, os.W_OK) else None
        self.raw = self._read_raw()

    def _read_raw(self) -> int:
        return _read_int(self.path / "brightness")

    def to_raw(self, percent: int) -> int:
        """0-100 % as the value to write; 1 % and up is never 0, so a dim screen is not a dark one."""
        level = 0 if percent <= 0 else max(1, round(self.max * percent / 100))
        return self.max - level if self.invert else level

    def show(self, percent: int) -> None:
        """Light the panel at `percent` (bl_power first, so the brightness lands on a powered panel)."""
        if self._power is not None:
            _write_int(self._power, POWER_ON)
        self.raw = self.to_raw(percent)
        _write_int(self.path / "brightness", self.raw)

    def dark(self) -> None:
        """Turn the light off: brightness to its darkest, then bl_power off where the driver has it."""
        self.raw = self.to_raw(0)
        _write_int(self.path / "brightness", self.raw)
        if self._power is not None:
            _write_int(self._power, POWER_OFF)
