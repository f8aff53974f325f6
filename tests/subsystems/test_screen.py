"""The screen on a fake sysfs backlight: on/off, brightness, the timeout, what wakes it, failures."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.adapters.backlight import find
from node.framework.errors import SubsystemUnavailableError
from node.subsystems.info import Info
from node.subsystems.screen import Screen
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, expect_errors, probe


def fake_backlight(root: Path, name: str = "10-0045", max_brightness: int = 255) -> Path:
    """A /sys/class/backlight/<name> as the DSI panels' drivers lay it out."""
    path = root / name
    path.mkdir(parents=True)
    (path / "max_brightness").write_text(f"{max_brightness}\n")
    (path / "brightness").write_text("0\n")
    (path / "actual_brightness").write_text("0\n")
    (path / "bl_power").write_text("4\n")
    return path


def read(path: Path, name: str) -> int:
    return int((path / name).read_text())


def where(**fields: Any) -> Any:
    return lambda g: bool(g.payload) and all(g.json().get(k) == v for k, v in fields.items())


@contextlib.asynccontextmanager
async def screen_node(
    run_node: NodeFactory, backlight: Path, *, data_dir: Path | None = None, **section: Any
) -> AsyncIterator[tuple[Running, Probe, str]]:
    sections = {"screen": {"backlight": str(backlight), **section}}
    async with (
        run_node(subsystems=(Info, Screen), sections=sections, data_dir=data_dir) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/screen"
        await p.subscribe(f"{r.base}/#")
        await p.wait_for(topic, where(available=True))
        yield r, p, topic


async def command(p: Probe, topic: str, payload: str | dict[str, Any], **fields: Any) -> dict[str, Any]:
    mark = p.mark()
    await p.publish(f"{topic}/set", payload)
    got: Got = await p.wait_for(topic, where(**fields), after=mark)
    state: dict[str, Any] = got.json()
    return state


async def test_on_at_start_then_off_on_and_brightness(run_node: NodeFactory, tmp_path: Path) -> None:
    bl = fake_backlight(tmp_path / "sys")
    async with screen_node(run_node, bl) as (r, p, topic):
        state = (await p.wait_for(topic)).json()
        assert state["on"] is True
        assert (state["device"], state["max_brightness"], state["raw"]) == (str(bl), 255, 255)
        assert (read(bl, "brightness"), read(bl, "bl_power")) == (255, 0)
        await command(p, topic, "off", on=False)
        assert (read(bl, "brightness"), read(bl, "bl_power")) == (0, 4)
        await command(p, topic, "on", on=True)
        assert (read(bl, "brightness"), read(bl, "bl_power")) == (255, 0)
        state = await command(p, topic, {"brightness": 50}, brightness=50)
        assert read(bl, "brightness") == state["raw"] == 128
        # A brightness while dark lights it again: whoever sets it wants to see it.
        await command(p, topic, "off", on=False)
        await command(p, topic, {"brightness": 1}, on=True, brightness=1)
        assert read(bl, "brightness") == 3  # 1 % is dim, never dark
        await command(p, topic, "toggle", on=False)
        await command(p, topic, "toggle", on=True)
        # Every accepted command is echoed, an activity that changes nothing included.
        await command(p, topic, "activity", on=True)
        await command(p, topic, {"activity": True}, on=True)
        cases = {"dim": "invalid_payload", '{"brightness": 0}': "invalid_payload", "{}": "invalid_payload"}
        await expect_errors(p, r.base, f"{topic}/set", cases)


async def test_brightness_and_timeout_from_commands_are_saved_in_the_config(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    bl = fake_backlight(tmp_path / "sys")
    data = tmp_path / "data"
    async with screen_node(run_node, bl, data_dir=data) as (r, p, topic):
        mark = p.mark()
        for level in (10, 20, 40):  # a slider drag: saved once, the last value
            await command(p, topic, {"brightness": level}, brightness=level)
        await command(p, topic, {"timeout_s": 120}, timeout_s=120)
        config = f"{topic}/config"
        await p.wait_for(config, where(brightness=40, timeout_s=120), after=mark)
        assert [g.json()["brightness"] for g in p.on(config, mark)] == [40]
        # Its own save coming back changes nothing it already did.
        await p.quiet(topic, after=p.mark(), probe_topic=f"{r.base}/test/flush")
    async with screen_node(run_node, bl, data_dir=data) as (r, p, topic):
        state = (await p.wait_for(topic)).json()
        assert (state["brightness"], state["timeout_s"]) == (40, 120)
        assert read(bl, "brightness") == 102
        # The setting itself (the settings page) applies at once too.
        mark = p.mark()
        await p.publish(f"{topic}/config/set", {"brightness": 60})
        await p.wait_for(topic, where(brightness=60), after=mark)
        assert read(bl, "brightness") == 153


async def test_it_sleeps_after_the_timeout_and_activity_wakes_it(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    bl = fake_backlight(tmp_path / "sys")
    async with screen_node(run_node, bl, timeout_s=1) as (_, p, topic):
        state = (await p.wait_for(topic)).json()
        assert state["on"] is True
        assert isinstance(state["sleeps_at"], int)
        state = (await p.wait_for(topic, where(on=False))).json()
        assert state["sleeps_at"] is None
        assert read(bl, "brightness") == 0
        state = await command(p, topic, "activity", on=True)
        assert isinstance(state["sleeps_at"], int)
        assert read(bl, "brightness") == 255
        # Timeout 0: never dark.
        state = await command(p, topic, {"timeout_s": 0}, timeout_s=0)
        assert (state["on"], state["sleeps_at"]) == (True, None)


async def test_a_playing_source_keeps_it_on_and_a_source_starting_wakes_it(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    bl = fake_backlight(tmp_path / "sys")
    async with screen_node(run_node, bl, timeout_s=1) as (r, p, topic):
        base = r.base
        mark = p.mark()
        await p.publish(f"{base}/player", {"active": "radio", "state": "playing"}, retain=True)
        state = (await p.wait_for(topic, where(playing=True), after=mark)).json()
        assert (state["on"], state["sleeps_at"]) == (True, None)
        mark = p.mark()
        await p.publish(f"{base}/player", {"active": "radio", "state": "paused"}, retain=True)
        await p.wait_for(topic, where(playing=False), after=mark)
        await p.wait_for(topic, where(on=False), after=mark)  # the timeout runs from the pause
        # A source that starts playing on its own (a phone on Spotify) wakes it.
        mark = p.mark()
        await p.publish(f"{base}/source", {"states": {"spotify": "playing"}}, retain=True)
        await p.wait_for(topic, where(on=True, playing=True), after=mark)
        await p.publish(f"{base}/source", {"states": {"spotify": "idle"}}, retain=True)
        await p.wait_for(topic, where(on=False), after=mark)
        # So does one that connects (a phone pairs over Bluetooth) without playing yet.
        mark = p.mark()
        await p.publish(
            f"{base}/source", {"states": {"spotify": "idle", "bluetooth": "connected"}}, retain=True
        )
        state = (await p.wait_for(topic, where(on=True), after=mark)).json()
        assert state["playing"] is False
        await p.wait_for(topic, where(on=False), after=mark)
        # What stays the same wakes nothing: the screen stays dark.
        mark = p.mark()
        await p.publish(
            f"{base}/source", {"states": {"spotify": "idle", "bluetooth": "connected"}}, retain=True
        )
        await p.quiet(topic, after=mark, probe_topic=f"{base}/test/flush")
        for path in ("player", "source"):
            await p.publish(f"{base}/{path}", b"", retain=True)


async def test_max_brightness_and_inversion_from_the_config(run_node: NodeFactory, tmp_path: Path) -> None:
    bl = fake_backlight(tmp_path / "sys", max_brightness=255)
    async with screen_node(run_node, bl, max_brightness=31, invert=True, bl_power=False) as (_, p, topic):
        state = (await p.wait_for(topic)).json()
        assert (state["max_brightness"], state["raw"]) == (31, 0)  # inverted: 0 is the brightest
        assert read(bl, "bl_power") == 4  # left alone
        await command(p, topic, "off", on=False)
        assert read(bl, "brightness") == 31
        await command(p, topic, {"brightness": 50}, on=True)
        assert read(bl, "brightness") == 31 - 16


async def test_a_broken_path_is_unavailable_with_the_reason(run_node: NodeFactory, tmp_path: Path) -> None:
    missing = tmp_path / "sys" / "nothing-here"
    sections = {"screen": {"backlight": str(missing)}}
    async with run_node(subsystems=(Info, Screen), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        info = await p.wait_for(
            f"{r.base}/info", lambda g: g.json()["subsystems"]["screen"]["status"] == "unavailable"
        )
        assert info.json()["subsystems"]["screen"]["detail"] == f"no backlight at {missing}"
        state = (await p.wait_for(f"{r.base}/screen")).json()
        assert (state["available"], state["on"], state["error"]) == (
            False,
            False,
            f"no backlight at {missing}",
        )
        await expect_errors(p, r.base, f"{r.base}/screen/set", {"on": "unavailable"})
        # Once the backlight is there (a driver that loaded late), it is found again on its own.
        fake_backlight(missing.parent, missing.name)
        await p.wait_for(f"{r.base}/screen", where(available=True, on=True), timeout=10)


async def test_a_write_that_fails_is_an_error_record_and_nothing_crashes(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    bl = fake_backlight(tmp_path / "sys")
    async with screen_node(run_node, bl) as (r, p, topic):
        (bl / "brightness").unlink()
        (bl / "brightness").mkdir()  # root writes anywhere: a directory is what refuses it
        (err,) = await expect_errors(p, r.base, f"{topic}/set", {"off": "backlight_error"})
        assert str(bl / "brightness") in err["error"]
        state = (await p.wait_for(topic, lambda g: g.json()["error"] is not None)).json()
        assert state["available"] is True
        (bl / "brightness").rmdir()
        (bl / "brightness").write_text("0\n")
        state = await command(p, topic, "on", on=True, error=None)
        assert read(bl, "brightness") == 255
        info = await p.wait_for(f"{r.base}/info", lambda g: "screen" in g.json()["subsystems"])
        assert info.json()["subsystems"]["screen"]["status"] == "running"


async def test_a_timeout_that_cannot_darken_is_reported(run_node: NodeFactory, tmp_path: Path) -> None:
    bl = fake_backlight(tmp_path / "sys")
    async with screen_node(run_node, bl, timeout_s=1) as (r, p, topic):
        shutil.rmtree(bl)  # the panel's driver went away
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert (err["code"], err["topic"]) == ("backlight_error", topic)
        state = (await p.wait_for(topic, lambda g: g.json()["error"] is not None)).json()
        assert "brightness" in state["error"]


def test_the_backlight_is_found_by_path_by_name_or_as_the_first_there(tmp_path: Path) -> None:
    root = tmp_path / "backlight"
    with pytest.raises(SubsystemUnavailableError, match="no backlight in"):
        find("", root)
    second = fake_backlight(root, "rpi_backlight")
    first = fake_backlight(root, "10-0045")
    assert find("", root) == first
    assert find("rpi_backlight", root) == second
    assert find(str(second), root) == second
    with pytest.raises(SubsystemUnavailableError, match="no backlight at"):
        find("11-0045", root)
