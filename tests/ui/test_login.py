"""The page logs in when the node asks for it: the form, the remembered login, the read-only mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from harness.pulse import Pulse
from harness.ui import UiNode, ui_node
from node.config import AuthOptions
from node.framework.users import Users
from tests.helpers import Probe, probe
from tests.ui.test_pages import where


@pytest.fixture
async def locked(tmp_path: Path, node_id: str, pulse: Pulse) -> AsyncIterator[UiNode]:
    users = Users(tmp_path / "node")
    users.add("alice", "control", "alice-pw")
    users.add("bob", "read", "bob-pw")
    users.add("watcher", "node", "watcher-pw")
    async with ui_node(tmp_path, node_id, auth=AuthOptions(anonymous="none")) as n:
        yield n


@pytest.fixture
async def watcher(locked: UiNode) -> AsyncIterator[Probe]:
    async with probe(locked.mqtt_port, username="watcher", password="watcher-pw") as p:
        await p.subscribe(f"{locked.base}/#")
        yield p


async def log_in(page: Page, user: str, password: str) -> None:
    form = page.locator("#login form")
    await form.locator("input[name=user]").fill(user)
    await form.locator("input[name=password]").fill(password)
    await form.locator("button[type=submit]").click()


async def test_login_form_read_only_and_control(browser: Browser, locked: UiNode, watcher: Probe) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{locked.url}#equalizer")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator(".login-message")).to_have_text("This node asks you to log in.")
    await log_in(page, "bob", "wrong")
    await expect(page.locator(".login-message")).to_have_text("Wrong user name or password.")
    await log_in(page, "bob", "bob-pw")
    await expect(page.locator("#login")).to_have_count(0)
    await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    # Read-only: the state shows, the controls are off, the page sends nothing.
    await expect(page.locator("body")).to_have_class("read-only")
    await expect(page.locator("#read-only-badge")).to_be_visible()
    assert await page.locator("#eq-enabled").evaluate("e => getComputedStyle(e).pointerEvents") == "none"
    await expect(page.locator("#login-btn")).to_have_text("Log out (bob)")
    # Remembered by this browser: a reload connects at once, no form.
    await page.reload()
    await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    await expect(page.locator("#login")).to_have_count(0)
    await expect(page.locator("body")).to_have_class("read-only")
    # Log out, then in as a control user: the controls work.
    await page.locator("#login-btn").click()
    await expect(page.locator("#login")).to_be_visible()
    await log_in(page, "alice", "alice-pw")
    await expect(page.locator("#login")).to_have_count(0)
    await expect(page.locator("body")).not_to_have_class("read-only")
    await expect(page.locator("#eq-enabled")).to_be_visible()
    await page.locator("#eq-enabled").check()
    await watcher.wait_for(f"{locked.base}/routing", where(equalizer=True))
    await context.close()


async def test_anonymous_read_only_on_the_lan_policy(
    browser: Browser, tmp_path: Path, node_id: str, pulse: Pulse
) -> None:
    # This host's anonymous role set to read (as a LAN client gets with `anonymous = "all"`).
    async with ui_node(tmp_path, node_id, auth=AuthOptions(loopback_role="read")) as n:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{n.url}#equalizer")
        await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        await expect(page.locator("#login")).to_have_count(0)
        await expect(page.locator("body")).to_have_class("read-only")
        await expect(page.locator("#login-btn")).to_have_text("Log in")
        await page.locator("#login-btn").click()
        await expect(page.locator("#login")).to_be_visible()
        await page.get_by_role("button", name="Continue read-only").click()
        await expect(page.locator("#login")).to_have_count(0)
        await context.close()
