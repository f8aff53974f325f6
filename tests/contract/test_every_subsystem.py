"""The topic contract on every registered subsystem and both brokers: one added to the registry is covered."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from harness import go_librespot, roc_recv
from harness.alsa_sinks import sink_config, sinks_dir
from harness.net import free_port
from harness.pulse import Pulse
from harness.shairport import fake_program
from harness.snapcast import Ports, multiroom_section
from node import registry
from node.adapters.roc import free_udp_ports
from node.framework.store import Store
from node.framework.subsystem import Status, Subsystem
from node.subsystems.info import Info
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory, Running
from tests.fakes.unplugged import Unplugged
from tests.helpers import Got, Probe, expect_errors, probe

# State fields that move by themselves between two reads; every other field must stay put.
MOVING: dict[str, frozenset[str]] = {
    # `versions` is filled in once the programs have answered (a second or so after the first start
    # in a process, at once after that: the first test of a run saw it change).
    "info": frozenset({"uptime_s", "rss_mb", "cpu_temp_c", "subsystems", "notices", "versions"}),
    # Follows the other subsystems' topics, which arrive in their own time on an external broker.
    "homeassistant": frozenset({"announced", "components"}),
    # The installed versions, likewise read in threads after start (and where milo runs from).
    "update": frozenset({"programs"}),
}
NOT_JSON = "{not json"
UNKNOWN_KEY = '{"no_such_key_xyz": 1}'
# Payloads no /set topic takes: not JSON, an unknown key, a shape no command has, then what the
# decoder refuses before any subsystem sees it.
BAD: tuple[str | bytes, ...] = (NOT_JSON, UNKNOWN_KEY, "[[]]", "", b"\xff\xfe")
SETTLED = frozenset({"running", "unavailable", "crashed", "config_error"})


def environment(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Config sections that let every registered subsystem run here, whichever of them a node starts."""
    return {
        "routing": sink_config(sinks_dir(tmp_path)),  # ALSA file sinks: no card needed
        # The `pulse` fixture's mixer, never a card of the machine the tests run on.
        "volume": {"device": "pulse", "control": "Master"},
        # Nothing leaves the machine: a directory that refuses connections, no index download.
        "radio": {"directory_url": f"http://127.0.0.1:{free_port()}", "index_refresh_h": 0},
        # gpiozero's mock pins instead of the GPIO this machine does not have.
        "knob": {"pin_factory": "mock"},
        # A sysfs-like backlight directory of its own.
        "screen": {"backlight": str(fake_backlight(tmp_path))},
        # shairport-sync needs an Avahi daemon: the stand-in (same config file, port and pipe) runs anywhere.
        "airplay": {"program": str(fake_program(tmp_path / "bin")), "port": free_port()},
        # The fake go-librespot (harness/), started by the node on a port of its own.
        "spotify": {"binary": str(go_librespot.install(tmp_path / "bin")), "port": free_port()},
        # The fake roc-recv; the relay on loopback ports of its own.
        "roc": {"binary": str(roc_recv.install(tmp_path / "bin")), "bind": "127.0.0.1", **roc_ports()},
        # Loopback ports of its own, FIFOs for the streams (no snd-aloop), the local client into no sink.
        "multiroom": multiroom_section(tmp_path, Ports(), client_player="file:filename=null"),
        # Its own discovery prefix: what it announces never reaches a Home Assistant on the test broker.
        "homeassistant": {"prefix": f"test-ha-{uuid.uuid4().hex[:8]}", "birth_delay_s": 0},
        # Never the machine's system bus: a bus address nobody listens on, so it is cleanly unavailable.
        "bluetooth": {"dbus_address": f"unix:path={tmp_path}/no-dbus-here.sock"},
        # No feed, no check of its own, and an install step that cannot run: nothing is ever changed.
        "update": {
            "feed_url": f"http://127.0.0.1:{free_port()}/feed.json",
            "first_check_s": 3600,
            "apply": "direct",
            "milo": "/nonexistent/milo",
            "systemd_bus": f"unix:path={tmp_path}/no-bus.sock",
            "status_dir": str(tmp_path / "update-status"),
        },
    }


def fake_backlight(tmp_path: Path) -> Path:
    """A /sys/class/backlight/<name> with what the drivers provide, made once per test."""
    path = tmp_path / "backlight" / "10-0045"
    if not path.exists():
        path.mkdir(parents=True)
        for name, value in (("max_brightness", 255), ("brightness", 0), ("bl_power", 0)):
            (path / name).write_text(f"{value}\n")
    return path


def roc_ports() -> dict[str, int]:
    source, repair, control = free_udp_ports(3)
    return {"source_port": source, "repair_port": repair, "control_port": control}


def started_with(cls: type[Subsystem[Any, Any]]) -> tuple[type[Subsystem[Any, Any]], ...]:
    """Info (to read statuses), the router (which some subsystems watch) and `cls`, in start order."""
    wanted = (Info, Routing, cls)
    known = tuple(c for c in registry.ALL if c in wanted)
    return known if cls in known else (*known, cls)


def refusal(command: TypeAdapter[Any] | None, payload: str | bytes, status: str) -> str:
    """The code a `BAD` payload on a /set topic gets while its subsystem is in `status`."""
    if command is None:
        return "read_only"
    if payload == "":
        return "empty_payload"
    if payload == b"\xff\xfe":
        return "invalid_encoding"
    return "invalid_payload" if status == "running" else status


async def retained(port: int, topic: str) -> Any:
    """What the broker retains on `topic` now (None: nothing), seen by a client of its own."""
    async with probe(port) as fresh:
        flush = f"test/flush/{uuid.uuid4().hex}"
        await fresh.subscribe(topic, flush)
        # The retained message is sent on subscribing, so before this one comes back.
        await fresh.publish(flush, "x")
        await fresh.wait_for(flush)
        found = fresh.on(topic)
        return found[-1].json() if found else None


class Walk:
    """One subsystem's topics on one running node, and what they held before any bad command."""

    def __init__(self, r: Running, p: Probe, cls: type[Subsystem[Any, Any]]) -> None:
        self.r, self.p, self.cls, self.name = r, p, cls, cls.name
        self.base = r.base
        self.info = f"{r.base}/info"
        self.state = r.node.topics.of(cls.state_topic())
        self.config = f"{self.state}/config"
        request_base = r.node.topics.of(cls.request_topic or cls.state_topic())
        self.requests = {verb: f"{request_base}/{verb}" for verb in cls.requests}
        self.owned = {path: r.node.topics.of(path) for path in cls.owned}
        self.status = ""
        self.before: dict[str, Any] = {}

    # Reading ---------------------------------------------------------------------------------------
    def strip(self, state: Any) -> Any:
        if not isinstance(state, dict):
            return state
        return {k: v for k, v in state.items() if k not in MOVING.get(self.name, ())}

    def status_in(self, g: Got) -> str | None:
        """The subsystem's status in an `info` published by this node (not one retained from before)."""
        info = g.json()
        if abs(info["started_at"] - self.r.node.started) > 0.01:
            return None
        status: str | None = info["subsystems"].get(self.name, {}).get("status")
        return status

    async def wait_status(self, wanted: frozenset[str], *, after: int = 0) -> tuple[str, str]:
        got = await self.p.wait_for(self.info, lambda g: self.status_in(g) in wanted, after=after)
        entry = got.json()["subsystems"][self.name]
        return entry["status"], entry["detail"]

    async def config_get(self) -> Any:
        """The republished config; its round trip through the runner's queue also settles what came first."""
        mark = self.p.mark()
        await self.p.publish(f"{self.config}/get", "")
        return (await self.p.wait_for(self.config, after=mark)).json()

    async def settled(self) -> dict[str, Any]:
        """What the state, owned and config topics retain once every message sent so far was handled."""
        await self.config_get()
        topics = [self.state, *self.owned.values(), self.config]
        found = {topic: await retained(self.r.port, topic) for topic in topics}
        found[self.state] = self.strip(found[self.state])
        return found

    async def unchanged(self) -> None:
        assert await self.settled() == self.before

    # The cases -------------------------------------------------------------------------------------
    async def begin(self) -> str:
        status, detail = await self.wait_status(SETTLED)
        # Which path of the contract this run checks: said in the output and asserted.
        print(f"{self.name}: {status} path{f' ({detail})' if detail else ''}")
        assert status in ("running", "unavailable"), (status, detail)
        self.status = status
        self.before = await self.settled()
        if status == "running":
            assert self.before[self.state] is not None, "a running subsystem retains its state"
        return status

    async def commands(self) -> None:
        command_set = f"{self.state}/set"
        cases = {payload: refusal(self.cls.Command, payload, self.status) for payload in BAD}
        await expect_errors(self.p, self.base, command_set, cases)
        await self.unchanged()
        # Refused before anything else looks at it, whatever it holds.
        await expect_errors(self.p, self.base, command_set, {UNKNOWN_KEY: "retained_command"}, retain=True)
        await self.p.publish(command_set, b"", retain=True)  # off the broker again
        await self.config_get()  # whatever the clean-up itself is answered goes by first
        assert await retained(self.r.port, command_set) is None
        await self.unchanged()

    async def gets(self) -> None:
        get = f"{self.state}/get"
        if self.status == "running":
            mark = self.p.mark()
            await self.p.publish(get, "")
            again = (await self.p.wait_for(self.state, after=mark)).json()
            assert self.strip(again) == self.before[self.state]
            reply = await self.p.request(get, {"id": "contract"})
            assert (reply["id"], reply["ok"], reply["error"], reply["code"]) == ("contract", True, None, None)
            assert self.strip(reply["result"]) == self.before[self.state]
        else:
            asked = json.dumps({"reply_to": f"test/reply/{uuid.uuid4().hex}", "id": 1})
            await expect_errors(self.p, self.base, get, {"": self.status, asked: self.status})
        await self.unchanged()

    async def config_errors(self) -> None:
        known = list(self.cls.Config.model_fields)
        # One letter too many on every key: each is named with the key it was meant to be.
        typos = {f"{key}x": f"unknown key (did you mean {key!r}?)" for key in known}
        far = "qqqqqqqq"  # close to nothing: no suggestion
        cases = {
            NOT_JSON: "invalid_json",
            json.dumps(dict.fromkeys([*typos, far], 1)): "invalid_config",
            '{"enabled": "maybe"}': "invalid_config",
        }
        _, unknown, maybe = await expect_errors(self.p, self.base, f"{self.config}/set", cases)
        problems = dict(part.split(": ", 1) for part in unknown["error"].split("; "))
        assert problems == {**typos, far: "unknown key"}
        assert maybe["error"].startswith("enabled: ")
        assert await self.config_get() == self.before[self.config]
        await self.unchanged()

    async def request_errors(self) -> None:
        for topic in self.requests.values():
            (err,) = await expect_errors(self.p, self.base, topic, {'{"id": 1}': "invalid_request"})
            assert "reply_to" in err["error"]
            reply = await self.p.request(topic, {"id": 2, "no_such_field_xyz": 1})
            code = "invalid_payload" if self.status == "running" else self.status
            assert (reply["id"], reply["ok"], reply["code"]) == (2, False, code), reply
            assert reply["error"]
            if self.status == "running":
                assert "no_such_field_xyz" in reply["error"]
        await self.unchanged()

    async def owned_topics(self) -> None:
        for path, topic in self.owned.items():
            command = self.cls.owned[path].command
            cases = {payload: refusal(command, payload, self.status) for payload in BAD}
            await expect_errors(self.p, self.base, f"{topic}/set", cases)
            if self.status == "running":
                mark = self.p.mark()
                await self.p.publish(f"{topic}/get", "")
                assert (await self.p.wait_for(topic, after=mark)).json() == self.before[topic]
            else:
                await expect_errors(self.p, self.base, f"{topic}/get", {"": self.status})
        await self.unchanged()

    # Disabled --------------------------------------------------------------------------------------
    def stored(self) -> Any:
        """The config overrides in `<data_dir>/<name>.json`."""
        return json.loads(Store(self.r.node.config.data_dir).path(self.name).read_text())["config"]

    async def disable(self) -> None:
        mark = self.p.mark()
        await self.p.publish(f"{self.config}/set", {"enabled": False})
        got = await self.p.wait_for(self.config, lambda g: g.json()["enabled"] is False, after=mark)
        assert got.json() == {**self.before[self.config], "enabled": False}
        assert self.stored() == {"enabled": False}
        await self.disabled_answers(after=mark)

    async def disabled_answers(self, *, after: int = 0) -> None:
        """Every topic answers `disabled` (or `read_only`), and info says so where info runs."""
        await expect_errors(self.p, self.base, f"{self.state}/get", {"": "disabled"})
        assert self.r.node.board.entries[self.name] == (Status.DISABLED, "")
        if self.cls is not Info:
            await self.wait_status(frozenset({"disabled"}), after=after)
        refused = refusal(self.cls.Command, UNKNOWN_KEY, "disabled")
        await expect_errors(self.p, self.base, f"{self.state}/set", {UNKNOWN_KEY: refused})
        for topic in self.requests.values():
            reply = await self.p.request(topic, {"id": 3})
            assert (reply["id"], reply["ok"], reply["code"]) == (3, False, "disabled"), reply
        for path, topic in self.owned.items():
            refused = refusal(self.cls.owned[path].command, UNKNOWN_KEY, "disabled")
            await expect_errors(self.p, self.base, f"{topic}/set", {UNKNOWN_KEY: refused})
            await expect_errors(self.p, self.base, f"{topic}/get", {"": "disabled"})

    async def enable_again(self, status: str) -> None:
        """`{"enabled": null}`: back to the default (enabled), nothing stored, and it runs as before."""
        mark = self.p.mark()
        await self.p.publish(f"{self.config}/set", {"enabled": None})
        got = await self.p.wait_for(self.config, lambda g: g.json()["enabled"] is True, after=mark)
        assert got.json() == self.before[self.config]
        assert self.stored() == {}
        assert (await self.wait_status(SETTLED, after=mark))[0] == status
        if status == "running":
            mark = self.p.mark()
            await self.p.publish(f"{self.state}/get", "")
            await self.p.wait_for(self.state, after=mark)


async def walk(run_node: NodeFactory, kind: str, cls: type[Subsystem[Any, Any]], tmp_path: Path) -> str:
    """Every case of the contract on `cls`, in two node starts; returns the path taken."""
    data = tmp_path / "data"
    node = {"subsystems": started_with(cls), "sections": environment(tmp_path), "data_dir": data}
    async with run_node(kind, **node) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        first = Walk(r, p, cls)
        status = await first.begin()
        await first.commands()
        await first.gets()
        await first.config_errors()
        await first.request_errors()
        await first.owned_topics()
        await first.disable()
    # Persisted: the next start keeps it disabled until the override is taken back.
    async with run_node(kind, **node) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        second = Walk(r, p, cls)
        second.before = first.before
        assert (await second.config_get())["enabled"] is False
        await second.disabled_answers()
        await second.enable_again(status)
    return status


@pytest.mark.parametrize("cls", registry.ALL, ids=[cls.name for cls in registry.ALL])
async def test_every_registered_subsystem_keeps_the_topic_contract(
    cls: type[Subsystem[Any, Any]], run_node: NodeFactory, broker_kind: str, pulse: Pulse, tmp_path: Path
) -> None:
    assert await walk(run_node, broker_kind, cls, tmp_path) in ("running", "unavailable")


async def test_the_unavailable_path_is_checked_too(
    run_node: NodeFactory, broker_kind: str, tmp_path: Path
) -> None:
    # Every real subsystem runs on the test machine: a fake one keeps the other branch exercised.
    assert await walk(run_node, broker_kind, Unplugged, tmp_path) == "unavailable"
