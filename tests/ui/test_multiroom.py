"""The multiroom view in real Chromium against the real multiroom subsystem, snapserver and snapclients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from harness.alsa_sinks import sink_config, sinks_dir
from harness.snapcast import Controller, Ports, multiroom_section, snapclients
from harness.ui import KIOSK, PHONE, open_page
from node.subsystems.info import Info
from node.subsystems.multiroom import Multiroom
from node.subsystems.routing import Routing
from node.subsystems.ui import Ui
from tests.conftest import NodeFactory
from tests.helpers import Got, probe

pytestmark = pytest.mark.timeout(90)


def kitchen(**fields: Any) -> Any:
    def check(g: Got) -> bool:
        found = [c for c in g.json()["clients"] if c["id"] == "kitchen"]
        return bool(found) and all(found[0].get(k) == v for k, v in fields.items())

    return check


async def test_the_multiroom_view_drives_real_snapcast_clients_and_the_server_preset(
    browser: Browser, run_node: NodeFactory, tmp_path: Path
) -> None:
    ports = Ports()
    sections = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports),
    }
    async with (
        run_node(subsystems=(Info, Routing, Multiroom, Ui), sections=sections) as r,
        probe(r.port) as mqtt,
        Controller(ports.control) as other,
    ):
        topic = f"{r.base}/multiroom"
        await mqtt.subscribe(f"{r.base}/#")
        with snapclients(ports.stream, ["kitchen", "attic"]):
            await mqtt.wait_for(
                topic, lambda g: sum(c["connected"] for c in g.json()["clients"]) == 2, timeout=10
            )
            # Named by another controller: the view learns it through the subsystem.
            for cid, name in (("kitchen", "Kitchen"), ("attic", "Attic")):
                await other.call("Client.SetName", {"id": cid, "name": name})
            await mqtt.wait_for(topic, kitchen(name="Kitchen"))
            url = f"http://127.0.0.1:{r.node.http_port}/"
            phone = await open_page(browser, url + "#multiroom", viewport=PHONE)
            kiosk = await open_page(browser, url + "?kiosk=1#multiroom", viewport=KIOSK)
            row = phone.locator("[data-id=kitchen]")
            await expect(row).to_contain_text("Kitchen")
            await expect(row).to_contain_text("Snapclient 0.26.0")
            await expect(phone.locator("[data-id=attic]")).to_contain_text("Attic")
            await expect(phone.locator("#mr-server")).to_contain_text("running · 0.26.0")
            await expect(phone.locator("[data-preset=balanced]")).to_have_attribute("aria-pressed", "true")

            for act, shown in (
                (row.locator("input[type=range]").fill("25"), {"volume": 25}),
                (row.locator("button[aria-pressed]").click(), {"muted": True}),
                (row.locator(".latency button").last.click(), {"latency": 10}),
            ):
                mark = mqtt.mark()
                await act
                await mqtt.wait_for(topic, kitchen(**shown), after=mark)
            config = (await other.call("Client.GetStatus", {"id": "kitchen"}))["client"]["config"]
            assert (config["volume"], config["latency"]) == ({"percent": 25, "muted": True}, 10)
            other_row = kiosk.locator("[data-id=kitchen]")
            await expect(other_row.locator("input[type=range]")).to_have_value("25")
            await expect(other_row.locator("button[aria-pressed]")).to_have_attribute("aria-pressed", "true")
            await expect(other_row.locator(".latency input")).to_have_value("10")

            await row.locator("[aria-label=Rename]").click()
            await row.locator("input[type=text]").fill("Cuisine")
            await row.locator("button[type=submit]").click()
            await expect(other_row).to_contain_text("Cuisine")
            assert (await other.call("Client.GetStatus", {"id": "kitchen"}))["client"]["config"][
                "name"
            ] == "Cuisine"

            # A change by another controller shows on both screens.
            await other.call("Client.SetVolume", {"id": "kitchen", "volume": {"percent": 64}})
            for page in (phone, kiosk):
                await expect(page.locator("[data-id=kitchen] input[type=range]")).to_have_value("64")

            mark = mqtt.mark()
            await kiosk.locator("[data-preset=low_latency]").click()
            await mqtt.wait_for(topic, lambda g: g.json()["settings"]["preset"] == "low_latency", after=mark)
            for page in (phone, kiosk):
                await expect(page.locator("[data-preset=low_latency]")).to_have_attribute(
                    "aria-pressed", "true"
                )
                await expect(page.locator("#mr-settings")).to_contain_text("300 ms")
            # The clients come back after the restart the preset needs.
            await expect(phone.locator("[data-id=kitchen] .off")).to_have_count(0, timeout=10_000)

            await mqtt.publish(f"{r.base}/ui/set", "fr")
            await expect(phone.locator("[data-preset=low_latency]")).to_have_text("Faible latence")
            await expect(phone.locator("#mr-server")).to_contain_text("en marche")
