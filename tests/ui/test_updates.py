"""Versions and updates in the info view, in real Chromium, against a real node with the fake feed and apt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from harness.systemd1 import DBusDaemon, FakeUnit
from harness.ui import PHONE, open_page
from node.subsystems.info import Info
from node.subsystems.ui import Ui
from node.subsystems.update import Update
from tests.conftest import NodeFactory
from tests.helpers import probe
from tests.subsystems.test_update import MILO, World, make_world

pytestmark = pytest.mark.timeout(120)
WAIT = 30_000  # ms: the step is a child process (`milo update-apply`), seconds on a loaded machine


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    daemon = DBusDaemon(tmp_path).start()
    try:
        async with make_world(tmp_path, daemon) as w:
            yield w
    finally:
        daemon.stop()


async def test_the_info_view_shows_versions_and_runs_updates(
    browser: Browser, run_node: NodeFactory, world: World
) -> None:
    # Each step runs through its unit, as on a Pi; go-librespot's waits for the test's go-ahead, so
    # a second install can be clicked while it runs.
    go_ahead = asyncio.Event()
    sections = world.sections(apply="systemd")

    def step(program: str, first: asyncio.Event | None = None) -> Callable[[], Awaitable[bool]]:
        async def run() -> bool:
            if first is not None:
                await first.wait()
            argv = [MILO, "update-apply", program, "--config", sections["update"]["config_file"]]
            proc = await asyncio.create_subprocess_exec(*argv)
            return await proc.wait() == 0

        return run

    for program, first in (("go-librespot", go_ahead), ("snapserver", None)):
        unit = FakeUnit(f"milo-update@{program}.service", on_start=step(program, first))
        world.systemd.add(unit, allowed=True)
    async with run_node(subsystems=(Info, Update, Ui), sections=sections) as r, probe(r.port) as mqtt:
        await mqtt.subscribe(f"{r.base}/update")
        await mqtt.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=30)
        page = await open_page(browser, f"http://127.0.0.1:{r.node.http_port}/#info", viewport=PHONE)
        librespot = page.locator("#update-programs [data-program=go-librespot]")
        await expect(librespot).to_contain_text("installed 0.9.0 · available 0.9.1")
        milo = page.locator("#update-programs [data-program=milo]")
        await expect(milo).to_contain_text("installed 0.1.0")
        await expect(milo.locator("button")).to_have_count(0)  # the feed has no newer milo
        snapserver = page.locator("#update-programs [data-program=snapserver]")
        await expect(snapserver).to_contain_text("installed 0.26.0 · available 0.27.0")

        await librespot.get_by_role("button", name="Update to 0.9.1").click()
        job = page.locator("#update-job")
        await expect(job).to_contain_text("Updating go-librespot: starting", timeout=WAIT)
        # A second update while one runs: refused by the node, shown by its code.
        await snapserver.get_by_role("button", name="Update to 0.27.0").click()
        await expect(page.locator("#update-error")).to_contain_text("The node is busy, try again")
        await expect(page.locator("#update-error")).to_contain_text("an update of go-librespot runs")
        go_ahead.set()
        await expect(job).to_contain_text("go-librespot updated 0.9.0 → 0.9.1", timeout=WAIT)
        await expect(job).to_have_attribute("data-result", "done")
        await expect(librespot).to_contain_text("installed 0.9.1 · up to date", timeout=WAIT)
        await expect(librespot.locator("button")).to_have_count(0)
        assert world.binary.read_bytes().endswith(b"go-librespot v0.9.1'\n")

        # A package whose new version dies at start: rolled back, and the view says so.
        world.systemd.units["snapserver.service"].fails_when = lambda: (
            world.apt.installed("snapserver") == "0.27.0"
        )
        await snapserver.get_by_role("button", name="Update to 0.27.0").click()
        await expect(job).to_have_attribute("data-result", "rolled_back", timeout=WAIT)
        await expect(job).to_contain_text("the new version did not start, rolled back")
        await expect(job).to_contain_text("back to 0.26.0")
        assert world.apt.installed("snapserver") == "0.26.0"
        await page.context.close()


async def test_a_checkout_says_why_it_is_not_updated_here_and_offers_no_button(
    browser: Browser, run_node: NodeFactory, world: World
) -> None:
    # This node runs from this checkout (editable): a newer milo in the feed is shown with the reason,
    # translated, where the button would be; another program keeps its button.
    import hashlib  # noqa: PLC0415

    wheel = b"never installed"
    world.feed.files["/milo-99.0.0-py3-none-any.whl"] = wheel
    url = world.feed.url("/milo-99.0.0-py3-none-any.whl")
    entry = {"version": "99.0.0", "files": {"any": {"url": url, "sha256": hashlib.sha256(wheel).hexdigest()}}}
    world.feed.feed = {**world.feed.feed, "milo": entry}
    async with run_node(subsystems=(Info, Update, Ui), sections=world.sections()) as r, probe(r.port) as mqtt:
        await mqtt.subscribe(f"{r.base}/update")
        await mqtt.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=30)
        page = await open_page(browser, f"http://127.0.0.1:{r.node.http_port}/#info", viewport=PHONE)
        milo = page.locator("#update-programs [data-program=milo]")
        await expect(milo).to_contain_text("available 99.0.0")
        reason = milo.locator("[data-reason=editable_install]")
        await expect(reason).to_have_text("Runs from a checkout: update it with git pull")
        assert "running from a checkout" in (await reason.get_attribute("title") or "")
        await expect(milo.locator("button")).to_have_count(0)
        librespot = page.locator("#update-programs [data-program=go-librespot]")
        await expect(librespot.get_by_role("button", name="Update to 0.9.1")).to_have_count(1)
        await mqtt.publish(f"{r.base}/ui/set", "fr")
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await expect(reason).to_have_text("Exécuté depuis un checkout : mettez-le à jour avec git pull")
        await page.context.close()
