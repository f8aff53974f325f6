"""ALSA simple mixer controls through pyalsaaudio (no MQTT here): open, read, write, watch, find a card's."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import alsaaudio

from node.framework.errors import DaemonError, SubsystemUnavailableError

# Preferred over whatever a card lists first: a HiFiBerry DAC+ lists `Analogue`, a 0/-6 dB pad
# with a playback volume of two steps, before `Digital`.
PREFERRED_CONTROLS = ("Digital", "Master", "PCM", "DAC", "Speaker", "Headphone")
# The ALSA plug-in of PulseAudio and of PipeWire's pulse server: a `Master` control on the default sink.
SOUND_SERVER_DEVICE, SOUND_SERVER_CONTROL = "pulse", "Master"


class MixerControl:
    """One ALSA simple control through pyalsaaudio, in raw units; every ALSA error becomes a DaemonError."""

    def __init__(self, device: str, control: str) -> None:
        self.device = device
        self.control = control
        try:
            self._mixer = alsaaudio.Mixer(control=control, device=device)
            volume_caps = set(self._mixer.volumecap())
            switch_caps = set(self._mixer.switchcap())
            if not volume_caps & {"Volume", "Playback Volume"}:
                self._mixer.close()
                raise DaemonError(f"{control!r} on {device!r} has no playback volume")
            self.raw_min, self.raw_max = self._mixer.getrange(
                pcmtype=alsaaudio.PCM_PLAYBACK, units=alsaaudio.VOLUME_UNITS_RAW
            )
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"{control!r} on {device!r}: {exc}") from exc
        self._switch = bool(switch_caps & {"Mute", "Playback Mute"})

    @property
    def switchable(self) -> bool:
        """Has a playback switch, so mute does not have to move the volume."""
        return self._switch

    def read(self) -> tuple[int, bool]:
        """(raw volume, switch muted); the loudest channel counts, so a balance never reads as quieter."""
        try:
            levels = self._mixer.getvolume(pcmtype=alsaaudio.PCM_PLAYBACK, units=alsaaudio.VOLUME_UNITS_RAW)
            muted = self.switchable and all(self._mixer.getmute())
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"reading {self.control!r} on {self.device!r}: {exc}") from exc
        return max(levels), bool(muted)

    def write_volume(self, raw: int) -> None:
        try:
            self._mixer.setvolume(raw, pcmtype=alsaaudio.PCM_PLAYBACK, units=alsaaudio.VOLUME_UNITS_RAW)
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"setting {self.control!r} on {self.device!r}: {exc}") from exc

    def write_mute(self, muted: bool) -> None:
        try:
            self._mixer.setmute(int(muted))
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"switching {self.control!r} on {self.device!r}: {exc}") from exc

    def fds(self) -> list[int]:
        try:
            return [fd for fd, _ in self._mixer.polldescriptors()]
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"watching {self.control!r} on {self.device!r}: {exc}") from exc

    def handle_events(self) -> None:
        """Clear what made the descriptors readable; raises once the device or sound server is gone."""
        try:
            self._mixer.handleevents()
        except alsaaudio.ALSAAudioError as exc:
            raise DaemonError(f"{self.control!r} on {self.device!r}: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(alsaaudio.ALSAAudioError):
            self._mixer.close()


def card_devices() -> list[str]:
    try:
        return [f"hw:{alsaaudio.card_name(i)[0]}" for i in alsaaudio.card_indexes()]
    except alsaaudio.ALSAAudioError:
        return []


def best_control(device: str, problems: list[str]) -> MixerControl | None:
    try:
        names = list(alsaaudio.mixers(device=device))
    except alsaaudio.ALSAAudioError as exc:
        problems.append(f"{device}: {exc}")
        return None
    usable: list[MixerControl] = []
    for name in names:
        try:
            usable.append(MixerControl(device, name))
        except DaemonError:
            continue  # capture-only controls, switches, enums
    if not usable:
        problems.append(f"{device}: no control with a playback volume")
        return None

    def rank(m: MixerControl) -> tuple[int, int]:
        preferred = (
            PREFERRED_CONTROLS.index(m.control)
            if m.control in PREFERRED_CONTROLS
            else len(PREFERRED_CONTROLS)
        )
        return preferred, -(m.raw_max - m.raw_min)

    best = min(usable, key=rank)
    for m in usable:
        if m is not best:
            m.close()
    return best


def open_control(device: str, control: str) -> MixerControl:
    """The configured control, or the best one of the first card that has one, else the sound server's."""
    if device and control:
        try:
            return MixerControl(device, control)
        except DaemonError as exc:
            raise SubsystemUnavailableError(f"mixer {exc}") from exc
    problems: list[str] = []
    cards = [device] if device else card_devices()
    candidates = cards if device else [*cards, *([SOUND_SERVER_DEVICE] if sound_server_socket() else [])]
    for dev in candidates:
        if control:
            try:
                return MixerControl(dev, control)
            except DaemonError as exc:
                problems.append(str(exc))
                continue
        found = best_control(dev, problems)
        if found is not None:
            return found
    if not device and not cards:
        problems.insert(0, "no sound card")
        if SOUND_SERVER_DEVICE not in candidates:
            problems.append("no sound server (PulseAudio / PipeWire) either")
    raise SubsystemUnavailableError(
        f"no mixer control with a playback volume: {'; '.join(problems)}; set [volume] device and control"
    )


def first_card_with_volume() -> str | None:
    """The id of the first sound card that has a playback volume control (the DAC on a Pi)."""
    for device in card_devices():
        found = best_control(device, [])
        if found is not None:
            found.close()
            return device.removeprefix("hw:")
    return None


def sound_server_socket() -> bool:
    """Whether a PulseAudio (or PipeWire-pulse) server may be listening, checked without libpulse.

    Probing the `pulse` plug-in loads libpulse (3 MB that stay resident) and prints ALSA errors when
    nothing answers, which on a headless Pi is the usual case.
    """
    if os.environ.get("PULSE_SERVER"):
        return True
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return Path(runtime, "pulse", "native").exists()


def sound_server_present() -> bool:
    """True when the `pulse` ALSA plug-in reaches a server (PulseAudio, or PipeWire's pulse layer)."""
    if not sound_server_socket():
        return False
    found = best_control(SOUND_SERVER_DEVICE, [])
    if found is None:
        return False
    found.close()
    return True
