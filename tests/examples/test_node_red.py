"""examples/node-red/ in a real Node-RED, each flow against a real node, its effect seen on the topics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from harness.alsa_sinks import sink_config, sinks_dir
from harness.bluez import FakeBlueAlsa, FakeBluez, PrivateBus, fake_aplay
from harness.icy_server import IcyServer
from harness.node_red import FLOWS, NodeRed, flow, node_red, pointed_at, token, with_ping
from harness.pulse import Pulse
from harness.radio_browser import FakeRadioBrowser, station
from harness.ui import chromium
from node import registry
from node.sources.bluetooth import Bluetooth
from node.sources.radio import Radio
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, probe

pytestmark = pytest.mark.timeout(120)

JAZZ = "96062a7b-0601-11e8-ae97-52543be04c81"
ROCK = "11111111-2222-4333-8444-555555555555"
# The first play loads libmpv and FFmpeg into the node's process, which holds its loop for a while.
PLAY_TIMEOUT = 20.0
# Node-RED connects to the broker in its own time after a deploy (a fresh connection each time).
FLOW_TIMEOUT = 15.0
DASHBOARD = "/dashboard/milo"


def where(**fields: Any) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and all(g.json().get(k) == v for k, v in fields.items())


@pytest.fixture(scope="module")
def red(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRed]:
    """One Node-RED for the module (it takes a few seconds to start); each test deploys its own flow."""
    with node_red(tmp_path_factory.mktemp("node-red")) as r:
        yield r


@dataclass
class Milo:
    r: Running
    p: Probe
    red: NodeRed
    tag: str = ""  # the deployed flow's ping topic

    @property
    def base(self) -> str:
        return self.r.base

    async def load(self, name: str) -> list[dict[str, Any]]:
        """Deploy one example flow, pointed at this node's broker; return once it is subscribed."""
        nodes = pointed_at(flow(name), self.r.port)
        self.tag = token()
        await self.red.deploy(with_ping(nodes, self.tag))
        await self.p.subscribe(f"{self.tag}/pong")
        await self.ping()
        return nodes

    async def ping(self) -> None:
        """A round trip through the flow's broker connection: what Node-RED got before, it has handled."""
        mark = self.p.mark()
        # Until Node-RED's connection is up, a ping is lost: ask again, each time waiting a little.
        for _ in range(int(FLOW_TIMEOUT / 0.5)):
            await self.p.publish(f"{self.tag}/ping", "ping")
            with contextlib.suppress(AssertionError):
                await self.p.wait_for(f"{self.tag}/pong", after=mark, timeout=0.5)
                return
        raise AssertionError(f"Node-RED never answered on {self.tag}/pong:\n{self.red.tail()}")

    async def play_radio(self, station_id: str = JAZZ) -> None:
        mark = self.p.mark()
        await self.p.publish(f"{self.base}/source/radio/set", json.dumps({"play": station_id}))
        await self.p.wait_for(f"{self.base}/player", where(state="playing"), after=mark, timeout=PLAY_TIMEOUT)


@contextlib.asynccontextmanager
async def milo(
    run_node: NodeFactory,
    red: NodeRed,
    tmp_path: Path,
    icy: IcyServer,
    *,
    bluetooth: dict[str, Any] | None = None,
) -> AsyncIterator[Milo]:
    """A node with the radio (a local directory and stream), the volume on PulseAudio, the player."""
    stations = [
        station(stationuuid=JAZZ, name="Jazz Corner", tags="jazz", url_resolved=icy.url()),
        station(stationuuid=ROCK, name="Rock Antenne", tags="rock", url_resolved=icy.url()),
    ]
    wanted = {Info, Routing, Volume, Radio, Player, *([Bluetooth] if bluetooth else [])}
    async with FakeRadioBrowser(stations) as directory:
        sections: dict[str, dict[str, Any]] = {
            "routing": sink_config(sinks_dir(tmp_path)),
            "volume": {"device": "pulse", "control": "Master"},
            "radio": {
                "directory_url": directory.url,
                "ao": "null",
                "audio_device": "auto",
                "allow_private_urls": True,
                "index_first_delay_s": 3600,
                "start_timeout_s": 5,
            },
        }
        if bluetooth:
            sections["bluetooth"] = bluetooth
        subsystems = [c for c in registry.ALL if c in wanted]
        async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/#")
            await p.wait_for(f"{r.base}/status", lambda g: g.text == "online")
            yield Milo(r, p, red)


MiloFactory = Callable[..., contextlib.AbstractAsyncContextManager[Milo]]


@pytest.fixture
def make_milo(
    run_node: NodeFactory, red: NodeRed, tmp_path: Path, icy: IcyServer, pulse: Pulse
) -> MiloFactory:
    """`async with make_milo(bluetooth=...) as m:` (the volume needs the test PulseAudio)."""
    return functools.partial(milo, run_node, red, tmp_path, icy)


@pytest.fixture
async def m(make_milo: MiloFactory) -> AsyncIterator[Milo]:
    async with make_milo() as node:
        yield node


@contextlib.asynccontextmanager
async def dashboard(red: NodeRed) -> AsyncIterator[Page]:
    """Dashboard 2's page of the flows, in Debian's headless Chromium."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(red.url + DASHBOARD)
        yield page


# The files themselves ----------------------------------------------------------------------------
def test_every_flow_is_one_tab_on_the_one_broker_config_and_documented() -> None:
    files = sorted(FLOWS.glob("*.json"))
    files = [f for f in files if not f.name.startswith("package")]
    assert len(files) == 5, files
    shared: dict[str, Any] = {}
    readme = (FLOWS / "README.md").read_text()
    for path in files:
        nodes = json.loads(path.read_text())
        assert [n["type"] for n in nodes].count("tab") == 1, path.name
        assert path.name in readme, f"{path.name} has no line in examples/node-red/README.md"
        for n in nodes:
            if "z" not in n and n["type"] != "tab":
                # A config node two files share is the same node: importing both makes one.
                assert shared.setdefault(n["id"], n) == n, (path.name, n["id"])
        types = {n["type"] for n in nodes}
        assert "mqtt-broker" in types and types & {"mqtt in", "mqtt out"}, path.name


# (a) now playing ---------------------------------------------------------------------------------
async def test_now_playing_shows_the_title_on_the_dashboard(m: Milo) -> None:
    await m.load("now-playing.json")
    await m.play_radio()
    # The ICY server's title, split by the radio into artist and title, then joined by the flow.
    await m.p.wait_for(f"{m.base}/player", where(artist="Artist One", title="Song A"), timeout=PLAY_TIMEOUT)
    async with dashboard(m.red) as page:
        text = page.locator(".milo-now-playing")
        await text.get_by_text("Artist One - Song A").wait_for(timeout=15_000)


# (b) volume slider -------------------------------------------------------------------------------
async def _settled_box(page: Any, locator: Any, timeout: float = 10.0) -> dict[str, float]:
    """The element's box once it has stopped moving: the same in two animation frames running."""
    frame = "() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))"
    last = None
    async with asyncio.timeout(timeout):
        while True:
            box = await locator.bounding_box()
            if box is not None and box == last:
                return dict(box)
            last = box
            await page.evaluate(frame)


async def test_the_slider_shows_the_volume_and_sets_it(m: Milo) -> None:
    await m.load("volume-slider.json")
    mark = m.p.mark()
    await m.p.publish(f"{m.base}/volume/set", "30")
    await m.p.wait_for(f"{m.base}/volume", where(percent=30), after=mark)
    async with dashboard(m.red) as page:
        thumb = page.locator(".milo-volume [role=slider]")
        # The state reaches the slider (the flow's volume -> slider path).
        await page.locator(".milo-volume [role=slider][aria-valuenow='30']").wait_for(timeout=15_000)
        # A hand on it: the thumb dragged to the right and let go (the slider sends on release). The
        # thumb glides to a new value: grabbed where it stopped, not half way (CI once grabbed it at 20).
        box = await _settled_box(page, thumb)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        mark = m.p.mark()
        await page.mouse.move(x, y)
        await page.mouse.down()
        await page.mouse.move(x + 60, y, steps=5)
        await page.mouse.up()
        got = await m.p.wait_for(f"{m.base}/volume/set", after=mark, timeout=FLOW_TIMEOUT)
        shown = int(await thumb.get_attribute("aria-valuenow") or -1)
        assert shown > 30, shown
        await m.p.wait_for(f"{m.base}/volume", where(percent=shown), after=mark, timeout=FLOW_TIMEOUT)
        assert got.text == str(shown), got.text
        # The state the node echoed went back to the slider and no further: one command, no loop.
        await m.ping()
        assert [g.text for g in m.p.on(f"{m.base}/volume/set", mark)] == [str(shown)]


# (c) pause at 23:00 ------------------------------------------------------------------------------
async def test_pause_everything_pauses_the_playing_player(m: Milo) -> None:
    await m.play_radio()
    nodes = await m.load("pause-at-23.json")
    timer = next(n for n in nodes if n["type"] == "inject")
    assert timer["crontab"] == "00 23 * * *"
    mark = m.p.mark()
    await m.red.inject(timer["id"])
    await m.p.wait_for(f"{m.base}/player/set", lambda g: g.text == "pause", after=mark, timeout=FLOW_TIMEOUT)
    await m.p.wait_for(f"{m.base}/player", where(state="paused"), after=mark, timeout=FLOW_TIMEOUT)


# (d) favorite by name ----------------------------------------------------------------------------
async def test_a_favorite_plays_by_its_name(m: Milo) -> None:
    for station_id in (ROCK, JAZZ):
        mark = m.p.mark()
        await m.p.publish(f"{m.base}/radio/favorites/set", station_id)
        await m.p.wait_for(
            f"{m.base}/radio/favorites",
            lambda g, s=station_id: s in [x["id"] for x in g.json()["stations"]],  # type: ignore[misc]
            after=mark,
        )
    nodes = await m.load("play-favorite.json")
    button = next(n for n in nodes if n["type"] == "inject")
    assert button["payload"] == "Jazz Corner"
    mark = m.p.mark()
    await m.red.inject(button["id"])
    got = await m.p.wait_for(
        f"{m.base}/source/radio",
        lambda g: g.json().get("state") == "playing" and (g.json().get("station") or {}).get("id") == JAZZ,
        after=mark,
        timeout=PLAY_TIMEOUT,
    )
    assert got.json()["station"]["name"] == "Jazz Corner"
    await m.p.wait_for(f"{m.base}/source", where(active="radio"), after=mark, timeout=FLOW_TIMEOUT)


# (e) bluetooth connects --------------------------------------------------------------------------
@dataclass
class Phones:
    bluez: FakeBluez
    section: dict[str, Any]  # the node's [bluetooth]


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[Phones]:
    """A private dbus-daemon with the fake BlueZ and bluez-alsa of the Bluetooth tests."""
    bus = PrivateBus(tmp_path).start()
    bluez = await FakeBluez(bus.address).start()
    bluealsa = await FakeBlueAlsa(bus.address, bluez).start()
    section = {"dbus_address": bus.address, "aplay": str(fake_aplay(tmp_path).path), "reconnect_cap_s": 0.3}
    try:
        yield Phones(bluez, section)
    finally:
        await bluealsa.stop()
        await bluez.stop()
        bus.stop()


async def test_a_phone_that_connects_becomes_the_source(make_milo: MiloFactory, phones: Phones) -> None:
    async with make_milo(bluetooth=phones.section) as m:
        await m.p.wait_for(f"{m.base}/source/bluetooth", where(state="idle"))
        await m.play_radio()
        await m.p.wait_for(f"{m.base}/source", where(active="radio"))
        await m.load("bluetooth-connect.json")
        mark = m.p.mark()
        phone = phones.bluez.add_phone("AA:BB:CC:00:00:01", "Pixel 8")
        assert await phone.pair()
        assert await phone.connect()
        await m.p.wait_for(f"{m.base}/source/bluetooth", where(state="connected"), after=mark)
        # Connected, not playing: auto_switch would not switch; the flow does.
        await m.p.wait_for(
            f"{m.base}/source/set", lambda g: g.text == "bluetooth", after=mark, timeout=FLOW_TIMEOUT
        )
        await m.p.wait_for(f"{m.base}/source", where(active="bluetooth"), after=mark)
        await m.p.wait_for(f"{m.base}/source/radio", where(state="paused"), after=mark)
