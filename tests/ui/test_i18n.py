"""Every string of the UI in every language: same keys everywhere, and every key the page uses exists."""

from __future__ import annotations

import json
import re
import typing
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from node import registry
from node.framework.subsystem import Status
from node.framework.views import SourceStatus
from node.subsystems.equalizer import PRESETS
from node.subsystems.player import PlayerStatus
from node.subsystems.ui import LANGUAGES
from node.subsystems.update import NotInstallable
from tests.ui.codes import codes_in, node_codes

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
I18N = WEB / "i18n"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# The page's own codes: a request nobody answered, a command with no connection to send it on.
PAGE_CODES = {"timeout", "offline", "other", "upload"}


def load(lang: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def sources() -> list[Path]:
    return sorted([*WEB.glob("js/**/*.js"), *WEB.glob("*.html")])


def test_every_language_has_a_file_and_the_page_offers_the_same_ones() -> None:
    assert sorted(p.stem for p in I18N.glob("*.json")) == sorted(LANGUAGES)
    offered = re.search(r"export const LANGUAGES = \{(.*?)\};", (WEB / "js/i18n.js").read_text(), re.S)
    assert offered is not None
    assert sorted(re.findall(r"\b([a-z]{2}):", offered.group(1))) == sorted(LANGUAGES)


def test_every_language_has_exactly_the_keys_of_english() -> None:
    english = load("en")
    problems = []
    for lang in LANGUAGES:
        strings = load(lang)
        missing = sorted(set(english) - set(strings))
        extra = sorted(set(strings) - set(english))
        if missing:
            problems.append(f"{lang}.json lacks {missing}")
        if extra:
            problems.append(f"{lang}.json has keys English does not: {extra}")
        for key, text in strings.items():
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{lang}.json: {key} is empty")
            elif key in english and set(PLACEHOLDER.findall(text)) != set(PLACEHOLDER.findall(english[key])):
                problems.append(f"{lang}.json: {key} has placeholders {PLACEHOLDER.findall(text)}")
    assert not problems, "\n".join(problems)


def used_keys() -> dict[str, set[str]]:
    """Every literal that looks like a key (a known prefix, then dotted words), by the file using it."""
    prefixes = sorted({key.split(".")[0] for key in load("en")})
    literal = re.compile(r"""['"`]((?:""" + "|".join(prefixes) + r""")\.[a-z0-9_.]+)['"`]""")
    return {path.relative_to(WEB).as_posix(): set(literal.findall(path.read_text())) for path in sources()}


def test_every_key_the_page_uses_exists() -> None:
    english = load("en")
    used = used_keys()
    assert sum(len(keys) for keys in used.values()) > 100  # the scan does find the page's keys
    missing = {name: sorted(keys - set(english)) for name, keys in used.items() if keys - set(english)}
    assert not missing, f"keys used but absent from web/i18n/en.json: {missing}"


def test_keys_built_from_data_exist() -> None:
    """Keys the page builds at run time (`source.${name}`...) cannot be scanned: their families are listed."""
    english = load("en")
    families = {
        "source": [*registry.source_names(), "none"],
        "state": sorted({*typing.get_args(SourceStatus), *typing.get_args(PlayerStatus)}),
        "status": [s.value for s in Status],
        "eq.preset": list(PRESETS),
        "conn": ["connecting", "connected", "offline"],
        # The update state's reasons are shown by their code too (why a program has no button).
        "error": sorted(node_codes() | PAGE_CODES | set(typing.get_args(NotInstallable))),
    }
    missing = [f"{family}.{name}" for family, names in families.items() for name in names]
    missing = [key for key in missing if key not in english]
    assert not missing, f"add these to every web/i18n/*.json: {missing}"


def test_the_code_scan_finds_every_way_a_code_is_raised() -> None:
    """The scan is what keeps the translations complete: it must see each form a code is raised in."""
    node = ROOT / "node"
    assert {"invalid_payload", "local_only"} <= codes_in(node / "framework" / "runner.py")  # CommandError
    assert {"crashed", "corrupt_store"} <= codes_in(node / "framework" / "runner.py")  # report(...)
    assert {"disabled", "unavailable"} <= codes_in(node / "framework" / "runner.py")  # through a name
    assert {"not_an_image", "too_many_logos"} <= codes_in(node / "http" / "logos.py")  # LogoError
    assert {"foreign_origin", "bad_request", "busy"} <= codes_in(node / "http" / "server.py")  # HttpError
    assert {"unresolvable_host", "unsafe_url"} <= node_codes()


def test_every_error_code_has_its_own_message_in_every_language() -> None:
    """A code without a message would show as "Refused (code)": each one the node sends is said in words."""
    codes = node_codes() | PAGE_CODES
    problems = [
        f"{lang}.json lacks error.{code}"
        for lang in LANGUAGES
        for code in sorted(codes)
        if f"error.{code}" not in load(lang)
    ]
    assert not problems, "\n".join(problems)
    # Two codes, two different messages: an unknown host is not an address refused as unsafe.
    for lang in LANGUAGES:
        strings = load(lang)
        assert strings["error.unresolvable_host"] != strings["error.unsafe_url"]


class _TextWithoutKey(HTMLParser):
    """Collects text in index.html's body whose element carries no data-i18n."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.untranslated: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "link", "br", "img", "input"):
            self.stack.append((tag, any(name == "data-i18n" for name, _ in attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        text = data.strip()
        tags = [tag for tag, _ in self.stack]
        # The brand is a name; without JavaScript there is nothing to translate with.
        if not text or "body" not in tags or "noscript" in tags or "script" in tags or text == "Milo":
            return
        if not (self.stack and self.stack[-1][1]):
            self.untranslated.append(text)


def test_nothing_in_the_markup_is_left_untranslated() -> None:
    """Text in index.html is a first-paint fallback only: each element holding some names its key."""
    parser = _TextWithoutKey()
    parser.feed((WEB / "index.html").read_text())
    assert parser.untranslated == []
