"""asound.conf: golden files per mode, and tones played through the real alsa-lib into WAV file sinks."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.audio import level_dbfs, peak_hz, read_wav, tone, write_wav
from node.adapters.alsa import (
    EQ_CTL,
    MODES,
    AsoundPlan,
    CardSettings,
    LoopbackSettings,
    Mode,
    alias_name,
    loopback_subdevice,
    pcm_name,
    render_asound,
)

GOLDEN = Path(__file__).parent / "golden"
# An explicit list (the node's comes from node.registry): the four sources the golden files were made for.
SOURCES = ("bluetooth", "roc", "spotify", "radio")
EQ_CONTROLS = Path("/var/lib/milo/alsaequal.bin")
RATE = 48000
TONE_S = 0.5  # file sinks are not paced: a short tone keeps every run fast
TONE_DBFS = -20.0
# Playback into a file sink takes milliseconds; this bounds a hung subprocess, it is not a wait.
TIMEOUT = 20.0
BAND_1K = "05. 1 kHz"
# caps Eq10 with every band at 66 % (-0.48 dB each) is not unity: measured +3.4..+3.8 dB from 100 Hz to
# 10 kHz (all bands at 61 % give -0.4 dB). Chains with EQ are compared to the input plus this.
EQ10_FLAT_GAIN_DB = 3.5


def golden_plan(mode: Mode) -> AsoundPlan:
    return AsoundPlan(eq_controls=EQ_CONTROLS, sources=SOURCES, mode=mode)


def defined(text: str, kind: str = "pcm") -> list[str]:
    return re.findall(rf"^{kind}\.(\w+) {{$", text, flags=re.MULTILINE)


def block(text: str, name: str, kind: str = "pcm") -> str:
    """The body of one top-level definition (the template closes each with `}` in column 0)."""
    found = re.search(rf"^{kind}\.{name} {{\n(.*?)^}}$", text, flags=re.MULTILINE | re.DOTALL)
    assert found, f"{kind}.{name} is not defined"
    return found.group(1)


def slave_of(text: str, name: str) -> str:
    found = re.search(r'^\s*(?:slave\.)?pcm "([^"]+)"$', block(text, name), flags=re.MULTILINE)
    assert found, f"pcm.{name} has no slave"
    return found.group(1)


def refers_to(text: str, alias: str) -> str:
    found = re.search(r'^\s*@func refer\n\s*name "pcm\.(\w+)"$', block(text, alias), flags=re.MULTILINE)
    assert found, f"pcm.{alias} is not a reference"
    return found.group(1)


# ---- rendering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_rendered_file_matches_golden(mode: Mode) -> None:
    text = render_asound(golden_plan(mode))
    path = GOLDEN / f"{mode}.conf"
    if os.environ.get("MILO_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no {path.name}: run with MILO_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path.name} differs: run with MILO_UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("mode", MODES)
def test_every_source_has_every_chain_and_an_alias_on_the_mode(mode: Mode) -> None:
    text = render_asound(golden_plan(mode))
    names = defined(text)
    assert len(names) == len(set(names))
    for source in SOURCES:
        for each in MODES:
            assert pcm_name(source, each) in names
        assert refers_to(text, alias_name(source)) == pcm_name(source, mode)
    assert defined(text, "ctl") == [EQ_CTL]


def test_header_names_the_mode_and_sources_and_extra_comes_last() -> None:
    text = render_asound(
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=SOURCES, mode="multiroom_eq", extra="pcm.x {\n}\n")
    )
    head = text.splitlines()[:3]
    assert "do not edit" in head[0]
    assert head[1:] == ["# mode: multiroom_eq", "# sources: bluetooth roc spotify radio"]
    assert text.endswith("\npcm.x {\n}\n")


def test_a_new_source_gets_its_pcms_and_the_next_subdevice_without_a_template_change() -> None:
    sources = (*SOURCES, "airplay")
    text = render_asound(AsoundPlan(eq_controls=EQ_CONTROLS, sources=sources, mode="multiroom"))
    assert loopback_subdevice("airplay", sources) == 4
    assert slave_of(text, "milo_airplay_multiroom") == "hw:Loopback,0,4"
    assert slave_of(text, "milo_airplay_multiroom_eq_float") == "milo_airplay_multiroom"
    assert refers_to(text, "milo_airplay") == "milo_airplay_multiroom"
    # The existing sources keep their subdevices: snapserver's streams must not move.
    assert [slave_of(text, pcm_name(s, "multiroom")) for s in SOURCES] == [
        f"hw:Loopback,0,{n}" for n in range(4)
    ]


def test_direct_chain_mixes_through_dmix_on_the_card() -> None:
    text = render_asound(golden_plan("direct"))
    dmix = block(text, "milo_dmix")
    assert "type dmix" in dmix
    assert 'pcm "hw:sndrpihifiberry,0"' in dmix
    for line in ("ipc_key_add_uid false", "ipc_perm 0666", "format S32_LE", "rate 48000", "period_time 0"):
        assert line in dmix
    assert re.search(r"bindings \{\s+0 0\s+1 1\s+\}", dmix)
    for source in SOURCES:
        assert slave_of(text, pcm_name(source, "direct")) == "milo_dmix"
        assert slave_of(text, f"{pcm_name(source, 'direct_eq')}_float") == pcm_name(source, "direct")


@pytest.mark.parametrize(
    ("card", "output"),
    [(CardSettings(dmix=False), "hw:sndrpihifiberry,0"), (CardSettings(pcm="my_sink"), "my_sink")],
)
def test_without_dmix_the_chain_opens_the_card_output_itself(card: CardSettings, output: str) -> None:
    text = render_asound(AsoundPlan(eq_controls=EQ_CONTROLS, sources=SOURCES, card=card))
    assert "milo_dmix" not in defined(text)
    assert slave_of(text, "milo_radio_direct") == output


def test_every_output_and_the_equalizer_are_preceded_by_a_plug_pinning_the_format() -> None:
    text = render_asound(golden_plan("direct"))
    chains: tuple[tuple[Mode, Mode, str], ...] = (
        ("direct", "direct_eq", "S32_LE"),
        ("multiroom", "multiroom_eq", "S16_LE"),
    )
    for source in SOURCES:
        for plain, eq, fmt in chains:
            body = block(text, pcm_name(source, plain))
            assert "type plug" in body
            assert f"format {fmt}" in body
            body = block(text, pcm_name(source, eq))
            assert "type plug" in body
            assert "format FLOAT_LE" in body  # the only format alsaequal takes
            assert slave_of(text, slave_of(text, pcm_name(source, eq))) == pcm_name(source, plain)


@pytest.mark.parametrize(
    "plan",
    [
        AsoundPlan(eq_controls=Path("alsaequal.bin"), sources=SOURCES),
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=("radio", "Radio Two")),
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=("radio", "radio")),
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=tuple(f"s{n}" for n in range(9))),
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=SOURCES, loopback=LoopbackSettings(pcm={"airplay": "x"})),
        AsoundPlan(eq_controls=EQ_CONTROLS, sources=SOURCES, card=CardSettings(format='S16_LE" }')),
    ],
    ids=[
        "relative-controls",
        "bad-source-name",
        "duplicate-source",
        "ninth-subdevice",
        "unknown-source",
        "format",
    ],
)
def test_plans_that_would_fail_at_open_time_are_refused_when_rendering(plan: AsoundPlan) -> None:
    with pytest.raises(ValueError):
        render_asound(plan)


# ---- real alsa-lib: file sinks instead of the DAC and the Loopback ------------------------------------


def file_sinks(out: Path, names: Sequence[str]) -> str:
    """`pcm.test_<name>` writing out/<name>.wav; the plug pins S16_LE because the file plugin would write
    float data (alsaequal's) under a header claiming 32-bit integers."""
    lines = []
    for name in names:
        lines += [
            f"pcm.test_{name} {{",
            f'    type plug\n    slave {{ pcm "test_{name}_file"  format S16_LE  rate {RATE}  channels 2 }}',
            "}",
            f"pcm.test_{name}_file {{",
            f'    type file\n    slave.pcm "null"\n    format "wav"\n    file "{out / name}.wav"',
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Alsa:
    """alsa-lib in subprocesses (it caches its configuration per process) with a rendered test config."""

    tmp: Path
    plan: AsoundPlan
    env: dict[str, str]

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def run(self, *args: str) -> str:
        done = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return done.stdout

    def play(self, pcm: str, seconds: float = TONE_S, dbfs: float = TONE_DBFS) -> None:
        wav = self.tmp / "tone.wav"
        write_wav(wav, tone(1000, seconds, RATE, dbfs), RATE)
        for old in self.out.iterdir():
            old.unlink()
        self.run("aplay", "-q", "-D", pcm, str(wav))

    def written(self) -> list[str]:
        return sorted(p.stem for p in self.out.iterdir())

    def level(self, sink: str) -> float:
        """The played tone's level, skipping the EQ filters' settling and aplay's silent padding."""
        samples, rate = read_wav(self.out / f"{sink}.wav")
        assert rate == RATE
        assert peak_hz(samples, rate) == pytest.approx(1000, abs=2)
        return level_dbfs(samples[int(0.1 * rate) : int(TONE_S * rate)])


def alsa_for(tmp_path: Path, mode: Mode, sources: Sequence[str] = SOURCES) -> Alsa:
    installed = Path("/etc/asound.conf")
    if installed.exists() and "milo_" in installed.read_text(errors="replace"):
        # alsa-lib loads /etc/asound.conf after ALSA_CONFIG_PATH: its milo_* would merge into ours.
        pytest.skip("/etc/asound.conf defines milo_* PCMs (an installed node)")
    out = tmp_path / "out"
    out.mkdir()
    plan = AsoundPlan(
        eq_controls=tmp_path / "alsaequal.bin",
        mode=mode,
        sources=sources,
        card=CardSettings(pcm="test_card"),  # dmix stays on: card.pcm must replace it
        loopback=LoopbackSettings(pcm={s: f"test_loop_{s}" for s in sources}),
        extra=file_sinks(out, ["card", *(f"loop_{s}" for s in sources)]),
    )
    conf = tmp_path / "asound.conf"
    conf.write_text(render_asound(plan))
    env = dict(os.environ)
    # HOME and XDG_CONFIG_HOME keep the developer's own ~/.asoundrc out of the test.
    env.update(
        ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}",
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
    )
    return Alsa(tmp_path, plan, env)


def sink_of(mode: Mode, source: str = "radio") -> str:
    return "card" if mode.startswith("direct") else f"loop_{source}"


# `plug:` over the alias: some players wrap whatever device they are given, and a plug over a plug in
# front of alsaequal is what makes alsa-lib 1.2.8 abort.
@pytest.mark.parametrize("device", ["milo_radio_{mode}", "milo_radio", "plug:milo_radio"])
@pytest.mark.parametrize("mode", MODES)
def test_tone_reaches_the_output_of_the_mode(tmp_path: Path, mode: Mode, device: str) -> None:
    alsa = alsa_for(tmp_path, mode)
    alsa.play(device.format(mode=mode))
    assert alsa.written() == [sink_of(mode)]
    level = alsa.level(sink_of(mode))
    if mode.endswith("_eq"):  # a fresh controls file: every band at 66 %
        assert level == pytest.approx(TONE_DBFS + EQ10_FLAT_GAIN_DB, abs=1.0)
    else:  # only S16 -> S32 -> S16 conversions, which are lossless
        assert level == pytest.approx(TONE_DBFS, abs=0.05)


def test_a_running_player_changes_chain_by_reopening_another_name(tmp_path: Path) -> None:
    alsa = alsa_for(tmp_path, "direct")
    for mode in MODES:
        alsa.play(pcm_name("spotify", mode))
        assert alsa.written() == [sink_of(mode, "spotify")]


def test_a_new_source_plays_into_its_own_loopback_sink(tmp_path: Path) -> None:
    alsa = alsa_for(tmp_path, "multiroom", (*SOURCES, "airplay"))
    alsa.play(alias_name("airplay"))
    assert alsa.written() == ["loop_airplay"]


def test_aplay_lists_every_milo_pcm(tmp_path: Path) -> None:
    alsa = alsa_for(tmp_path, "direct_eq")
    listed = {line for line in alsa.run("aplay", "-L").splitlines() if line and not line[0].isspace()}
    text = render_asound(alsa.plan)
    ours = {name for name in defined(text) if name.startswith("milo_")}
    expected = {pcm_name(s, m) for s in SOURCES for m in MODES} | {alias_name(s) for s in SOURCES}
    assert expected <= ours
    assert ours <= listed


def test_equalizer_band_changes_the_level_of_a_1khz_tone(tmp_path: Path) -> None:
    alsa = alsa_for(tmp_path, "direct_eq")
    assert f"'{BAND_1K}'" in alsa.run("amixer", "-D", EQ_CTL, "scontrols")
    levels = {}
    for percent in (66, 100, 30):  # dB = -48 + 0.72 * percent: about 0, +24 and -26 dB
        alsa.run("amixer", "-q", "-D", EQ_CTL, "sset", BAND_1K, f"{percent}%")
        alsa.play("milo_radio_direct_eq", dbfs=-30.0)
        levels[percent] = alsa.level("card")
    assert (tmp_path / "alsaequal.bin").exists()
    assert levels[66] == pytest.approx(-30.0 + EQ10_FLAT_GAIN_DB, abs=1.0)
    assert levels[100] >= levels[66] + 6
    assert levels[30] <= levels[66] - 3
