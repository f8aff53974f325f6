"""Renders asound.conf from alsa/ for a card, a Loopback, the sources and the current routing mode."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import jinja2

from node.resources import data_dir

ALSA_DIR = data_dir("alsa")

Mode = Literal["direct", "direct_eq", "multiroom", "multiroom_eq"]
MODES: tuple[Mode, ...] = ("direct", "direct_eq", "multiroom", "multiroom_eq")

EQ_CTL = "milo_eq"  # the mixer side of alsaequal: Mixer(control, device=EQ_CTL)
EQ_LIBRARY = "/usr/lib/ladspa/caps.so"


def mode_of(*, multiroom: bool, equalizer: bool) -> Mode:
    if multiroom:
        return "multiroom_eq" if equalizer else "multiroom"
    return "direct_eq" if equalizer else "direct"


def pcm_name(source: str, mode: Mode) -> str:
    """The PCM a source plays into for one mode; every mode's PCM is always defined."""
    return f"milo_{source}_{mode}"


def alias_name(source: str) -> str:
    """`milo_<source>`: points at the current mode, for daemons that can only be restarted."""
    return f"milo_{source}"


@dataclass(frozen=True)
class CardSettings:
    """The DAC: its ALSA card id, device, mixer control and native format."""

    name: str = "sndrpihifiberry"
    device: int = 0
    mixer: str = "Digital"
    format: str = "S32_LE"
    rate: int = 48000
    # dmix lets two sources play at once; it needs a real hw device, so tests turn it off.
    dmix: bool = True
    # Replaces `hw:<name>,<device>` as the output (tests: a file sink PCM defined in `extra`).
    pcm: str | None = None


@dataclass(frozen=True)
class LoopbackSettings:
    """snd-aloop: each source plays into its own playback subdevice; snapserver captures the other side."""

    card: str = "Loopback"
    device: int = 0
    format: str = "S16_LE"
    rate: int = 48000
    channels: int = 2
    # source -> PCM replacing `hw:<card>,<device>,<sub>` (tests: file sinks; this machine has no snd-aloop).
    pcm: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AsoundPlan:
    """Everything asound.conf depends on."""

    eq_controls: Path  # absolute: daemons have different HOMEs
    sources: Sequence[str]  # the node's sources (node.registry.SOURCES), each gets every PCM
    mode: Mode = "direct"
    # source -> its Loopback subdevice; a source not named here takes the lowest free one, in list order
    # (each source class pins its own, so snapserver's streams never move when a source is added).
    subdevices: Mapping[str, int] = field(default_factory=dict)
    card: CardSettings = field(default_factory=CardSettings)
    loopback: LoopbackSettings = field(default_factory=LoopbackSettings)
    eq_library: str = EQ_LIBRARY
    extra: str = ""  # appended verbatim (tests define their file sinks here)


def loopback_subdevices(
    sources: Sequence[str], pinned: Mapping[str, int] | None = None
) -> dict[str, int | None]:
    """Each source's subdevice: its pinned one, else the lowest free one in list order (None: none left)."""
    pinned = pinned or {}
    taken = {pinned[s] for s in sources if s in pinned}
    free = iter(n for n in range(_LOOPBACK_SUBDEVICES) if n not in taken)
    return {s: pinned[s] if s in pinned else next(free, None) for s in sources}


def loopback_subdevice(source: str, sources: Sequence[str], pinned: Mapping[str, int] | None = None) -> int:
    sub = loopback_subdevices(sources, pinned)[source]
    if sub is None:
        raise ValueError(
            f"source {source!r} has no Loopback subdevice (snd-aloop has {_LOOPBACK_SUBDEVICES})"
        )
    return sub


def render_asound(plan: AsoundPlan) -> str:
    """The whole asound.conf text for `plan`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ALSA_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - ALSA config, not HTML
    )
    env.filters["q"] = _quote
    return env.get_template("asound.conf.j2").render(plan=plan, view=_view(plan))


# A System V IPC key no alsa-lib default uses ("MILO"); with ipc_key_add_uid false every user's player
# shares this one dmix, which is the point of it.
_DMIX_IPC_KEY = 0x4D494C4F
_DMIX_NAME = "milo_dmix"
# The DAC is stereo (dmix bindings 0 0 1 1), and so is alsaequal by default, which is what the ctl's
# controls file is laid out for.
_STEREO = 2
_LOOPBACK_SUBDEVICES = 8  # snd-aloop's pcm_substreams maximum
_ID = re.compile(r"[a-z][a-z0-9_]*")
_FORMAT = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class _Output:
    """A PCM and the parameters a plug pins in front of it."""

    pcm: str
    format: str
    rate: int
    channels: int


@dataclass(frozen=True)
class _Chain:
    """One destination of a source, plain and through the equalizer."""

    pcm: str
    output: _Output
    eq_pcm: str
    # Pinning the rate in front of alsaequal as well lets a player wrap the chain in one more plug
    # (`plug:milo_radio_direct_eq`); with format only, alsa-lib 1.2.8 aborts on an assertion in pcm_params.c.
    eq_input: _Output  # FLOAT_LE, the only format alsaequal takes
    label: str


@dataclass(frozen=True)
class _Source:
    name: str
    subdevice: int
    chains: tuple[_Chain, _Chain]
    alias: str
    current: str


@dataclass(frozen=True)
class _View:
    dmix: str | None
    dmix_slave: str
    dmix_ipc_key: int
    eq_ctl: str
    sources: tuple[_Source, ...]


def _quote(value: object) -> str:
    """An ALSA config string literal (alsa-lib's parser unescapes backslash sequences inside quotes)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _chain(source: str, mode: Mode, label: str, output: _Output) -> _Chain:
    eq = pcm_name(source, mode_of(multiroom=mode == "multiroom", equalizer=True))
    eq_input = _Output(f"{eq}_float", "FLOAT_LE", output.rate, _STEREO)
    return _Chain(pcm_name(source, mode), output, eq, eq_input, label)


def _view(plan: AsoundPlan) -> _View:
    _check(plan)
    card, loopback = plan.card, plan.loopback
    hw = f"hw:{card.name},{card.device}"
    dmix = _DMIX_NAME if card.dmix and card.pcm is None else None
    direct = _Output(card.pcm or dmix or hw, card.format, card.rate, _STEREO)
    sources = []
    subdevices = loopback_subdevices(plan.sources, plan.subdevices)
    for source in plan.sources:
        sub = subdevices[source]
        if sub is None:  # _check made sure it plays into a PCM of its own instead
            sub = -1
        default_loop = f"hw:{loopback.card},{loopback.device},{sub}"
        loop = _Output(
            loopback.pcm.get(source, default_loop), loopback.format, loopback.rate, loopback.channels
        )
        chains = (
            _chain(source, "direct", "direct to the DAC", direct),
            _chain(source, "multiroom", f"Snapcast, Loopback subdevice {sub}", loop),
        )
        sources.append(_Source(source, sub, chains, alias_name(source), pcm_name(source, plan.mode)))
    return _View(dmix, hw, _DMIX_IPC_KEY, EQ_CTL, tuple(sources))


def _check(plan: AsoundPlan) -> None:
    """Refuse plans whose faults would only show when a player opens a PCM, long after rendering."""
    if plan.mode not in MODES:
        raise ValueError(f"unknown mode {plan.mode!r}, expected one of {', '.join(MODES)}")
    if not plan.eq_controls.is_absolute():
        raise ValueError(f"eq_controls must be absolute (daemons have different HOMEs): {plan.eq_controls}")
    if len(set(plan.sources)) != len(plan.sources):
        raise ValueError(f"duplicate source in {list(plan.sources)}")
    for source in plan.sources:
        if not _ID.fullmatch(source):
            raise ValueError(f"source {source!r} is not a valid PCM name part ([a-z][a-z0-9_]*)")
    unknown = set(plan.loopback.pcm) - set(plan.sources)
    if unknown:
        raise ValueError(f"loopback.pcm names unknown sources: {sorted(unknown)}")
    for source, sub in loopback_subdevices(plan.sources, plan.subdevices).items():
        if sub is None and source not in plan.loopback.pcm:
            raise ValueError(
                f"source {source!r} has no Loopback subdevice (snd-aloop has {_LOOPBACK_SUBDEVICES})"
            )
    pinned = [plan.subdevices[s] for s in plan.sources if s in plan.subdevices]
    if len(set(pinned)) != len(pinned) or any(not 0 <= n < _LOOPBACK_SUBDEVICES for n in pinned):
        raise ValueError(
            f"Loopback subdevices must be distinct, 0-{_LOOPBACK_SUBDEVICES - 1}: {plan.subdevices}"
        )
    for fmt in (plan.card.format, plan.loopback.format):
        if not _FORMAT.fullmatch(fmt):
            raise ValueError(f"not an ALSA sample format: {fmt!r}")
