"""Now playing with Spotify in real Chromium: the progress bar moves without messages, and seeks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from harness.alsa_sinks import sink_config, sinks_dir
from harness.ui import PHONE, open_page
from node.sources.spotify import Spotify
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.ui import Ui
from tests.conftest import NodeFactory
from tests.helpers import probe
from tests.sources.test_spotify import ALBUM, Phone, section

pytestmark = pytest.mark.timeout(60)


def seconds(text: str | None) -> int:
    match = re.fullmatch(r"(\d+):(\d\d)", (text or "").strip())
    assert match, text
    return int(match.group(1)) * 60 + int(match.group(2))


async def test_the_progress_bar_moves_by_itself_and_seeks(
    browser: Browser, run_node: NodeFactory, tmp_path: Path
) -> None:
    spotify = section(tmp_path)
    sections = {"routing": sink_config(sinks_dir(tmp_path)), "spotify": spotify}
    subsystems = (Info, Routing, Spotify, Player, Ui)
    async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
        player = f"{r.base}/player"
        await p.subscribe(player, f"{r.base}/source/spotify")
        await p.wait_for(f"{r.base}/source/spotify", lambda g: g.json()["state"] == "idle")
        phone = Phone(spotify["port"])
        page = await open_page(browser, f"http://127.0.0.1:{r.node.http_port}/", viewport=PHONE)
        await phone.do("transfer", {"uri": ALBUM, "position": 30_000})
        got = await p.wait_for(
            player, lambda g: g.json()["state"] == "playing" and g.json()["title"] is not None
        )
        duration = got.json()["duration_ms"]
        await expect(page.locator("#np-title")).to_have_text(got.json()["title"])
        await expect(page.locator("#np-artist")).to_have_text(got.json()["artist"])
        await expect(page.locator("[data-source=spotify]")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#np-dur")).to_have_text(f"{duration // 60000}:{duration // 1000 % 60:02d}")

        # Two seconds of play: the position moves on the page while the node says nothing.
        quiet = p.mark()
        start = seconds(await page.locator("#np-pos").text_content())
        assert 29 <= start <= 33
        await expect(page.locator("#np-pos")).to_have_text(re.compile(r"0:3[3-9]"), timeout=8000)
        assert p.on(player, quiet) == [], "the bar moved on messages, not by itself"

        # A tap in the middle of the bar: the page shows it at once, go-librespot is asked, the node confirms.
        box = await page.locator("#np-bar").bounding_box()
        assert box is not None
        mark = p.mark()
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        moved = await p.wait_for(
            player, lambda g: abs(g.json()["position_ms"] - duration / 2) < 5000, after=mark
        )
        seeks = [json.loads(q["body"]) for q in await phone.requests("/player/seek")]
        assert len(seeks) == 1 and abs(seeks[0]["position"] - duration / 2) < 0.03 * duration
        assert (
            abs(seconds(await page.locator("#np-pos").text_content()) - moved.json()["position_ms"] / 1000)
            < 3
        )

        # The keyboard: the bar is a slider, ten seconds back.
        await page.locator("#np-bar").focus()
        mark = p.mark()
        await page.keyboard.press("ArrowLeft")
        await p.wait_for(
            player, lambda g: g.json()["position_ms"] < moved.json()["position_ms"] - 5000, after=mark
        )
        assert len(await phone.requests("/player/seek")) == 2


async def test_the_spotify_name_is_set_in_settings(
    browser: Browser, run_node: NodeFactory, tmp_path: Path
) -> None:
    spotify = section(tmp_path)
    sections = {"routing": sink_config(sinks_dir(tmp_path)), "spotify": spotify}
    async with run_node(subsystems=(Info, Routing, Spotify, Ui), sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/source/spotify"
        await p.subscribe(topic)
        page = await open_page(browser, f"http://127.0.0.1:{r.node.http_port}/#settings", viewport=PHONE)
        name = page.locator("#spotify-name")
        await expect(name).to_have_value(r.node.config.node_id)  # what the Spotify apps show now
        await name.fill("Salon")
        mark = p.mark()
        await page.locator("#spotify-settings button[type=submit]").click()
        await p.wait_for(topic, lambda g: g.json()["device_name"] == "Salon", after=mark)
        names = [json.loads(q["body"]) for q in await Phone(spotify["port"]).requests("/set_device_name")]
        assert names == [{"name": "Salon"}]
        await expect(name).to_have_value("Salon")
