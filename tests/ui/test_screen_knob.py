"""Screen and knob settings on the page, and the kiosk page as the only one whose touches wake the screen."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from harness.ky040 import mock_pins
from harness.ui import KIOSK, PHONE, open_page
from node.subsystems.info import Info
from node.subsystems.knob import Knob
from node.subsystems.screen import Screen
from node.subsystems.ui import Ui
from tests.conftest import NodeFactory, Running
from tests.helpers import Probe, probe
from tests.subsystems.test_screen import fake_backlight, where

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def node_with_screen(
    run_node: NodeFactory, tmp_path: Path
) -> AsyncIterator[tuple[Running, Probe, str]]:
    sections: dict[str, dict[str, Any]] = {
        "screen": {"backlight": str(fake_backlight(tmp_path / "sys"))},
        "knob": {"pin_factory": "mock", "wake_screen": False},
    }
    with mock_pins():
        async with run_node(subsystems=(Info, Screen, Knob, Ui), sections=sections) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/#")
            await p.wait_for(f"{r.base}/knob", where(available=True))
            url = f"http://127.0.0.1:{r.node.http_port}/"
            yield r, p, url


async def test_screen_and_knob_settings_send_their_commands_translated(
    browser: Browser, run_node: NodeFactory, tmp_path: Path
) -> None:
    async with node_with_screen(run_node, tmp_path) as (r, p, url):
        page = await open_page(browser, url + "#settings", viewport=PHONE)
        await expect(page.locator("#screen-settings")).to_be_visible()
        await expect(page.locator("#screen-brightness")).to_have_value("100")
        await expect(page.locator("#screen-timeout")).to_have_value("300")
        await expect(page.locator("#screen-timeout option:checked")).to_have_text("5 min")
        mark = p.mark()
        await page.locator("#screen-timeout").select_option("60")
        sent = await p.wait_for(f"{r.base}/screen/set", after=mark)
        assert sent.json() == {"timeout_s": 60}
        await p.wait_for(f"{r.base}/screen", where(timeout_s=60), after=mark)
        await page.locator("#screen-brightness").fill("40")
        await p.wait_for(f"{r.base}/screen", where(brightness=40), after=mark)
        await expect(page.locator("#knob-press")).to_have_value("play_pause")
        await page.locator("#knob-press").select_option("mute")
        sent = await p.wait_for(f"{r.base}/knob/config/set", after=mark)
        assert sent.json() == {"press": "mute"}
        await p.wait_for(f"{r.base}/knob/config", where(press="mute"), after=mark)
        await page.locator("#knob-step").select_option("5")
        await p.wait_for(f"{r.base}/knob/config", where(step=5), after=mark)
        await p.publish(f"{r.base}/ui/set", "de")
        await expect(page.locator("#screen-timeout option:checked")).to_have_text("1 min")
        await expect(page.locator("#knob-press option:checked")).to_have_text("Stumm")
        await expect(page.locator("#knob-settings")).to_contain_text("Lautstärke pro Raste")
        await p.publish(f"{r.base}/ui/set", "en")


async def test_only_the_kiosk_page_reports_activity_and_a_waking_touch_presses_nothing(
    browser: Browser, run_node: NodeFactory, tmp_path: Path
) -> None:
    async with node_with_screen(run_node, tmp_path) as (r, p, url):
        phone = await open_page(browser, url + "#settings", viewport=PHONE)
        kiosk = await open_page(browser, url + "?kiosk=1#settings", viewport=KIOSK)
        mark = p.mark()
        await phone.locator("[data-view=info]").click()
        await expect(phone.locator("#view-info")).to_be_visible()
        await p.quiet(f"{r.base}/screen/set", after=mark, probe_topic=f"{r.base}/test/flush")
        await kiosk.locator("#view-settings h2").first.click()
        got = await p.wait_for(f"{r.base}/screen/set", after=mark)
        assert got.text == "activity"
        # Dark: the touch on the dock wakes the screen and does not open the view under the finger.
        mark = p.mark()
        await p.publish(f"{r.base}/screen/set", "off")
        await p.wait_for(f"{r.base}/screen", where(on=False), after=mark)
        await expect(kiosk.locator("body")).to_have_attribute("data-screen", "dark")
        await kiosk.locator("[data-view=info]").click()
        await p.wait_for(f"{r.base}/screen", where(on=True), after=mark)
        await expect(kiosk.locator("body")).to_have_attribute("data-screen", "lit")
        await expect(kiosk.locator("#view-settings")).to_be_visible()
        await expect(kiosk.locator("#view-info")).to_be_hidden()
        # Lit again, a touch does what it says.
        await kiosk.locator("[data-view=info]").click()
        await expect(kiosk.locator("#view-info")).to_be_visible()
