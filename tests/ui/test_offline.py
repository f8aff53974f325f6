"""The page without its link: a banner, controls that cannot be clicked into the void, and the way back."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, expect

from harness.ui import PHONE, UiNode, open_page
from tests.helpers import Probe

pytestmark = pytest.mark.timeout(90)


async def test_while_the_websocket_is_down_the_controls_are_disabled_under_a_banner(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    page = await open_page(browser, milo.url, viewport=PHONE)
    await expect(page.locator("#banner")).to_be_hidden()
    await expect(page.locator("#vol-up")).to_be_enabled()
    web = milo.node.web
    assert web is not None
    port = web.port
    # The node's HTTP server goes away (as when it restarts): the page's WebSocket is cut for real.
    await web.stop()
    await expect(page.locator("#banner")).to_be_visible()
    await expect(page.locator("#banner")).to_contain_text("No connection to the node")
    for control in ("#vol-up", "#volume", "#mute", "[data-source=radio]"):
        await expect(page.locator(control)).to_be_disabled()
    # Navigating stays possible: the views are the page's own, their controls are what waits.
    await page.locator("[data-view=equalizer]").click()
    await expect(page.locator("[data-preset=flat]")).to_be_disabled()
    await expect(page.locator("#eq-enabled")).to_be_disabled()
    await page.locator("[data-view=playing]").click()

    web.requested_port = port
    await web.start()
    await expect(page.locator("#banner")).to_be_hidden(timeout=15_000)
    await expect(page.locator("#vol-up")).to_be_enabled()
    mark = mqtt.mark()
    await page.locator("#vol-up").click()
    volume = await mqtt.wait_for(f"{milo.base}/volume/set", after=mark)
    assert volume.payload == b"up"


async def test_an_absent_subsystem_says_why_and_what_to_do(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    """The {status, reason} record on a state topic: its meaning translated, the reason as detail."""
    await mqtt.publish(
        f"{milo.base}/multiroom",
        json.dumps(
            {"status": "unavailable", "reason": "snapserver is not installed (apt install snapserver)"}
        ),
        retain=True,
    )
    await mqtt.publish(f"{milo.base}/ui/set", "de")
    page = await open_page(browser, milo.url + "#multiroom", viewport=PHONE)
    await expect(page.locator("html")).to_have_attribute("lang", "de")
    box = page.locator("#view-multiroom .missing")
    await expect(box.locator(".why")).to_have_text("Was es braucht, fehlt auf diesem Knoten.")
    await expect(box.locator(".todo")).to_contain_text("installieren")
    await expect(box.locator(".detail")).to_have_text("snapserver is not installed (apt install snapserver)")
    # Switched off: said in the page's language; the node's bare "disabled" is not repeated.
    await mqtt.publish(
        f"{milo.base}/multiroom", json.dumps({"status": "disabled", "reason": "disabled"}), retain=True
    )
    await expect(box.locator(".why")).to_have_text("Es ist auf diesem Knoten ausgeschaltet.")
    await expect(box.locator(".todo")).to_contain_text("Einstellungen")
    await expect(box.locator(".detail")).to_have_text("")


async def test_empty_views_say_what_they_would_show_and_how_to_get_there(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    state = {"enabled": False, "clients": []}
    await mqtt.publish(f"{milo.base}/multiroom", json.dumps(state), retain=True)
    page = await open_page(browser, milo.url + "#multiroom", viewport=PHONE)
    empty = page.locator("#mr-empty")
    await expect(empty).to_contain_text("Multiroom is off.")
    await expect(empty).to_contain_text("switch above")
    # The switch is the routing's: turned on, the list is the group's, empty until a speaker joins.
    await page.locator("#mr-enabled").check()
    await expect(empty).to_contain_text("No speaker connected.")
    await expect(empty).to_contain_text("snapclient")

    await page.locator("[data-view=radio]").click()
    await expect(page.locator("#favorites")).to_contain_text("No favorites yet")
    await page.locator("#favorites [data-go=search]").click()
    await expect(page.locator("#search-status")).to_contain_text("Search the station directory")
    await page.locator("#search input[name=query]").fill("no such station anywhere")
    await page.locator("#search button[type=submit]").click()
    await expect(page.locator("#search-status")).to_contain_text("No station found.")
    await expect(page.locator("#search-status .hint")).to_contain_text("fewer words")


async def test_the_radio_view_says_the_directory_is_down_before_anyone_searches(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    page = await open_page(browser, milo.url + "#radio", viewport=PHONE)
    await expect(page.locator("#directory-down")).to_be_hidden()
    # The directory fails the radio's own index refresh: the radio's state says so, and the view too.
    milo.directory.status = 503
    mark = mqtt.mark()
    await mqtt.publish(f"{milo.base}/radio/index/set", "refresh")
    await mqtt.wait_for(
        f"{milo.base}/radio/index", lambda g: g.json()["directory"] == "unreachable", after=mark
    )
    down = page.locator("#directory-down")
    await expect(down).to_contain_text("The station directory cannot be reached.")
    await expect(down).to_contain_text("internet connection")
    await expect(down.locator(".detail")).to_contain_text("503")
    milo.directory.status = None
    await mqtt.publish(f"{milo.base}/radio/index/set", "refresh")
    await expect(down).to_be_hidden(timeout=15_000)
