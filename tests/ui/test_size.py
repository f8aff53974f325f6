"""The UI's weight: what a browser loads, gzipped, and the whole of web/ as the node ships it."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"
LIMIT = 150 * 1024
# What a browser loads (issue 17's target, met by the lighter MQTT client): well under the old 150 KB.
PAGE_LIMIT = 60 * 1024
# Documentation next to the vendored code; never requested by the page.
NOT_SERVED = {"README.md", "paho-mqtt.EPL-1.0", "paho-mqtt.EDL-1.0"}
# Fetched when the settings view is first shown (js/main.js imports it then), not by the first paint;
# schemas.json when it first shows a config.
LATER = {"schemas.json", "settings.js"}
LATER_DIRS = {"settings"}


def served() -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.is_file() and p.name not in NOT_SERVED)


def gzipped(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def test_what_a_browser_loads_is_at_most_60_kb_gzipped() -> None:
    """Every file the page loads, each gzipped as a server would send it, with its largest language."""
    first = [p for p in served() if p.name not in LATER and p.parent.name not in LATER_DIRS]
    code = [p for p in first if p.parent.name != "i18n"]
    languages = [p for p in first if p.parent.name == "i18n"]
    total = sum(gzipped(p.read_bytes()) for p in code) + max(gzipped(p.read_bytes()) for p in languages)
    print(f"a browser loads {total / 1024:.1f} KB gzipped")
    assert total <= PAGE_LIMIT, f"the UI a browser loads is {total / 1024:.1f} KB gzipped (limit 60 KB)"


def test_the_whole_of_web_is_at_most_150_kb_gzipped() -> None:
    """All of web/ (every language, the vendored bundle and its licence) as one gzipped archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as archive:
        for path in sorted(p for p in WEB.rglob("*") if p.is_file()):
            archive.add(path, arcname=path.relative_to(WEB).as_posix(), recursive=False)
    total = len(buffer.getvalue())
    print(f"web/ is {total / 1024:.1f} KB as one gzipped archive")
    assert total <= LIMIT, f"web/ is {total / 1024:.1f} KB gzipped (limit 150 KB)"


REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["'](?:https?:)?//|from\s+["'](?:https?:)?//|import\(\s*["'](?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//|fetch\(\s*["'`](?:https?:)?//"""
)


def test_the_page_needs_nothing_from_the_internet() -> None:
    """No CDN: every script, style, font and data file the page loads is a relative path on this node."""
    for path in served():
        if path.suffix in (".html", ".css", ".js"):
            found = REMOTE.findall(path.read_text())
            assert not found, f"{path.relative_to(WEB)} loads from elsewhere: {found}"
