"""The router on real ALSA: asound.conf written atomically, routing state, live chain changes, 100 toggles."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.alsa_sinks import pcms_listed, play, sink_config, sinks_dir
from harness.audio import level_dbfs, peak_hz, read_wav, tone, write_wav
from node import registry
from node.subsystems.info import Info
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory
from tests.helpers import Got, probe


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    write_wav(path, tone(1000, 0.5, dbfs=-20), 48000)
    return path


def routing(pred: Callable[[dict[str, Any]], bool]) -> Callable[[Got], bool]:
    return lambda g: pred(g.json())


async def test_start_writes_config_and_publishes_routing(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    async with (
        run_node(subsystems=(Info, Routing), sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        await p.subscribe(f"{r.base}/routing")
        state = (await p.wait_for(f"{r.base}/routing")).json()
        assert state["mode"] == "direct"
        assert (state["multiroom"], state["equalizer"]) == (False, False)
        assert state["pcms"] == {s: f"milo_{s}_direct" for s in registry.source_names()}
        assert state["output"] == "test_direct"
        conf = Path(state["asound_conf"])
        assert conf == r.node.config.data_dir / "asound.conf"
        listed = pcms_listed(conf)
        for source in registry.source_names():
            assert f"milo_{source}" in listed
            for mode in ("direct", "direct_eq", "multiroom", "multiroom_eq"):
                assert f"milo_{source}_{mode}" in listed


async def test_toggles_move_the_chain_without_changing_pcm_definitions(
    run_node: NodeFactory, tmp_path: Path, tone_wav: Path
) -> None:
    out = sinks_dir(tmp_path)
    async with (
        run_node(subsystems=(Info, Routing), sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/routing"
        await p.subscribe(topic)
        first = (await p.wait_for(topic)).json()
        conf = Path(first["asound_conf"])
        await p.publish(f"{topic}/set", {"multiroom": True})
        state = (await p.wait_for(topic, routing(lambda s: s["multiroom"]))).json()
        assert state["pcms"]["radio"] == "milo_radio_multiroom"
        assert state["generation"] > first["generation"]
        # The source's own PCM for this mode reaches its Loopback subdevice (a file here) ...
        play(conf, state["pcms"]["radio"], tone_wav)
        samples, rate = read_wav(out / "loop_radio.wav")
        assert abs(peak_hz(samples, rate) - 1000) < 20
        # ... and so does the alias, for daemons that can only be restarted.
        (out / "loop_radio.wav").unlink()
        play(conf, "milo_radio", tone_wav)
        assert abs(level_dbfs(read_wav(out / "loop_radio.wav")[0]) + 20) < 1.5
        await p.publish(f"{topic}/set", {"multiroom": False})
        state = (await p.wait_for(topic, routing(lambda s: not s["multiroom"]))).json()
        play(conf, state["pcms"][registry.source_names()[0]], tone_wav)
        samples, rate = read_wav(out / "direct.wav")
        assert abs(peak_hz(samples, rate) - 1000) < 20


async def test_hundred_toggles_leave_a_valid_config_and_consistent_state(
    run_node: NodeFactory, tmp_path: Path, tone_wav: Path
) -> None:
    out = sinks_dir(tmp_path)
    rng = random.Random(7)
    async with (
        run_node(subsystems=(Info, Routing), sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/routing"
        await p.subscribe(topic)
        await p.wait_for(topic)
        flags = {"multiroom": False, "equalizer": False}
        for _ in range(100):
            key = rng.choice(["multiroom", "equalizer"])
            flags[key] = not flags[key]
            await p.publish(f"{topic}/set", {key: flags[key]})
        # The answer to a /get comes after every command before it: an earlier state with the same
        # flags (they come back often in 100 toggles) could be taken for the last one.
        final = (await p.request(f"{r.base}/routing/get", {}))["result"]
        assert (final["multiroom"], final["equalizer"]) == tuple(flags.values())
        conf = Path(final["asound_conf"])
        text = await asyncio.to_thread(conf.read_text)
        mode = final["mode"]
        assert mode == ("multiroom" if flags["multiroom"] else "direct") + (
            "_eq" if flags["equalizer"] else ""
        )
        assert f"milo_radio_{mode}" in text.split("pcm.milo_radio {", 1)[1].split("}", 1)[0]
        assert len(pcms_listed(conf)) >= 5 * len(registry.source_names())  # 20 with four sources
        play(conf, "milo_radio", tone_wav)
        sink = "loop_radio" if flags["multiroom"] else "direct"
        assert abs(peak_hz(*read_wav(out / f"{sink}.wav")) - 1000) < 20
        assert not list(conf.parent.glob(".asound.conf.tmp"))


async def test_bad_routing_commands_change_nothing(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    async with (
        run_node(subsystems=(Info, Routing), sections={"routing": sink_config(out)}) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/routing"
        await p.subscribe(topic, f"{r.base}/error")
        before = (await p.wait_for(topic)).json()
        for bad in ['{"multiroom": "maybe"}', "{}", "loud", '{"eq": true}', "[1]"]:
            mark = p.mark()
            await p.publish(f"{topic}/set", bad)
            err = (await p.wait_for(f"{r.base}/error", after=mark)).json()
            assert err["code"] == "invalid_payload", bad
        mark = p.mark()
        await p.publish(f"{topic}/get", "")
        assert (await p.wait_for(topic, after=mark)).json() == before


async def test_flags_survive_a_restart(run_node: NodeFactory, tmp_path: Path) -> None:
    out = sinks_dir(tmp_path)
    data = tmp_path / "data"
    sections = {"routing": sink_config(out)}
    async with (
        run_node(subsystems=(Info, Routing), sections=sections, data_dir=data) as r,
        probe(r.port) as p,
    ):
        await p.subscribe(f"{r.base}/routing")
        await p.publish(f"{r.base}/routing/set", {"equalizer": True, "multiroom": True})
        await p.wait_for(f"{r.base}/routing", routing(lambda s: s["mode"] == "multiroom_eq"))
    async with (
        run_node(subsystems=(Info, Routing), sections=sections, data_dir=data) as r,
        probe(r.port) as p,
    ):
        await p.subscribe(f"{r.base}/routing")
        state = (await p.wait_for(f"{r.base}/routing")).json()
        assert state["mode"] == "multiroom_eq"
        assert json.loads((data / "routing.json").read_text())["data"] == {
            "multiroom": True,
            "equalizer": True,
        }


async def test_a_card_that_does_not_exist_is_said_in_routing_and_on_error(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    # The sink config names its own output PCM (a local-only key): without it the card is what counts.
    sections = {"routing": {**sink_config(sinks_dir(tmp_path)), "output_pcm": ""}}
    async with run_node(subsystems=(Info, Routing), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error", f"{r.base}/routing")
        await p.wait_for(f"{r.base}/routing")
        mark = p.mark()
        await p.publish(f"{r.base}/routing/config/set", {"card": "nosuchdac"})
        err = (
            await p.wait_for(f"{r.base}/error", lambda g: g.json()["code"] == "unknown_card", after=mark)
        ).json()
        assert "nosuchdac" in err["error"]
        state = await p.wait_for(f"{r.base}/routing", lambda g: bool(g.json().get("problem")), after=mark)
        assert "no sound card 'nosuchdac'" in state.json()["problem"]


async def test_what_reaches_the_file_system_or_alsa_verbatim_is_not_set_over_mqtt(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    sections = {"routing": sink_config(sinks_dir(tmp_path))}
    async with run_node(subsystems=(Info, Routing), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error", f"{r.base}/routing/config")
        before = (await p.wait_for(f"{r.base}/routing/config")).json()
        for update in (
            {"eq_controls": "/etc/cron.d/x"},
            {"extra": "pcm.evil { type hw }"},
            {"output_pcm": "evil"},
            {"loopback_pcms": {"radio": "evil"}},
            {"card": "x" * 100_000},
        ):
            mark = p.mark()
            await p.publish(f"{r.base}/routing/config/set", update)
            err = (await p.wait_for(f"{r.base}/error", after=mark)).json()
            key = next(iter(update))
            assert err["code"] == ("invalid_config" if key == "card" else "local_only"), err
            assert key in err["error"]
        mark = p.mark()
        await p.publish(f"{r.base}/routing/config/get", "")
        assert (await p.wait_for(f"{r.base}/routing/config", after=mark)).json() == before
