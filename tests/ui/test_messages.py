"""What the page says: a translated message chosen by the error's code, the node's words as detail only."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from harness.ui import PHONE, UiNode, open_page
from tests.helpers import Probe

pytestmark = pytest.mark.timeout(60)


async def test_an_unknown_host_is_said_as_such_with_the_nodes_words_apart(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    page = await open_page(browser, milo.url + "#radio", viewport=PHONE)
    await page.locator("[data-tab=custom]").click()
    form = page.locator("#custom-form")
    await form.locator("input[name=name]").fill("Nowhere")
    await form.locator("input[name=url]").fill("http://nosuch.invalid/stream")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#custom li")).to_have_count(1)
    mark = mqtt.mark()
    await page.locator("#custom li .station-main").click()
    error = (await mqtt.wait_for(f"{milo.base}/error", after=mark)).json()
    assert error["code"] == "unresolvable_host"
    toast = page.locator(".toast")
    # The title is the code's message in the page's language, not "This address is not allowed"...
    await expect(toast.locator("b")).to_have_text("This host name cannot be found")
    # ...and the node's English sentence is a detail of its own, not glued onto the title.
    await expect(toast.locator(".detail")).to_contain_text("cannot be resolved")
    font = await toast.locator(".detail").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    title = await toast.locator("b").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font < title

    # In French the title is French; the detail stays the node's.
    await mqtt.publish(f"{milo.base}/ui/set", "fr")
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    await toast.click()
    await page.locator("#custom li .station-main").click()
    await expect(page.locator(".toast b")).to_contain_text("hôte est introuvable")


async def test_the_equalizer_switch_says_its_state(browser: Browser, milo: UiNode, mqtt: Probe) -> None:
    page = await open_page(browser, milo.url + "#equalizer", viewport=PHONE)
    await expect(page.locator("#eq-enabled")).not_to_be_checked()
    await expect(page.locator("#eq-enabled-state")).to_have_text("Off")
    await expect(page.locator("label.switch", has=page.locator("#eq-enabled"))).not_to_contain_text("on")
    mark = mqtt.mark()
    await page.locator("#eq-enabled").check()
    await mqtt.wait_for(f"{milo.base}/routing", lambda g: g.json().get("equalizer") is True, after=mark)
    await expect(page.locator("#eq-enabled-state")).to_have_text("On")
