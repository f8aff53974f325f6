"""`python -m tests.ui.screenshots`: the main views at phone and 800x480 sizes, into docs/screenshots/."""

# Each view in English as its own PNG, and one contact sheet per size with the main views in every
# language (`languages-<size>.png`: a row per language).
# A real node (PulseAudio's null sink for the volume, a local ICY stream for the radio, the fake
# station directory) is set up as a person would use it, then Debian's Chromium photographs each view.

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from playwright.async_api import Browser, Page, expect

from harness.icy_server import IcyServer, make_mp3
from harness.pulse import running_pulse
from harness.ui import CLASSIC_ID, JAZZ_ID, KIOSK, PHONE, ROCK_ID, UiNode, chromium, ui_node
from node.subsystems.ui import LANGUAGES
from tests.helpers import Got, Probe, probe

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SIZES = {"phone": PHONE, "800x480": KIOSK}
SHEET_VIEWS = ["playing", "radio", "equalizer", "settings", "info"]
SHEET_SCALE = {"phone": 0.5, "800x480": 0.4}  # a sheet stays readable without being megabytes


async def prepare(node: UiNode, p: Probe) -> None:
    """Favorites, a custom station, the rock preset with the EQ on, 35 %, and Jazz Corner playing."""
    base = node.base
    await p.subscribe(f"{base}/#")
    await p.request(f"{base}/radio/search", {"query": ""})  # the node remembers what a search showed
    for sid in (JAZZ_ID, ROCK_ID, CLASSIC_ID):
        await p.publish(f"{base}/radio/favorites/set", {"add": sid})
    await p.wait_for(f"{base}/radio/favorites", lambda g: len(g.json()["stations"]) == 3)
    custom = {
        "name": "Kitchen stream",
        "url": "http://192.0.2.10:8000/live",
        "country": "FR",
        "genre": "talk",
    }
    await p.publish(f"{base}/radio/custom/set", {"add": custom})
    await p.publish(f"{base}/routing/set", {"equalizer": True})
    await p.publish(f"{base}/equalizer/set", "rock")
    await p.publish(f"{base}/volume/set", "35")
    await p.publish(f"{base}/source/radio/set", {"play": JAZZ_ID})
    await p.wait_for(f"{base}/player", lambda g: g.json()["state"] == "playing" and bool(g.json()["artist"]))
    await p.wait_for(f"{base}/volume", lambda g: g.json()["percent"] == 35)


async def speak(p: Probe, base: str, lang: str) -> None:
    """Every screen of the node in `lang`, as the settings' language buttons do it: through `ui/set`."""

    def said(g: Got) -> bool:
        return bool(g.json()["language"] == lang)

    mark = p.mark()
    await p.publish(f"{base}/ui/set", {"language": lang})
    await p.wait_for(f"{base}/ui", said, after=mark)


def save_small(image: Image.Image, path: Path) -> None:
    # A dark UI has few colours: a 64-colour palette keeps each file small and looks the same.
    image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


async def shoot(page: Page, name: str, out: Path) -> None:
    path = out / f"{name}.png"
    await page.screenshot(path=str(path), animations="disabled", caret="hide")
    with Image.open(path) as image:
        save_small(image, path)


async def sheet(page: Page, node: UiNode, p: Probe, size: str, out: Path) -> None:
    """The main views in every language, a row each, switched by the node's `ui/set` as a user would."""
    viewport = SIZES[size]
    scale = SHEET_SCALE[size]
    w, h = round(viewport["width"] * scale), round(viewport["height"] * scale)
    label = 28
    board = Image.new("RGB", (label + w * len(SHEET_VIEWS), h * len(LANGUAGES)), "#000000")
    for row, lang in enumerate(LANGUAGES):
        await speak(p, node.base, lang)
        await expect(page.locator("html")).to_have_attribute("lang", lang)
        for col, view in enumerate(SHEET_VIEWS):
            await page.locator(f"[data-view={view}]").click()
            await expect(page.locator(f"#view-{view}")).to_be_visible()
            shot = await page.screenshot(animations="disabled", caret="hide")
            with Image.open(io.BytesIO(shot)) as image:
                board.paste(
                    image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), (label + col * w, row * h)
                )
        ImageDraw.Draw(board).text(
            (5, row * h + 8), lang, fill="#e9edf1", font=ImageFont.load_default(size=16)
        )
    save_small(board, out / f"languages-{size}.png")
    await p.publish(f"{node.base}/ui/set", {"language": "en"})
    await expect(page.locator("html")).to_have_attribute("lang", "en")


async def views(browser: Browser, node: UiNode, p: Probe, size: str, out: Path) -> None:
    kiosk = size == "800x480"
    context = await browser.new_context(viewport=SIZES[size])  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(node.url + ("?kiosk=1" if kiosk else ""))
    await page.wait_for_selector("body[data-ready='1']")
    await expect(page.locator("#np-artist")).to_have_text("Artist One")
    await expect(page.locator("#volume-pct")).to_have_text("35")
    await shoot(page, f"playing-{size}", out)
    await page.locator("[data-view=radio]").click()
    await expect(page.locator("#favorites li")).to_have_count(3)
    await shoot(page, f"radio-{size}", out)
    await page.locator("[data-tab=search]").click()
    await page.locator("#search input[name=query]").click()
    await page.locator("#search input[name=query]").fill("jazz")
    if kiosk:
        await shoot(page, f"radio-keyboard-{size}", out)
    await page.locator("#search input[name=query]").press("Enter")
    await expect(page.locator("#results li")).to_have_count(2)
    await page.locator("#search input[name=query]").blur()
    await shoot(page, f"radio-search-{size}", out)
    await page.locator("[data-view=equalizer]").click()
    await expect(page.locator("[data-preset=rock]")).to_have_attribute("aria-pressed", "true")
    await shoot(page, f"equalizer-{size}", out)
    await page.locator("[data-view=settings]").click()
    section = page.locator("details[data-config='volume/config']")
    await section.locator(":scope > summary").click()
    await expect(section.locator("[data-key=limit_max] input")).to_have_value("100")
    await section.evaluate("e => e.scrollIntoView({ block: 'start' })")
    await shoot(page, f"settings-{size}", out)
    await page.locator("[data-view=info]").click()
    await expect(page.locator("[data-subsystem=radio] .badge")).to_have_text("running")
    await shoot(page, f"info-{size}", out)
    await sheet(page, node, p, size, out)
    await context.close()


async def settle_tasks(timeout: float = 2.0) -> None:
    """Let the stream server's connections notice they are closed, rather than cancel them at exit."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout)


async def run(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="milo-shots-") as tmp, running_pulse() as pulse:
        os.environ["PULSE_SERVER"] = pulse.server
        pulse.set(65536)
        icy = await IcyServer(make_mp3(Path(tmp))).start()
        try:
            async with (
                ui_node(Path(tmp), "livingroom", stream_url=icy.url()) as node,
                probe(node.mqtt_port) as p,
                chromium() as browser,
            ):
                await prepare(node, p)
                for size in SIZES:
                    await views(browser, node, p, size, out)
                # Stopped before the stream server goes, so neither side sees the other vanish.
                await p.publish(f"{node.base}/source/radio/set", "stop")
                await p.wait_for(f"{node.base}/source/radio", lambda g: g.json()["state"] == "idle")
        finally:
            await icy.close()
            await settle_tasks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(out))
    for path in sorted(out.glob("*.png")):
        print(f"{path.name}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
