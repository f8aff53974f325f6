"""A real node with every subsystem the UI shows, a fake station directory, and Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from harness.alsa_sinks import sink_config
from harness.radio_browser import FakeRadioBrowser, station
from node.app import Node
from node.config import AuthOptions, NodeConfig
from node.framework.backoff import Backoff
from node.framework.subsystem import Subsystem
from node.sources.radio import Radio
from node.subsystems.equalizer import Equalizer
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.ui import Ui
from node.subsystems.volume import Volume

CHROMIUM = os.environ.get("MILO_CHROMIUM", "/usr/bin/chromium")
FAST = Backoff(first=0.05, cap=0.2, healthy=60.0)
PHONE = {"width": 390, "height": 844}
KIOSK = {"width": 800, "height": 480}
JAZZ_ID = "96062a7b-0601-11e8-ae97-52543be04c81"
ROCK_ID = "11111111-2222-4333-8444-555555555555"
LOUNGE_ID = "22222222-3333-4444-8555-666666666666"
NOVA_ID = "33333333-4444-4555-8666-777777777777"
CLASSIC_ID = "44444444-5555-4666-8777-888888888888"


def directory(stream_url: str = "http://127.0.0.1:9/none") -> list[dict[str, Any]]:
    """What the fake Radio Browser knows: a few stations a search can find by name, country or genre."""
    return [
        station(stationuuid=JAZZ_ID, name="Jazz Corner", tags="jazz,smooth jazz", countrycode="FR",
                language="french", url_resolved=stream_url, votes=50, bitrate=128),
        station(stationuuid=ROCK_ID, name="Rock Antenne", tags="rock", countrycode="DE",
                url_resolved=stream_url, votes=40),
        station(stationuuid=LOUNGE_ID, name="Jazz Lounge Berlin", tags="jazz,lounge", countrycode="DE",
                url_resolved=stream_url, votes=30, bitrate=192),
        station(stationuuid=NOVA_ID, name="Radio Nova", tags="electronic,hip-hop", countrycode="FR",
                url_resolved=stream_url),
        station(stationuuid=CLASSIC_ID, name="Classic Café", tags="classical", countrycode="AT",
                url_resolved=stream_url, bitrate=256),
    ]  # fmt: skip


@dataclass
class UiNode:
    """A running node and how a browser reaches it."""

    node: Node
    directory: FakeRadioBrowser

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}/"

    @property
    def base(self) -> str:
        return self.node.topics.base

    @property
    def mqtt_port(self) -> int:
        port = self.node.mqtt_port
        assert port is not None
        return port


@contextlib.asynccontextmanager
async def ui_node(
    data_dir: Path,
    node_id: str,
    *,
    volume: bool = True,
    stream_url: str = "http://127.0.0.1:9/none",
    sections: dict[str, dict[str, Any]] | None = None,
    web_root: Path | None = None,
    extra: Sequence[type[Subsystem[Any, Any]]] = (),
    auth: AuthOptions | None = None,
) -> AsyncIterator[UiNode]:
    """A node on the embedded broker with a free HTTP port serving web/; `volume` needs PULSE_SERVER set.

    `extra` adds subsystems (multiroom, say), configured by `sections`.
    """
    out = data_dir / "sinks"
    out.mkdir(parents=True, exist_ok=True)
    subsystems: list[type[Subsystem[Any, Any]]] = [Info, Routing, Equalizer, Radio, Player, Ui]
    merged: dict[str, dict[str, Any]] = {
        "routing": sink_config(out),
        "radio": {
            "ao": "null",
            "audio_device": "auto",
            "allow_private_urls": True,
            "index_first_delay_s": 3600,
            # A station that cannot play is found out (and marked broken) in a fraction of a second.
            "network_timeout_s": 3,
            "start_timeout_s": 3,
            "retry_attempts": 1,
            "retry_first_s": 0.05,
            "retry_cap_s": 0.2,
        },
    }
    if volume:
        subsystems.insert(3, Volume)
        merged["volume"] = {"device": "pulse", "control": "Master"}
    subsystems.extend(extra)
    for name, section in (sections or {}).items():
        merged[name] = {**merged.get(name, {}), **section}
    async with FakeRadioBrowser(directory(stream_url)) as fake:
        merged["radio"]["directory_url"] = fake.url
        config = NodeConfig(
            node_id=node_id,
            data_dir=data_dir / "node",
            bind="127.0.0.1",
            mqtt_port=0,
            http_port=0,
            subsystems=merged,
            # Tests publish other subsystems' state from loopback: trusted as a node by default.
            auth=auth or AuthOptions(loopback_role="node"),
            **({"web_root": web_root} if web_root is not None else {}),
        )
        node = Node(config, subsystems, backoff=FAST)
        try:
            await node.start()
            yield UiNode(node, fake)
        finally:
            await node.stop()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium driven by Playwright (no browser download: `playwright install` is never run)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, url: str, *, viewport: dict[str, int] | None = None) -> Page:
    """A new page at `url`, returned once it shows the node's state (`data-ready` on the body)."""
    context = await browser.new_context(viewport=viewport or PHONE)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    return page
