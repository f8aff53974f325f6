"""Every view, language and screen size: no text clipped, cut, broken inside a word or off screen."""

# One real node set up as a household uses it (a station playing with a long title, favorites, two
# multiroom clients, a user preset), one Chromium with a page per size; the node's `ui/set` switches
# every page's language at once, and tests/ui/layout_check.js measures each scene in the page.

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from harness.icy_server import IcyServer, make_mp3
from harness.pulse import Pulse
from harness.snapcast import Controller, Ports, multiroom_section, snapclients
from harness.ui import CLASSIC_ID, JAZZ_ID, ROCK_ID, UiNode, chromium, ui_node
from node.subsystems.multiroom import Multiroom
from node.subsystems.ui import LANGUAGES
from tests.helpers import Probe, probe
from tests.ui.screenshots import speak

pytestmark = pytest.mark.timeout(300)

CHECK = (Path(__file__).with_name("layout_check.js")).read_text()
# (name, width, height, kiosk): phones, the 7" touch screens, a laptop.
SIZES = [
    ("390x844", 390, 844, False),
    ("800x480", 800, 480, False),
    ("1024x600", 1024, 600, False),
    ("1280x800", 1280, 800, False),
    ("kiosk 800x480", 800, 480, True),
    ("kiosk 1024x600", 1024, 600, True),
]
SCENES = [
    "playing",
    "radio:favorites",
    "radio:search",
    "radio:custom",
    "radio:broken",
    "bluetooth",
    "equalizer",
    "multiroom",
    "settings",
    "info",
]
KIOSK_SCENES = ["radio:search:keyboard"]
CHROME = ["header.top", "nav.dock"]
TITLE = "Orchestre Philharmonique de Radio France - Symphonie fantastique, op. 14 : Rêverie, Passions"
LONG_STATION = "Radio Klassik Stephansdom Wien Innere Stadt"


def expected(size: str) -> list[str]:
    kiosk = "kiosk" in size
    return [*SCENES, *CHROME, *(f"{s}:osk" for s in KIOSK_SCENES if kiosk), *(KIOSK_SCENES if kiosk else [])]


async def household(node: UiNode, p: Probe, control: Controller) -> None:
    """Favorites, a custom station, a user preset, named multiroom clients, Jazz Corner playing."""
    base = node.base
    await p.subscribe(f"{base}/#")
    await p.request(f"{base}/radio/search", {"query": ""})
    for sid in (JAZZ_ID, ROCK_ID, CLASSIC_ID):
        await p.publish(f"{base}/radio/favorites/set", {"add": sid})
    await p.wait_for(f"{base}/radio/favorites", lambda g: len(g.json()["stations"]) == 3)
    custom = {
        "name": LONG_STATION,
        "url": "http://192.0.2.10:8000/live",
        "country": "AT",
        "genre": "classical",
    }
    await p.publish(f"{base}/radio/custom/set", {"add": custom})
    # A station whose stream is a closed port: it fails at once and is listed as broken, with mpv's reason.
    dead = {"name": "Funkhaus Europa Nachtprogramm", "url": "http://127.0.0.1:9/none"}
    await p.publish(f"{base}/radio/custom/set", {"add": dead})
    got = await p.wait_for(f"{base}/radio/custom", lambda g: len(g.json()["stations"]) == 2)
    dead_id = next(st["id"] for st in got.json()["stations"] if st["name"] == dead["name"])
    await p.publish(f"{base}/source/radio/set", {"play": dead_id})
    await p.wait_for(f"{base}/radio/broken", lambda g: dead_id in g.json()["stations"])
    await p.publish(f"{base}/routing/set", {"equalizer": True})
    await p.publish(f"{base}/equalizer/set", {"save_preset": "Sunday morning"})
    await p.wait_for(f"{base}/equalizer", lambda g: "Sunday morning" in g.json()["user_presets"])
    await p.publish(f"{base}/equalizer/set", "rock")
    await p.publish(f"{base}/volume/set", "35")
    await p.wait_for(
        f"{base}/multiroom", lambda g: sum(c["connected"] for c in g.json()["clients"]) == 2, timeout=10
    )
    for cid, name in (("kitchen", "Kitchen"), ("attic", "Children's room upstairs")):
        await control.call("Client.SetName", {"id": cid, "name": name})
    await p.wait_for(
        f"{base}/multiroom",
        lambda g: (
            {c["name"] for c in g.json()["clients"] if c["connected"]}
            >= {"Kitchen", "Children's room upstairs"}
        ),
        timeout=10,
    )
    await p.publish(f"{base}/source/radio/set", {"play": JAZZ_ID})
    await p.wait_for(f"{base}/player", lambda g: g.json()["state"] == "playing" and bool(g.json()["artist"]))


async def open_size(browser: Browser, node: UiNode, width: int, height: int, kiosk: bool) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    await page.goto(node.url + ("?kiosk=1" if kiosk else ""))
    await page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    # Headroom for fonts a little wider than this machine's: MILO_LAYOUT_SPACING=0.03em, say.
    if spacing := os.environ.get("MILO_LAYOUT_SPACING"):
        await page.add_style_tag(content=f"* {{ letter-spacing: {spacing} !important; }}")
    await expect(page.locator("#np-artist")).to_have_text(TITLE.split(" - ", maxsplit=1)[0])
    # A search, so the results list is part of what is measured in every language.
    await page.locator("[data-view=radio]").click()
    await page.locator("[data-tab=search]").click()
    await page.locator("#search input[name=query]").fill("jazz")
    await page.locator("#search input[name=query]").press("Enter")
    await expect(page.locator("#results li")).to_have_count(2)
    await page.locator("#search input[name=query]").fill("")
    await page.locator("#search input[name=query]").blur()
    return page


@pytest.fixture
async def scene(tmp_path: Path, pulse: Pulse) -> AsyncIterator[tuple[UiNode, Probe, list[tuple[str, Page]]]]:
    ports = Ports()
    mp3 = make_mp3(tmp_path)
    icy = await IcyServer(mp3, title=TITLE).start()
    try:
        async with (
            ui_node(
                tmp_path,
                "livingroom",
                stream_url=icy.url(),
                extra=[Multiroom],
                sections={"multiroom": multiroom_section(tmp_path, ports)},
            ) as node,
            probe(node.mqtt_port) as p,
            Controller(ports.control) as control,
            chromium() as browser,
        ):
            with snapclients(ports.stream, ["kitchen", "attic"]):
                await household(node, p, control)
                pages = await asyncio.gather(*(open_size(browser, node, w, h, k) for _, w, h, k in SIZES))
                yield node, p, [(size[0], page) for size, page in zip(SIZES, pages, strict=True)]
                await p.publish(f"{node.base}/source/radio/set", "stop")
                await p.wait_for(f"{node.base}/source/radio", lambda g: g.json()["state"] == "idle")
    finally:
        await icy.close()


# One of each thing the check must find, beside what it must let be (a title's ellipsis, a URL broken
# because it is longer than a line, a row of chips scrolled sideways).
SPECIMEN = (Path(__file__).with_name("layout_specimen.html")).read_text()


async def test_the_check_finds_each_kind_of_problem_and_lets_data_be(browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 390, "height": 600})
    await page.set_content(SPECIMEN)
    await page.evaluate("location.hash = 'x'")
    result = await page.evaluate(CHECK, {"scenes": ["x"], "chrome": []})
    kinds = {(f["selector"].split(" > ")[-1], f["kind"]) for f in result["found"]}
    assert kinds == {
        ("div#squeezed", "word broken"),
        ("button#cut", "cut by ellipsis"),
        ("div#wide", "wider than its box"),
        ("input#ph", "field text cut"),
        ("div#off", "past the viewport"),
        ("section#view-x", "scrolls sideways"),
    }


def test_this_machine_has_fonts_for_every_language() -> None:
    """Empty boxes have no true width: Hindi and Chinese are measured in the kiosk's own Noto fonts."""
    for lang in ("hi", "zh-cn"):
        fonts = subprocess.run(
            ["fc-list", f":lang={lang}", "family"], capture_output=True, text=True, check=True
        )
        assert fonts.stdout.strip(), (
            f"no font for {lang}: scripts/system-deps.sh installs fonts-noto-core and -cjk"
        )


async def test_no_text_is_clipped_cut_broken_or_off_screen_in_any_language_or_size(
    scene: tuple[UiNode, Probe, list[tuple[str, Page]]],
) -> None:
    node, p, pages = scene
    only = os.environ.get("MILO_LAYOUT_LANGS")  # to iterate on one language while fixing
    offenders: list[str] = []
    for lang in only.split(",") if only else LANGUAGES:
        await speak(p, node.base, lang)
        for _, page in pages:
            await expect(page.locator("html")).to_have_attribute("lang", lang)
        results = await asyncio.gather(
            *(
                page.evaluate(
                    CHECK, {"scenes": SCENES + (KIOSK_SCENES if "kiosk" in size else []), "chrome": CHROME}
                )
                for size, page in pages
            )
        )
        for (size, _), result in zip(pages, results, strict=True):
            offenders += [
                f"{lang} {size} {f['scene']}: {f['kind']} ({f['detail']}) {f['selector']} «{f['text']}»"
                for f in result["found"]
            ]
            # Every scene was really on screen and measured (a view that failed to show finds nothing).
            blank = [s for s in expected(size) if not result["seen"].get(s)]
            assert not blank, f"{lang} {size}: nothing measured in {blank} ({result['seen']})"
    assert not offenders, f"{len(offenders)} layout problems:\n" + "\n".join(offenders)
