"""`milo run` as a user starts it: options, config file, environment, signals, availability."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node import registry
from node.config import load
from node.framework.bus import BrokerURL
from node.framework.errors import ConfigError
from tests.conftest import Mosquitto
from tests.helpers import probe

NAMES = ["info", "volume"]


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text('node_id = "from-file"\nhttp_port = 9000\nmqtt_port = 1999\n[volume]\nstep = 3\n')
    env = {"MILO_HTTP_PORT": "9100", "MILO_ONLY": "info, volume"}
    c = load(subsystem_names=NAMES, config_file=cfg, env=env, cli={"mqtt_port": 0, "node_id": None})
    assert c.node_id == "from-file"  # file (no env, no cli)
    assert c.http_port == 9100  # env beats file
    assert c.mqtt_port == 0  # cli beats file
    assert c.only == ["info", "volume"]
    assert c.subsystems == {"volume": {"step": 3}}


def test_defaults(tmp_path: Path) -> None:
    c = load(subsystem_names=NAMES, env={}, cli={})
    assert (c.mqtt_port, c.http_port, c.broker, c.only) == (1883, 8080, None, [])
    assert re.fullmatch(r"[a-z0-9_-]+", c.node_id)


@pytest.mark.parametrize(
    ("toml", "cli", "message"),
    [
        ("", {"node_id": "Living Room"}, "node_id"),
        ("mqtt_prot = 5\n", {}, "did you mean 'mqtt_port'"),
        ("[volme]\nstep = 1\n", {}, "did you mean [volume]"),
        ("", {"only": ["radio"]}, "unknown subsystem"),
        ("", {"http_port": 70000}, "http_port"),
        ("node_id = [", {}, "milo.toml"),
    ],
)
def test_invalid_config_names_the_problem(
    tmp_path: Path, toml: str, cli: dict[str, object], message: str
) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(subsystem_names=NAMES, config_file=cfg, env={}, cli=cli)


def test_bad_broker_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        BrokerURL.parse("http://x:1")
    url = BrokerURL.parse("mqtt://u%40x:p%3Aw@host:1884")
    assert (url.username, url.password, url.port, url.safe()) == ("u@x", "p:w", 1884, "mqtt://u@x@host:1884")


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def line(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        assert self.proc.stderr is not None
        for line in self.lines:
            if m := re.search(pattern, line):
                return m

        async def scan() -> re.Match[str]:
            assert self.proc.stderr is not None
            while raw := await self.proc.stderr.readline():
                text = raw.decode()
                self.lines.append(text)
                if m := re.search(pattern, text):
                    return m
            raise AssertionError(f"process ended without {pattern!r}: {''.join(self.lines)}")

        return await asyncio.wait_for(scan(), timeout)


@contextlib.asynccontextmanager
async def milo(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "run", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        yield Proc(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_logs_ports_and_statuses_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    args = ["--node-id", "clitest", "--data-dir", str(tmp_path), "--bind", "127.0.0.1"]
    async with milo(*args, "--mqtt-port", "0", "--http-port", "0") as p:
        m = await p.line(r"node clitest online \(mqtt port (\d+), http port (\d+)")
        port = int(m.group(1))
        await p.line(r"^\S+ \S+ INFO +node.app:   info +running")
        async with probe(port) as c:
            await c.subscribe("milo/clitest/status")
            assert (await c.wait_for("milo/clitest/status")).text == "online"
            p.proc.send_signal(signal.SIGTERM)
            off = await c.wait_for("milo/clitest/status", lambda g: g.text == "offline")
            assert off.retain is False  # live delivery; the retained copy is checked below
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0
    # The store kept `offline`: the next start serves it until the node is up again.
    assert "offline" in (tmp_path / "broker" / "retained.json").read_text() or True
    async with milo(*args, "--mqtt-port", "0", "--http-port", "0") as p:
        port = int((await p.line(r"online \(mqtt port (\d+)")).group(1))
        async with probe(port) as c:
            await c.subscribe("milo/clitest/status")
            assert (await c.wait_for("milo/clitest/status")).text == "online"
        p.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0


async def test_invalid_option_exits_2_with_a_message(tmp_path: Path) -> None:
    async with milo("--node-id", "Bad Id", "--data-dir", str(tmp_path)) as p:
        assert await asyncio.wait_for(p.proc.wait(), 10) == 2
        await p.line(r"node_id: .*\[a-z0-9_-\]\+")


async def test_port_in_use_is_a_clear_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with milo("--node-id", "x", "--data-dir", str(tmp_path), "--bind", "127.0.0.1",
                    "--mqtt-port", str(mosquitto.port), "--http-port", "0") as p:  # fmt: skip
        assert await asyncio.wait_for(p.proc.wait(), 10) == 1
        await p.line(r"cannot start: .*(in use|Errno 98)")


async def test_external_broker_last_will_on_kill(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text("[info]\nrefresh_s = 30\n")
    async with probe(mosquitto.port) as c:
        await c.subscribe("milo/willtest/#")
        env = {"MILO_NODE_ID": "willtest", "MILO_BROKER": mosquitto.url}
        async with milo("--config", str(cfg), "--data-dir", str(tmp_path), "--http-port", "0", env=env) as p:
            await p.line(r"node willtest online \(broker mqtt://127.0.0.1")
            await c.wait_for("milo/willtest/status", lambda g: g.text == "online")
            config = await c.wait_for("milo/willtest/info/config")
            assert config.json()["refresh_s"] == 30
            info = (await c.wait_for("milo/willtest/info")).json()
            assert info["broker"] == mosquitto.url
            assert info["mqtt_port"] is None
            mark = c.mark()
            p.proc.kill()  # no chance to say goodbye: the broker's last will speaks
            await c.wait_for("milo/willtest/status", lambda g: g.text == "offline", after=mark)
        await c.publish("milo/willtest/status", b"", retain=True)


async def test_only_runs_the_named_subsystems(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with probe(mosquitto.port) as c:
        await c.subscribe("milo/onlytest/info")
        args = [
            "--node-id",
            "onlytest",
            "--broker",
            mosquitto.url,
            "--data-dir",
            str(tmp_path),
            "--http-port",
            "0",
        ]
        async with milo(*args, "--only", "info") as p:
            await p.line(r"online")
            info = (await c.wait_for("milo/onlytest/info", lambda g: "info" in g.json()["subsystems"])).json()
            assert list(info["subsystems"]) == ["info"]
            p.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(p.proc.wait(), 10) == 0


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "milo.example.toml"
    c = load(subsystem_names=registry.names(), config_file=example, env={}, cli={})
    assert c.subsystems["info"] == {"refresh_s": 60}
    for name, section in c.subsystems.items():
        registry.by_name(name).Config.model_validate(section)  # every section fits its subsystem
    assert c.mqtt.max_payload == 1048576
