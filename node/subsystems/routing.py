"""The `routing` subsystem: from the routing flags to asound.conf and the PCM each source plays into now."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from node.adapters import alsa
from node.adapters.mixer import card_devices, first_card_with_volume, sound_server_present
from node.framework.errors import CommandError
from node.framework.files import write_atomic
from node.framework.subsystem import Subsystem, SubsystemConfig, local_only

logger = logging.getLogger(__name__)


class RoutingState(BaseModel):
    """Retained `<base>/routing`: the chain every source uses now; sources follow `pcms`."""

    model_config = ConfigDict(extra="forbid")

    multiroom: bool = False
    equalizer: bool = False
    mode: alsa.Mode = "direct"
    pcms: dict[str, str] = Field(default_factory=dict, description="source -> ALSA PCM to play into now")
    output: str = Field(default="", description="what the direct chain ends in (hw:<card>,<dev>, pulse...)")
    asound_conf: str = Field(default="", description="the file the node's ALSA users read")
    problem: str | None = Field(default=None, description="what is wrong with the output, e.g. no such card")
    generation: int = Field(default=0, description="bumped on every change of plan")


class RoutingConfig(SubsystemConfig):
    """`[routing]`: the DAC and the Loopback that asound.conf is rendered for."""

    card: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="ALSA card id of the DAC; empty = the first card with a volume control",
    )
    card_device: int = Field(default=0, ge=0, le=31)
    card_format: str = Field(default="S32_LE", pattern=r"^[SU](16|24|32)(_3)?_LE$|^FLOAT_LE$")
    rate: int = Field(default=48000, ge=8000, le=384000)
    dmix: bool = Field(default=True, description="mix several sources in software (needs a real hw device)")
    output_pcm: str = local_only(
        default="", max_length=200, description="replaces hw:<card>,<device> as the output (advanced, tests)"
    )
    loopback_card: str = Field(default="Loopback", max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    loopback_device: int = Field(default=0, ge=0, le=1)
    loopback_pcms: dict[str, str] = local_only(
        default_factory=dict, description="source -> PCM replacing its subdevice (tests)"
    )
    eq_controls: str = local_only(
        default="", max_length=4096, description="alsaequal controls file; default <data_dir>/alsaequal.bin"
    )
    extra: str = local_only(default="", max_length=65536, description="ALSA config appended verbatim")


class RoutingData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    multiroom: bool = False
    equalizer: bool = False


class RoutingCommand(BaseModel):
    """`routing/set`: `{"multiroom": true}`, `{"equalizer": false}` or both."""

    model_config = ConfigDict(extra="forbid")

    multiroom: bool | None = None
    equalizer: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> RoutingCommand:
        if self.multiroom is None and self.equalizer is None:
            raise ValueError("give multiroom and/or equalizer")
        return self


class Routing(Subsystem[RoutingState, RoutingConfig]):
    name = "routing"
    formerly = ("router",)
    description = "renders asound.conf and tells each source which ALSA PCM to play into"
    State = RoutingState
    Config = RoutingConfig
    Data = RoutingData
    Command = TypeAdapter(RoutingCommand)

    data: RoutingData

    async def setup(self) -> None:
        self._card = self._card_settings()
        problem = self._card_problem()
        self.state = self.state.model_copy(update={"problem": problem})
        if problem is not None:
            # Rendered all the same (the card may be plugged in later), but nobody is left to guess.
            self.log.warning("routing: %s", problem)
            await self.ctx.report(self.ctx.topics.of("routing/config"), b"", "unknown_card", problem)
        await self._apply(self.data.multiroom, self.data.equalizer, force_write=True)

    def _card_problem(self) -> str | None:
        card = self.config.card
        if not card or self.config.output_pcm:
            return None
        present = [device.removeprefix("hw:") for device in card_devices()]
        if card in present:
            return None
        here = ", ".join(present) or "none"
        return f"there is no sound card {card!r} (cards here: {here}); direct output will fail"

    def _card_settings(self) -> alsa.CardSettings:
        c = self.config
        base = alsa.CardSettings(device=c.card_device, format=c.card_format, rate=c.rate, dmix=c.dmix)
        if c.output_pcm:
            return replace(base, name=c.card or "custom", dmix=False, pcm=c.output_pcm)
        if c.card:
            return replace(base, name=c.card)
        found = first_card_with_volume()
        if found is not None:
            self.log.info("routing: using card %s", found)
            return replace(base, name=found)
        if sound_server_present():
            # A laptop: the sound server mixes, so no dmix.
            self.log.info("routing: no sound card; playing through the sound server (pulse)")
            return replace(base, name="pulse", dmix=False, pcm="pulse")
        self.log.warning("routing: no sound card and no sound server; direct output goes nowhere")
        return replace(base, name="none", dmix=False, pcm="null")

    def _plan(self, mode: alsa.Mode) -> alsa.AsoundPlan:
        c = self.config
        controls = Path(c.eq_controls) if c.eq_controls else self.ctx.node.data_dir / "alsaequal.bin"
        sources = self.ctx.node.sources
        names = {s.name for s in sources}
        unknown = sorted(set(c.loopback_pcms) - names)
        if unknown:
            self.log.warning("routing: loopback_pcms names sources the node does not have: %s", unknown)
        return alsa.AsoundPlan(
            eq_controls=controls.resolve(),
            sources=tuple(s.name for s in sources),
            subdevices={s.name: s.subdevice for s in sources},
            mode=mode,
            card=self._card,
            loopback=alsa.LoopbackSettings(
                card=c.loopback_card,
                device=c.loopback_device,
                pcm={k: v for k, v in c.loopback_pcms.items() if k in names},
            ),
            extra=c.extra,
        )

    async def _apply(self, multiroom: bool, equalizer: bool, *, force_write: bool = False) -> None:
        mode = alsa.mode_of(multiroom=multiroom, equalizer=equalizer)
        plan = self._plan(mode)
        plan.eq_controls.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = alsa.render_asound(plan).encode()
        except ValueError as exc:  # what the config model cannot see (a format alsa-lib would refuse...)
            raise CommandError("invalid_config", f"asound.conf: {exc}") from exc
        path = self.ctx.node.alsa_config
        # The file goes first: a source that reacts to the new state must find its PCM defined.
        if force_write or not path.exists() or path.read_bytes() != text:
            write_atomic(path, text)
        changed = (multiroom, equalizer) != (self.data.multiroom, self.data.equalizer)
        if changed:
            self.data = RoutingData(multiroom=multiroom, equalizer=equalizer)
            self.save_data()
        card = self._card
        await self.set_state(
            multiroom=multiroom,
            equalizer=equalizer,
            mode=mode,
            pcms={s: alsa.pcm_name(s, mode) for s in plan.sources},
            output=card.pcm or f"hw:{card.name},{card.device}",
            asound_conf=str(path),
            generation=self.state.generation + (1 if changed or force_write else 0),
        )

    async def on_command(self, command: Any) -> None:
        if not isinstance(command, RoutingCommand):
            raise CommandError("invalid_payload", "expected {multiroom, equalizer}")
        multiroom = self.state.multiroom if command.multiroom is None else command.multiroom
        equalizer = self.state.equalizer if command.equalizer is None else command.equalizer
        await self._apply(multiroom, equalizer)

    async def on_config(self, old: RoutingConfig, new: RoutingConfig) -> bool:
        return False  # a new card or source list: set up again (renders and republishes)
