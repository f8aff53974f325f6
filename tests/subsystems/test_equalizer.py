"""The equalizer on the real alsaequal plug-in: bands in dB, presets, a 1 kHz band changing a 1 kHz tone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from harness.alsa_sinks import play, sink_config, sinks_dir
from harness.audio import level_dbfs, read_wav, tone, write_wav
from node.subsystems.equalizer import Equalizer, raw_of
from node.subsystems.info import Info
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory
from tests.helpers import Got, expect_errors, probe

SUBSYSTEMS = (Info, Routing, Equalizer)


def control(conf: Path, label: str) -> int:
    """What amixer, another process, reads from the alsaequal control (numid = band index + 1)."""
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    numid = int(label.split(".", maxsplit=1)[0]) + 1
    done = subprocess.run(
        ["amixer", "-D", "milo_eq", "cget", f"numid={numid}"],
        env=env, capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    values = done.stdout.strip().splitlines()[-1].split("=", 1)[1]
    return int(values.split(",")[0])


async def test_bands_reach_the_real_controls_and_the_sound(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    wav = tmp_path / "tone.wav"
    write_wav(wav, tone(1000, 0.5, dbfs=-30), 48000)
    sections = {"routing": sink_config(out)}
    async with run_node(subsystems=SUBSYSTEMS, sections=sections) as r, probe(r.port) as p:
        eq = f"{r.base}/equalizer"
        await p.subscribe(eq, f"{r.base}/routing")
        state = (await p.wait_for(eq)).json()
        assert state["bands"] == dict.fromkeys(
            ["31", "63", "125", "250", "500", "1k", "2k", "4k", "8k", "16k"], 0.0
        )
        assert (state["preset"], state["active"]) == ("flat", False)
        conf = Path((await p.wait_for(f"{r.base}/routing")).json()["asound_conf"])
        # alsaequal keeps dB as floats and truncates on read: 67 written reads back 66.
        assert raw_of(0.0) - control(conf, "05. 1 kHz") in (0, 1)
        await p.publish(f"{r.base}/routing/set", {"equalizer": True})
        await p.wait_for(eq, lambda g: g.json()["active"])
        levels = {}
        for gain in (-12, 0, 12):
            mark = p.mark()
            await p.publish(f"{eq}/set", {"band": "1k", "gain_db": gain})

            def applied(g: Got, v: int = gain) -> bool:
                return bool(g.json()["bands"]["1k"] == v)

            got = (await p.wait_for(eq, applied, after=mark)).json()
            assert got["preset"] == ("flat" if gain == 0 else None)
            assert raw_of(gain) - control(conf, "05. 1 kHz") in (0, 1)
            play(conf, "milo_radio", wav)
            levels[gain] = level_dbfs(read_wav(out / "direct.wav")[0])
        assert abs(levels[0] + 30) < 1.0  # flat is flat (Eq10's band overlap is compensated)
        assert levels[12] - levels[0] > 6
        # A cut of one band is shallower: its neighbours overlap 1 kHz (measured -3.5 dB for -12).
        assert levels[0] - levels[-12] > 2


async def test_presets_and_user_presets_persist(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    data = tmp_path / "data"
    sections = {"routing": sink_config(out)}
    async with run_node(subsystems=SUBSYSTEMS, sections=sections, data_dir=data) as r, probe(r.port) as p:
        eq = f"{r.base}/equalizer"
        await p.subscribe(eq)
        await p.wait_for(eq)
        await p.publish(f"{eq}/set", {"preset": "rock"})
        rock = (await p.wait_for(eq, lambda g: g.json()["preset"] == "rock")).json()
        assert rock["bands"]["31"] == 5
        await p.publish(f"{eq}/set", {"bands": {"31": 2.5, "16k": -3}})
        await p.wait_for(eq, lambda g: g.json()["bands"]["16k"] == -3 and g.json()["preset"] is None)
        await p.publish(f"{eq}/set", {"save_preset": "evening"})
        saved = (await p.wait_for(eq, lambda g: "evening" in g.json()["presets"])).json()
        assert saved["preset"] == "evening"
        assert saved["user_presets"] == ["evening"]
        await p.publish(f"{eq}/set", "flat")  # plain text names a preset
        await p.wait_for(eq, lambda g: g.json()["preset"] == "flat")
    stored = json.loads((data / "equalizer.json").read_text())["data"]
    assert stored["user_presets"]["evening"]["31"] == 2.5
    async with run_node(subsystems=SUBSYSTEMS, sections=sections, data_dir=data) as r, probe(r.port) as p:
        eq = f"{r.base}/equalizer"
        await p.subscribe(eq)
        assert "evening" in (await p.wait_for(eq)).json()["presets"]
        await p.publish(f"{eq}/set", {"preset": "evening"})
        await p.wait_for(eq, lambda g: g.json()["bands"]["31"] == 2.5)
        await p.publish(f"{eq}/set", {"delete_preset": "evening"})
        gone = (await p.wait_for(eq, lambda g: "evening" not in g.json()["presets"])).json()
        assert gone["bands"]["31"] == 2.5  # deleting a preset keeps the sound


async def test_off_keeps_the_bands(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    async with (
        run_node(subsystems=SUBSYSTEMS, sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        eq = f"{r.base}/equalizer"
        await p.subscribe(eq)
        await p.publish(f"{r.base}/routing/set", {"equalizer": True})
        await p.publish(f"{eq}/set", {"band": "250", "gain_db": 4})
        await p.wait_for(eq, lambda g: g.json()["active"] and g.json()["bands"]["250"] == 4)
        mark = p.mark()
        await p.publish(f"{r.base}/routing/set", {"equalizer": False})
        off = (await p.wait_for(eq, lambda g: not g.json()["active"], after=mark)).json()
        assert off["bands"]["250"] == 4
        mark = p.mark()
        await p.publish(f"{r.base}/routing/set", {"equalizer": True})
        on = (await p.wait_for(eq, lambda g: g.json()["active"], after=mark)).json()
        assert on["bands"]["250"] == 4


async def test_bad_commands_change_nothing(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    async with (
        run_node(subsystems=SUBSYSTEMS, sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        eq = f"{r.base}/equalizer"
        await p.subscribe(eq, f"{r.base}/error")
        before = (await p.wait_for(eq)).json()
        cases = {
            '{"band": "99", "gain_db": 1}': "unknown_band",
            '{"band": "1k", "gain_db": 1e9}': "out_of_range",
            '{"bands": {"1k": 3, "2k": 99}}': "out_of_range",
            '{"preset": "nope"}': "unknown_preset",
            "nope": "unknown_preset",
            '{"delete_preset": "flat"}': "invalid_payload",
            '{"delete_preset": "never-saved"}': "unknown_preset",
            '{"save_preset": "rock"}': "read_only",
            '{"band": "1k"}': "invalid_payload",
            '{"bands": {}}': "invalid_payload",
        }
        await expect_errors(p, r.base, f"{eq}/set", cases)
        mark = p.mark()
        await p.publish(f"{eq}/get", "")
        assert (await p.wait_for(eq, after=mark)).json() == before
