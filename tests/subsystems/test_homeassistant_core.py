"""The real Home Assistant core, headless, against a real node: its entities appear, its calls reach /set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from harness.fake_apt import FakeApt
from harness.ha_core import home_assistant
from harness.ha_venv import ROOT
from harness.ky040 import Ky040, mock_pins
from harness.pulse import Pulse
from node import registry
from tests.conftest import NodeFactory
from tests.helpers import probe
from tests.subsystems.test_homeassistant import announced, components, config_topic, sections

VENV = ROOT / os.environ.get("HA_VENV", ".venv-ha")
pytestmark = [
    pytest.mark.skipif(
        not (VENV / ".milo-ha-installed").exists(),
        reason=f"no Home Assistant venv at {VENV}: scripts/ha-venv.sh builds it (make test does)",
    ),
    pytest.mark.timeout(240),
]
INSTALL = 1  # UpdateEntityFeature.INSTALL
# What the tests' Bluetooth (no D-Bus to reach) leaves unavailable.
BLUETOOTH = (("sensor", "device"), ("switch", "pairable"), ("button", "disconnect"))


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    with mock_pins() as factory:
        yield factory


def number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


async def test_home_assistant_shows_the_entities_and_its_service_calls_reach_the_node(
    run_node: NodeFactory, pulse: Pulse, pins: MockFactory, tmp_path: Path
) -> None:
    # A newer snapserver in the (fake) package archive; the tests' install step cannot run, so an
    # install fails, and says so.
    apt = FakeApt(tmp_path / "apt", {"snapserver": {"installed": "0.26.0", "candidate": "0.27.0"}})
    config = sections(tmp_path)
    config["update"] = {
        **config["update"],
        "apt_cache": apt.apt_cache,
        "apt_get": apt.apt_get,
        "first_check_s": 0,
        "check_every_h": 0,
    }
    # A press that does nothing on the node: it only goes out on knob/event, to the event entity.
    config["knob"] = {
        **config["knob"],
        **{"press": "none", "double_press": "none", "long_press_s": 5, "wake_screen": False},
    }
    async with run_node(subsystems=registry.ALL, sections=config) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        await p.subscribe("homeassistant/#")
        await announced(p, r, "volume", "source", "play", "screen", "update_milo", "update_snapserver")
        # Named from the device ("Milo <id>") and the entity: what `default_entity_id` says for later
        # releases, which 2025.4 does not read yet.
        prefix = f"milo_{r.node.config.node_id}"
        volume, source, play = f"number.{prefix}_volume", f"select.{prefix}_source", f"button.{prefix}_play"
        knob = f"event.{prefix}_knob"
        screen, milo, snapserver = (
            f"light.{prefix}_screen",
            f"update.{prefix}_milo",
            f"update.{prefix}_snapserver",
        )

        async with home_assistant(tmp_path / "ha", broker_port=r.port) as core:
            # It subscribed to the discovery prefix, found the retained device config, and read the
            # retained states the entities refer to.
            states = await core.until(
                lambda s: (
                    all(s.get(e, {}).get("state") not in (None, "unavailable") for e in (volume, source))
                    and s
                ),
                what="the node's volume and source entities, available",
            )
            assert number(states[volume]["state"]) == 100.0
            assert states[volume]["attributes"]["max"] == 100
            assert states[source]["state"] == "Off"
            assert "radio" in states[source]["attributes"]["options"]
            assert play in states
            # Every entity the node announced is one Home Assistant made, available but Bluetooth's.
            device = p.on(config_topic(r))[-1]
            wanted = {c["unique_id"] for c in components(device).values() if len(c) > 1}
            made = await core.until(
                lambda entries: (
                    {e["unique_id"]: e["entity_id"] for e in entries if e["platform"] == "mqtt"}
                    if wanted <= {e["unique_id"] for e in entries}
                    else None
                ),
                read=core.entity_registry,
                what=f"the {len(wanted)} entities announced, in the entity registry",
            )
            # Unavailable: Bluetooth's own entities. Its source state and status sensors say it as a
            # value, `not_available`: the word `unavailable` would read as the entity unavailable.
            expected = sorted(f"{e}.{prefix}_bluetooth_{k}" for e, k in BLUETOOTH)
            await core.until(
                lambda s: sorted(made[u] for u in wanted if s[made[u]]["state"] == "unavailable") == expected,
                what=f"only {expected} unavailable (sources still starting are, for a moment)",
            )
            states = await core.states()
            for sensor in ("bluetooth_state", "bluetooth_status"):
                assert states[f"sensor.{prefix}_{sensor}"]["state"] == "not_available"
            assert states[f"sensor.{prefix}_bluetooth_state"]["attributes"]["error"]

            # The knob pressed (gpiozero's mock pins): its event entity gets the gesture.
            Ky040(pins).press()
            await p.wait_for(f"{r.base}/knob", lambda g: g.json()["pressed"] is True)
            Ky040(pins).release()
            await p.wait_for(f"{r.base}/knob/event", lambda g: g.json()["event_type"] == "press")
            await core.until(
                lambda s: s.get(knob, {}).get("attributes", {}).get("event_type") == "press",
                what=f"{knob} with a press",
            )

            # The node's own version, as an update entity; this node runs from this checkout (an
            # editable install, updated with git), so Home Assistant offers no Install for it.
            await core.until(
                lambda s: s.get(milo, {}).get("attributes", {}).get("installed_version"), what=milo
            )
            attributes = (await core.states())[milo]["attributes"]
            assert not attributes["supported_features"] & INSTALL
            assert "running from a checkout" in attributes["release_summary"]

            # A service call: Home Assistant publishes on volume/set, the node sets it and echoes it.
            mark = p.mark()
            status, answer = await core.call(
                "POST", "/api/services/number/set_value", {"entity_id": volume, "value": 33}
            )
            assert status == 200, answer
            command = await p.wait_for(f"{r.base}/volume/set", after=mark)
            assert command.payload == b"33"
            await p.wait_for(f"{r.base}/volume", lambda g: g.json().get("percent") == 33, after=mark)
            await core.until(
                lambda s: number(s[volume]["state"]) == 33.0, what="volume at 33 in Home Assistant"
            )

            mark = p.mark()
            status, answer = await core.call(
                "POST", "/api/services/select/select_option", {"entity_id": source, "option": "radio"}
            )
            assert status == 200, answer
            await p.wait_for(f"{r.base}/source", lambda g: g.json().get("active") == "radio", after=mark)
            await core.until(lambda s: s[source]["state"] == "radio", what="source radio in Home Assistant")

            # The backlight as a light: Home Assistant's 0..255 brightness scaled to the screen's percent.
            mark = p.mark()
            status, answer = await core.call(
                "POST", "/api/services/light/turn_on", {"entity_id": screen, "brightness_pct": 40}
            )
            assert status == 200, answer
            await p.wait_for(f"{r.base}/screen", lambda g: g.json().get("brightness") == 40, after=mark)
            await core.until(
                lambda s: s[screen]["state"] == "on" and s[screen]["attributes"].get("brightness") == 102,
                what="the screen on at 40 % (102 of 255) in Home Assistant",
            )

            # An update: on while the archive has a newer version; Install reaches update/set.
            states = await core.until(
                lambda s: s.get(snapserver, {}).get("state") == "on" and s,
                timeout=60,  # the first check runs apt-cache and every program's --version
                what=f"{snapserver} on (0.27.0 newer than 0.26.0)",
            )
            assert states[snapserver]["attributes"]["installed_version"] == "0.26.0"
            assert states[snapserver]["attributes"]["latest_version"] == "0.27.0"
            assert states[snapserver]["attributes"]["supported_features"] & INSTALL
            mark = p.mark()
            status, answer = await core.call(
                "POST", "/api/services/update/install", {"entity_id": snapserver}
            )
            assert status == 200, answer
            command = await p.wait_for(f"{r.base}/update/set", after=mark)
            assert command.json() == {"install": "snapserver"}
            await p.wait_for(
                f"{r.base}/update",
                lambda g: (g.json().get("job") or {}).get("result") == "failed",
                after=mark,
                timeout=30,
            )
            await core.until(
                lambda s: (
                    str(s[snapserver]["attributes"].get("release_summary")).startswith("failed: ")
                    and not s[snapserver]["attributes"]["in_progress"]
                ),
                what="the failed install's detail in Home Assistant",
            )

            assert core.problems() == []
