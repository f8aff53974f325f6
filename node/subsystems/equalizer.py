"""The `equalizer` subsystem: 10 bands in dB on the real alsaequal controls, presets, user presets."""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any, ClassVar

import alsaaudio
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from node.adapters import alsa
from node.framework.bus import Message
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.subsystem import Subsystem, SubsystemConfig
from node.framework.views import RoutingView, read_view

# Band key -> alsaequal's simple-control name (caps Eq10, reference/alsa.md §1).
BANDS: dict[str, str] = {
    "31": "00. 31 Hz",
    "63": "01. 63 Hz",
    "125": "02. 125 Hz",
    "250": "03. 250 Hz",
    "500": "04. 500 Hz",
    "1k": "05. 1 kHz",
    "2k": "06. 2 kHz",
    "4k": "07. 4 kHz",
    "8k": "08. 8 kHz",
    "16k": "09. 16 kHz",
}
# Eq10's port range is -48..+24 dB, spread linearly over the control's 0..100.
EQ10_MIN_DB, EQ10_STEP_DB, EQ10_MAX_DB = -48.0, 0.72, 24.0
# Eq10's bands overlap: all ten at 0 dB measured +3.4..+3.8 dB from 100 Hz to 10 kHz (all at
# -3.6 dB: within 0.4 dB of unity). Every band is shifted by this, so "flat" leaves the sound alone.
EQ10_FLAT_OFFSET_DB = -3.6

# Our own curves, 31 Hz .. 16 kHz, in dB.
PRESETS: dict[str, tuple[float, ...]] = {
    "flat": (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "bass": (6, 5, 4, 2, 0, 0, 0, 0, 0, 0),
    "treble": (0, 0, 0, 0, 0, 0, 2, 4, 5, 6),
    "loudness": (6, 4, 2, 0, -1, 0, 0, 2, 4, 5),
    "vocal": (-2, -2, -1, 0, 2, 4, 4, 2, 0, -1),
    "rock": (5, 4, 2, 0, -1, -1, 1, 3, 4, 5),
    "pop": (-1, 0, 2, 4, 4, 2, 0, -1, -1, -1),
    "jazz": (3, 2, 1, 2, -1, -1, 0, 1, 2, 3),
    "classical": (4, 3, 2, 1, 0, 0, 0, 1, 2, 3),
}


def raw_of(db: float) -> int:
    """The control value (0..100) for a band gain in our dB, which is relative to a flat response."""
    return max(0, min(100, round((db + EQ10_FLAT_OFFSET_DB - EQ10_MIN_DB) / EQ10_STEP_DB)))


def flat() -> dict[str, float]:
    return dict.fromkeys(BANDS, 0.0)


class EqualizerState(BaseModel):
    """Retained `<base>/equalizer`."""

    model_config = ConfigDict(extra="forbid")

    bands: dict[str, float] = Field(default_factory=flat, description="band (31 ... 16k) -> gain in dB")
    preset: str | None = Field(default="flat", description="the preset the bands equal, None when custom")
    presets: list[str] = Field(
        default_factory=lambda: list(PRESETS), description="built-in, then user presets"
    )
    user_presets: list[str] = Field(default_factory=list)
    active: bool = Field(default=False, description="in the audio chain now (routing.equalizer)")
    min_db: float = -12.0
    max_db: float = 12.0


class EqualizerConfig(SubsystemConfig):
    min_db: float = Field(default=-12.0, ge=EQ10_MIN_DB, le=0.0)
    max_db: float = Field(default=12.0, ge=0.0, le=EQ10_MAX_DB)


class EqualizerData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bands: dict[str, float] = Field(default_factory=flat)
    user_presets: dict[str, dict[str, float]] = Field(default_factory=dict)


class SetBands(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bands: dict[str, float] = Field(min_length=1)


class SetBand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    band: str
    gain_db: float


PresetName = Field(min_length=1, max_length=40, pattern=r"^[\w .+-]+$")


class UsePreset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: str = PresetName


class SavePreset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    save_preset: str = PresetName


class DeletePreset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delete_preset: str = PresetName

    @model_validator(mode="after")
    def _not_builtin(self) -> DeletePreset:
        if self.delete_preset in PRESETS:
            raise ValueError(f"{self.delete_preset!r} is built in")
        return self


EqualizerCommand = SetBands | SetBand | UsePreset | SavePreset | DeletePreset
MAX_USER_PRESETS = 50
# Opening the alsaequal ctl in this process loads alsa-lib's configuration, the caps LADSPA plug-in
# with libstdc++ and whatever the system's ALSA hooks load (libpulse, where PulseAudio is installed):
# ~5 MB that never unload. Start-up's check and write go through amixer (alsa-utils, which
# `milo install` installs) instead; the first command opens the controls here, so a node whose
# equalizer nobody touches never carries them.
AMIXER = "amixer"
AMIXER_TIMEOUT = 10.0
_SCONTROL = re.compile(r"^Simple mixer control '(.*)',\d+$", re.MULTILINE)


class Equalizer(Subsystem[EqualizerState, EqualizerConfig]):
    name = "equalizer"
    description = "10-band equalizer (alsaequal): bands in dB, presets, user presets"
    State = EqualizerState
    Config = EqualizerConfig
    Data = EqualizerData
    Command = TypeAdapter(EqualizerCommand)
    watches: ClassVar[tuple[str, ...]] = ("routing",)

    data: EqualizerData

    async def check_environment(self) -> None:
        self._mixers: dict[str, alsaaudio.Mixer] = {}
        self._amixer = shutil.which(AMIXER)
        try:
            if self._amixer is not None:
                names = _SCONTROL.findall(await self._run_amixer("scontrols"))
            else:
                names = alsaaudio.mixers(device=alsa.EQ_CTL)
        except (alsaaudio.ALSAAudioError, OSError) as exc:
            raise SubsystemUnavailableError(
                f"alsaequal control {alsa.EQ_CTL!r} not in {self.ctx.node.alsa_config} ({exc})"
            ) from exc
        missing = [label for label in BANDS.values() if label not in names]
        if missing:
            raise SubsystemUnavailableError(f"{alsa.EQ_CTL!r} lacks {missing} (not caps Eq10?)")

    async def setup(self) -> None:
        bands = {**flat(), **{k: v for k, v in self.data.bands.items() if k in BANDS}}
        if self._amixer is not None:
            lines = "".join(f"sset '{BANDS[key]}' {raw_of(db)}\n" for key, db in bands.items())
            try:
                await self._run_amixer("-q", "-s", stdin=lines)
            except OSError as exc:
                raise CommandError("alsa_error", f"alsaequal: {exc}") from exc
        else:
            self._write(bands)
        self.state = EqualizerState(
            bands=bands,
            preset=self._preset_of(bands),
            presets=[*PRESETS, *self.data.user_presets],
            user_presets=list(self.data.user_presets),
            min_db=self.config.min_db,
            max_db=self.config.max_db,
        )

    async def teardown(self) -> None:
        for mixer in getattr(self, "_mixers", {}).values():
            mixer.close()
        self._mixers = {}

    async def _run_amixer(self, *args: str, stdin: str | None = None) -> str:
        """`amixer -D <eq ctl> ...` in a child (it reads the node's asound.conf through the environment)."""
        assert self._amixer is not None
        proc = await asyncio.create_subprocess_exec(
            self._amixer, "-D", alsa.EQ_CTL, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(AMIXER_TIMEOUT):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OSError(f"amixer did not finish within {AMIXER_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise OSError(lines[-1] if lines else f"amixer exit code {proc.returncode}")
        return out.decode(errors="replace")

    def parse_text(self, text: str) -> Any:
        return {"preset": text}

    def _write(self, bands: dict[str, float]) -> None:
        try:
            if not self._mixers:
                # The ctl has no change events and we are its only writer: keep one Mixer per band open.
                self._mixers = {
                    key: alsaaudio.Mixer(label, device=alsa.EQ_CTL) for key, label in BANDS.items()
                }
            for key, db in bands.items():
                self._mixers[key].setvolume(raw_of(db), units=alsaaudio.VOLUME_UNITS_RAW)
        except alsaaudio.ALSAAudioError as exc:
            raise CommandError("alsa_error", f"alsaequal: {exc}") from exc

    def _preset_of(self, bands: dict[str, float]) -> str | None:
        for name, curve in self._all_presets().items():
            if all(abs(bands[k] - v) < 0.05 for k, v in curve.items()):
                return name
        return None

    def _all_presets(self) -> dict[str, dict[str, float]]:
        builtin = {name: dict(zip(BANDS, map(float, curve), strict=True)) for name, curve in PRESETS.items()}
        return {**builtin, **self.data.user_presets}

    def _check(self, changes: dict[str, float]) -> dict[str, float]:
        lo, hi = self.config.min_db, self.config.max_db
        for key, db in changes.items():
            if key not in BANDS:
                raise CommandError("unknown_band", f"no band {key!r}; bands are {', '.join(BANDS)}")
            if not lo <= db <= hi:
                raise CommandError("out_of_range", f"band {key}: {db} dB is outside {lo}..{hi} dB")
        return {k: round(v, 1) for k, v in changes.items()}

    async def _set_bands(self, changes: dict[str, float]) -> None:
        bands = {**self.state.bands, **self._check(changes)}
        self._write(bands)
        self.data.bands = bands
        self.save_data()
        await self.set_state(bands=bands, preset=self._preset_of(bands))

    async def on_command(self, command: Any) -> None:
        if isinstance(command, SetBands):
            await self._set_bands(command.bands)
        elif isinstance(command, SetBand):
            await self._set_bands({command.band: command.gain_db})
        elif isinstance(command, UsePreset):
            curve = self._all_presets().get(command.preset)
            if curve is None:
                raise CommandError("unknown_preset", f"no preset {command.preset!r}")
            # A preset may be steeper than the configured range: clamp rather than refuse it.
            lo, hi = self.config.min_db, self.config.max_db
            await self._set_bands({k: min(hi, max(lo, v)) for k, v in curve.items()})
        elif isinstance(command, SavePreset):
            await self._save_preset(command.save_preset)
        else:
            await self._delete_preset(command.delete_preset)

    async def _save_preset(self, name: str) -> None:
        if name in PRESETS:
            raise CommandError("read_only", f"{name!r} is a built-in preset")
        if name not in self.data.user_presets and len(self.data.user_presets) >= MAX_USER_PRESETS:
            raise CommandError("too_many", f"at most {MAX_USER_PRESETS} user presets")
        self.data.user_presets = {**self.data.user_presets, name: dict(self.state.bands)}
        self.save_data()
        await self._publish_presets(preset=name)

    async def _delete_preset(self, name: str) -> None:
        if name not in self.data.user_presets:
            raise CommandError("unknown_preset", f"no user preset {name!r}")
        self.data.user_presets = {k: v for k, v in self.data.user_presets.items() if k != name}
        self.save_data()
        await self._publish_presets(preset=self._preset_of(self.state.bands))

    async def _publish_presets(self, preset: str | None) -> None:
        users = list(self.data.user_presets)
        await self.set_state(presets=[*PRESETS, *users], user_presets=users, preset=preset)

    async def on_topic(self, message: Message, path: str) -> None:
        if path == "routing":
            view = read_view(RoutingView, message.payload, self.log)
            if view is not None:
                await self.set_state(active=view.equalizer)

    async def on_config(self, old: EqualizerConfig, new: EqualizerConfig) -> bool:
        return False  # new range: set up again and republish it
