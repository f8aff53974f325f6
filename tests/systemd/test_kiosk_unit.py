"""The kiosk unit template renders with every variable given, and systemd-analyze accepts the result."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
VALUES: dict[str, str | int] = {
    "user": "milo",
    "tty": "tty1",
    "http_port": 8080,
    "cage": "/usr/bin/cage",
    "chromium": "/usr/bin/chromium",
    "node_unit": "milo.service",
}


def render(**values: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SYSTEMD),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a unit file, not HTML
    )
    return env.get_template("milo-kiosk.service.j2").render(**values)


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_it_renders_chromium_in_cage_on_the_nodes_own_kiosk_page() -> None:
    unit = directives(render(**VALUES))
    (start,) = unit["ExecStart"]
    assert start.startswith("/usr/bin/cage -d -s -- /usr/bin/chromium --kiosk ")
    assert start.endswith(" http://127.0.0.1:8080/?kiosk=1")
    assert unit["User"] == ["milo"]
    assert unit["TTYPath"] == ["/dev/tty1"]
    assert unit["Conflicts"] == ["getty@tty1.service"]
    assert "8080" in unit["ExecStartPre"][0]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "LockPersonality"):
        assert hardening in unit, hardening


def test_every_variable_is_needed() -> None:
    for missing in VALUES:
        with pytest.raises(jinja2.UndefinedError):
            render(**{k: v for k, v in VALUES.items() if k != missing})


def test_systemd_analyze_accepts_it(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the systemd package)")
    path = tmp_path / "milo-kiosk.service"
    path.write_text(render(**VALUES))
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False)
    # The programs are the Pi's: on a machine without cage, that is the one thing it may say.
    absent = {str(VALUES[p]) for p in ("cage", "chromium") if not Path(str(VALUES[p])).exists()}
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip()
        and not any(re.search(rf"Command {re.escape(p)} is not executable", line) for p in absent)
    ]
    assert problems == [], problems
    assert done.returncode == 0 or absent


def test_the_packages_it_needs_are_listed_and_in_the_readme() -> None:
    packages = (SYSTEMD / "milo-kiosk.packages").read_text().split()
    # Hindi and Chinese show as boxes without these on a bare Pi OS.
    assert {"cage", "chromium", "fonts-noto-core", "fonts-noto-cjk"} <= set(packages)
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in packages)
