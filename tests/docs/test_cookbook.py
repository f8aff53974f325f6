"""Every mosquitto_pub/mosquitto_sub line of docs/mqtt.md and README.md, run against a real node."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.icy_server import IcyServer
from harness.pulse import Pulse
from harness.radio_browser import FakeRadioBrowser, station
from node import registry
from node.adapters.http_client import http_request
from tests.conftest import NodeFactory, Running
from tests.contract.test_every_subsystem import environment
from tests.helpers import Probe, probe

ROOT = Path(__file__).resolve().parents[2]
STATION = "96062a7b-0601-11e8-ae97-52543be04c81"
OTHER = "11111111-2222-3333-4444-555555555555"
EXAMPLE_STREAMS = ("https://radio.example.org/stream.mp3", "https://icecast.example.org/stream.mp3")
COMMAND_TIMEOUT = 10.0
# The first play loads libmpv and FFmpeg into the node's process, which holds its loop for a while.
ANSWER_TIMEOUT = 15.0
ARROW = "# -> "


@dataclass
class Line:
    source: str  # file:line, for messages
    text: str  # the command as documented (one logical line)
    expect: str | None  # what follows `# -> `


def one_liners(path: Path) -> list[Line]:
    """The mosquitto_pub/mosquitto_sub lines of the ```sh blocks, a command continued over lines joined."""
    found: list[Line] = []
    in_sh = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.startswith("```"):
            in_sh = raw.strip() == "```sh" and not in_sh
            continue
        if not in_sh:
            continue
        if pending is not None:
            start, text = pending[0], f"{pending[1]} {raw.strip()}"
        elif raw.startswith(("mosquitto_pub", "mosquitto_sub")):
            start, text = number, raw.strip()
        else:
            continue
        command, _, expect = text.partition(ARROW)
        try:
            shlex.split(command, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            pending = (start, text)
            continue
        pending = None
        found.append(Line(f"{path.name}:{start}", command, expect.strip() or None))
    return found


def matches(expected: Any, actual: Any) -> bool:
    """Objects: the keys given match; lists: as long, each element matching; anything else: equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


class Runner:
    """Runs documented lines against one node, with the placeholders filled in."""

    def __init__(self, r: Running, p: Probe, stream: str) -> None:
        self.r, self.p, self.stream = r, p, stream
        self.node_id = r.node.config.node_id

    def fill(self, text: str) -> str:
        text = text.replace("<node_id>", self.node_id).replace("<id>", self.node_id)
        text = text.replace("<other station id>", OTHER).replace("<station id>", STATION)
        if "<custom id>" in text:
            custom = dict(self.r.node.broker.retained()) if self.r.node.broker else {}
            stations = json.loads(custom[f"{self.r.base}/radio/custom"])["stations"]
            text = text.replace("<custom id>", stations[0]["id"])
        for example in EXAMPLE_STREAMS:
            text = text.replace(example, self.stream)
        return re.sub(r"\$\{?B\}?", self.r.base, text)

    def argv(self, text: str) -> list[str]:
        args = shlex.split(self.fill(text), comments=True)
        if "-h" in args:
            args[args.index("-h") + 1] = "127.0.0.1"
        else:
            args[1:1] = ["-h", "127.0.0.1"]
        args[1:1] = ["-p", str(self.r.port)]
        if args[0] == "mosquitto_sub":
            args += [] if "-C" in args else ["-C", "1"]
            args += ["-W", "5"]
        return args

    async def run(self, line: Line) -> None:
        args = self.argv(line.text)
        where = f"{line.source}: {line.text}"
        if args[0] == "mosquitto_pub":
            assert line.expect, f"{where}: says nothing of what it does (add `{ARROW}<topic> <json>`)"
        topic, _, wanted = self.fill(line.expect or "").partition(" ")
        # What follows the JSON (or the word) is a remark for the reader.
        if wanted.startswith(("{", "[")):
            expected: Any = json.JSONDecoder().raw_decode(wanted)[0]
        else:
            expected = wanted.split(" ", 1)[0] or None
        if topic == "reply":
            payload = json.loads(args[args.index("-m") + 1])
            await self.p.subscribe(payload["reply_to"])
            topic = payload["reply_to"]
        elif topic:
            topic = topic if topic.startswith("homeassistant/device/") else f"{self.r.base}/{topic}"
        mark = self.p.mark()
        done = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(done.communicate(), COMMAND_TIMEOUT)
        assert done.returncode == 0, f"{where}: exit {done.returncode}: {err.decode()}"
        if args[0] == "mosquitto_sub":
            printed = out.decode().splitlines()
            assert printed, f"{where}: printed nothing"
            if expected is not None:
                payloads = [p.split(" ", 1)[1] if "-v" in args else p for p in printed]
                assert any(_payload_matches(expected, p) for p in payloads), f"{where}: printed {printed}"
            return
        try:
            await self.p.wait_for(
                topic, lambda g: _payload_matches(expected, g.text), after=mark, timeout=ANSWER_TIMEOUT
            )
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}"[:3000]) from None


def _payload_matches(expected: Any, text: str) -> bool:
    if expected is None:
        return True
    if isinstance(expected, str):
        return text.strip() == expected
    try:
        return matches(expected, json.loads(text))
    except ValueError:
        return False


@pytest.fixture
async def documented_node(
    run_node: NodeFactory, pulse: Pulse, icy: IcyServer, tmp_path: Path
) -> AsyncIterator[Runner]:
    stations = [
        station(
            stationuuid=STATION, name="Jazz Corner", tags="jazz", countrycode="FR", url_resolved=icy.url()
        ),
        station(
            stationuuid=OTHER, name="Rock Antenne", tags="rock", countrycode="DE", url_resolved=icy.url()
        ),
    ]
    async with FakeRadioBrowser(stations) as fake:
        sections = environment(tmp_path)
        sections["radio"] = {
            **sections["radio"],
            "directory_url": fake.url,
            "ao": "null",
            "audio_device": "auto",
            "allow_private_urls": True,
            "start_timeout_s": 5,
            "index_refresh_h": 24,
            "index_first_delay_s": 3600,
        }
        sections["homeassistant"] = {"birth_delay_s": 0}
        async with run_node(subsystems=registry.ALL, sections=sections) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/#", "homeassistant/#")
            await p.wait_for(f"{r.base}/homeassistant", lambda g: g.json().get("announced") is True)
            # A phone that has picked the speaker (the fake go-librespot's own path): the Spotify lines
            # are about a session, which nothing but a Spotify app can open.
            phone = f"http://127.0.0.1:{sections['spotify']['port']}/_fake/connect"
            assert (await http_request("POST", phone, body=b"{}", timeout=5)).status == 200
            await p.wait_for(f"{r.base}/source/spotify", lambda g: g.json().get("state") == "connected")
            yield Runner(r, p, icy.url())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("doc", ["docs/mqtt.md", "README.md"])
async def test_every_documented_one_liner_does_what_it_says(documented_node: Runner, doc: str) -> None:
    lines = one_liners(ROOT / doc)
    assert len(lines) >= (80 if doc == "docs/mqtt.md" else 10), [line.text for line in lines]
    for line in lines:
        await documented_node.run(line)


def test_the_cookbook_covers_every_command_topic_of_every_subsystem() -> None:
    text = (ROOT / "docs" / "mqtt.md").read_text()
    for cls in registry.ALL:
        topic = cls.state_topic()
        wanted = [f"$B/{topic}/config/set"]
        if cls.Command is not None:
            wanted.append(f"$B/{topic}/set ")
        wanted += [f"$B/{path}/set " for path, owned in cls.owned.items() if owned.command is not None]
        wanted += [f"$B/{cls.request_topic or topic}/{verb} " for verb in cls.requests]
        missing = [w for w in wanted if w not in text]
        assert missing == [], f"{cls.name}: no one-liner for {missing}"
