"""Settings drawn from the config schemas: every key translated, grouped per subsystem, rare ones folded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from harness.ui import PHONE, UiNode, open_page
from node.schemagen import web_settings
from node.subsystems.ui import LANGUAGES
from tests.helpers import Probe

WEB = Path(__file__).resolve().parents[2] / "web"


def load(lang: str) -> dict[str, Any]:
    """A language's strings as the settings view has them: the page's, and its own part."""
    data: dict[str, Any] = {}
    for path in (WEB / "i18n" / f"{lang}.json", WEB / "i18n" / "settings" / f"{lang}.json"):
        data.update(json.loads(path.read_text(encoding="utf-8")))
    return data


def test_the_settings_part_has_the_same_keys_in_every_language() -> None:
    def part(lang: str) -> dict[str, str]:
        data: dict[str, str] = json.loads(
            (WEB / "i18n" / "settings" / f"{lang}.json").read_text(encoding="utf-8")
        )
        return data

    english = part("en")
    for lang in LANGUAGES:
        strings = part(lang)
        assert sorted(strings) == sorted(english), f"i18n/settings/{lang}.json differs from English"
        assert all(isinstance(v, str) and v.strip() for v in strings.values()), f"{lang}: an empty string"


def test_every_key_of_every_subsystem_is_said_in_every_language() -> None:
    """A key without a label or help would show its raw name: each one of each config is translated."""
    configs = json.loads(web_settings())["configs"]
    assert len(configs) >= 10 and sum(len(c["keys"]) for c in configs.values()) > 100
    problems = []
    for lang in LANGUAGES:
        strings = load(lang)
        for config in configs.values():
            name = config["name"]
            if f"subsystem.{name}" not in strings:
                problems.append(f"{lang}: subsystem.{name}")
            for key, field in config["keys"].items():
                for part in ("label", "help"):
                    own, shared = f"settings.{name}.{key}.{part}", f"settings.common.{key}.{part}"
                    if own not in strings and shared not in strings:
                        problems.append(f"{lang}: {own}")
                if "unit" in field and f"settings.unit.{field['unit']}" not in strings:
                    problems.append(f"{lang}: settings.unit.{field['unit']}")
    assert not problems, "add to web/i18n/*.json:\n" + "\n".join(problems)


def test_the_page_reads_the_schemas_milo_schemas_writes() -> None:
    assert (WEB / "schemas.json").read_text() == web_settings()


@pytest.mark.timeout(60)
async def test_settings_are_translated_grouped_and_the_rare_keys_folded(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    await mqtt.publish(f"{milo.base}/ui/set", "fr")
    page = await open_page(browser, milo.url + "#settings", viewport=PHONE)
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    radio = page.locator("details[data-config='source/radio/config']")
    await expect(radio.locator(":scope > summary")).to_contain_text("Radio")
    await radio.locator(":scope > summary").click()
    # A translated label with its help and its unit, not `refresh_s` in monospace.
    info = page.locator("details[data-config='info/config']")
    await expect(info.locator(":scope > summary")).to_contain_text("Informations du nœud")
    await info.locator(":scope > summary").click()
    refresh = info.locator("[data-key=refresh_s]")
    await expect(refresh.locator(".label")).to_have_text("Actualiser toutes les")
    await expect(refresh.locator(".help")).to_contain_text("température")
    await expect(refresh.locator(".unit")).to_have_text("s")
    # The on/off switch is named for what it turns on and says its state apart.
    enabled = info.locator("[data-key=enabled]")
    await expect(enabled.locator(".label")).to_have_text("Informations du nœud")
    await expect(enabled.locator(".state")).to_have_text("Activé")
    # The rare keys are there, folded away; what only the node's file may set is shown, not editable.
    advanced = radio.locator("details.advanced")
    ao = advanced.locator("[data-key=ao]")
    await expect(ao).to_be_hidden()
    await advanced.locator(":scope > summary").click()
    await expect(ao.locator(".label")).to_have_text("Pilote de sortie audio")
    await expect(ao.locator("input")).to_be_disabled()
    await expect(ao).to_contain_text("fichier de configuration")
    await expect(radio.locator(".fields").first.locator("[data-key=click_counting]")).to_be_visible()
    # A choice is a list of what the schema allows.
    search = radio.locator("[data-key=search] select")
    assert len(await search.locator("option").all()) >= 2
    await expect(search.locator("option[value=auto]")).to_have_text("L'annuaire, sinon la copie locale")


@pytest.mark.timeout(60)
async def test_a_refused_value_keeps_what_was_typed_and_says_why_at_the_field(
    browser: Browser, milo: UiNode, mqtt: Probe
) -> None:
    page = await open_page(browser, milo.url + "#settings", viewport=PHONE)
    volume = page.locator("details[data-config='volume/config']")
    await volume.locator(":scope > summary").click()
    step = volume.locator("[data-key=step]")
    limit = volume.locator("[data-key=limit_max]")
    await step.locator("input").fill("0")
    await limit.locator("input").fill("80")
    mark = mqtt.mark()
    await volume.locator("button[type=submit]").click()
    sent = (await mqtt.wait_for(f"{milo.base}/volume/config/set", after=mark)).json()
    assert sent == {"step": 0, "limit_max": 80}
    await expect(step.locator(".msg .why")).to_have_text("Invalid setting")
    await expect(step.locator(".msg .detail")).not_to_be_empty()
    await expect(step.locator("input")).to_have_value("0")
    await expect(step).to_have_class("field dirty invalid")
    await expect(limit.locator("input")).to_have_value("80")
    # Corrected, it goes through; the node's config echoes it and the field is clean again.
    await step.locator("input").fill("2")
    await volume.locator("button[type=submit]").click()
    await mqtt.wait_for(f"{milo.base}/volume/config", lambda g: g.json().get("step") == 2)
    await expect(step.locator(".msg")).to_be_empty()
    await expect(step).to_have_class("field")
