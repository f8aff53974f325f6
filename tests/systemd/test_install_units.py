"""The units `milo install` writes verify, for every kind of node; the polkit rule says yes only to them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node import registry
from node.adapters.units import templates
from node.install.plan import VERBS, Options
from node.install.run import install

MILO = str(Path(sys.executable).parent / "milo")
PRIVILEGED = {"milo-update@.service"}
KINDS = {
    "main": Options(node_id="living", milo=MILO, dac="hifiberry-dacplus", screen="official-7"),
    "main-hdmi": Options(node_id="den", milo=MILO, dac="auto", screen="hdmi"),
    "satellite": Options(node_id="kitchen", milo=MILO, dac="hifiberry-dac", satellite=True, main="living"),
}


def rendered(tmp_path: Path, opts: Options) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    out = io.StringIO()
    install(opts, root=root, templates=templates(), subsystems=registry.names(), out=out)
    return root


def _absent_programs(text: str) -> set[str]:
    """Programs a unit runs that this machine lacks (the kiosk's cage on a build host): verify says so."""
    found = set()
    for line in text.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")):
            program = line.split("=", 1)[1].lstrip("-@:+!").split()[0]
            if program.startswith("/") and not Path(program).exists():
                found.add(program)
    return found


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_installed_unit_verifies(tmp_path: Path, kind: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    root = rendered(tmp_path, KINDS[kind])
    unit_files = sorted((root / "etc/systemd/system").glob("*.service"))
    assert "milo.service" in [p.name for p in unit_files]
    for found in unit_files:
        path, text = found, found.read_text()
        if path.name in PRIVILEGED:
            # The update's step: root on purpose (apt), started only by the node, one program at a time.
            assert "User=" not in text and "Type=oneshot" in text
            assert "[Install]" not in text  # never enabled
            wanted: tuple[str, ...] = ("NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes")
            path = found.rename(found.with_name(found.name.replace("@.", "@go-librespot.")))  # verify: one
        else:
            assert "User=root" not in text and "User=" in text, path.name
            wanted = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes")
        for line in wanted:
            assert line in text, (path.name, line)
        argv = [analyze, "verify", "--man=no", str(path)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        absent = _absent_programs(text)
        problems = [
            line
            for line in done.stderr.splitlines()
            if (str(path) in line or "Failed" in line) and not any(p in line for p in absent)
        ]
        assert not problems, done.stderr


def test_the_node_unit_of_an_install_has_its_groups_and_paths(tmp_path: Path) -> None:
    root = rendered(tmp_path, KINDS["main"])
    text = (root / "etc/systemd/system/milo.service").read_text()
    # bluetooth since the Bluetooth source is registered (BlueZ and its agent need the group).
    assert "SupplementaryGroups=audio bluetooth video render input gpio" in text
    assert "ReadWritePaths=/var/lib/milo -/sys/devices/platform" in text  # the backlight, nothing else
    assert f"ExecStart={MILO} run --config /etc/milo/milo.toml" in text
    assert "CapabilityBoundingSet=\n" in text


NODE = shutil.which("node") or shutil.which("nodejs")
# polkit's rules are JavaScript (duktape in polkit 122); node runs the same ES5 with a stand-in `polkit`.
HARNESS = """
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: null}, addRule: (f) => rules.push(f)};
eval(fs.readFileSync(process.argv[1], "utf8"));
const cases = JSON.parse(process.argv[2]);
const out = cases.map(([id, user, unit, verb]) => {
    const action = {id: id, lookup: (k) => ({unit: unit, verb: verb})[k]};
    const subject = {user: user};
    for (const rule of rules) { const r = rule(action, subject); if (r) return r; }
    return null;
});
console.log(JSON.stringify(out));
"""


def run_rule(rule: Path, cases: list[list[str | None]]) -> list[str | None]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", HARNESS, str(rule), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answers: list[str | None] = json.loads(done.stdout)
    return answers


@pytest.mark.skipif(NODE is None, reason="no JavaScript engine (node) on this machine")
@pytest.mark.parametrize("kind", ["main", "satellite"])
def test_the_installed_rule_lets_the_node_only_start_an_update_step(tmp_path: Path, kind: str) -> None:
    rule = rendered(tmp_path, KINDS[kind]) / "etc/polkit-1/rules.d/50-milo.rules"
    manage = "org.freedesktop.systemd1.manage-units"
    others: list[list[str | None]] = [
        [manage, "milo", "milo-update@milo.service", verb] for verb in VERBS if verb != "start"
    ]
    cases: list[list[str | None]] = [
        [manage, "milo", "milo.service", "restart"],  # after its own update
        [manage, "milo", "milo-update@milo.service", "start"],
        [manage, "milo", "milo-update@snapserver.service", "start"],
        *others,  # stop, reset-failed...: root's
        [manage, "milo", "milo-update@evil.service", "start"],  # no program updates install
    ]
    expected = ["yes", "yes", "yes", *[None] * len(others), None]
    assert run_rule(rule, cases) == expected


@pytest.mark.skipif(NODE is None, reason="no JavaScript engine (node) on this machine")
def test_the_polkit_rule_lets_the_node_drive_its_daemons_and_nothing_else(tmp_path: Path) -> None:
    from node.install.plan import polkit_rule  # noqa: PLC0415

    rule = tmp_path / "50-milo.rules"
    rule.write_text(
        polkit_rule("milo", ["snapserver.service", "go-librespot.service"], ["milo-update@x.service"])
    )
    manage = "org.freedesktop.systemd1.manage-units"
    cases: list[list[str | None]] = [
        [manage, "milo", "snapserver.service", "restart"],
        [manage, "milo", "go-librespot.service", "start"],
        [manage, "milo", "go-librespot.service", "stop"],
        [manage, "milo", "ssh.service", "stop"],  # another unit
        [manage, "milo", "snapserver.service", "enable"],  # not a job verb
        [manage, "pi", "snapserver.service", "restart"],  # another user
        ["org.freedesktop.systemd1.manage-unit-files", "milo", "snapserver.service", "start"],
        ["org.freedesktop.login1.reboot", "milo", None, None],
        [manage, "milo", "milo-update@x.service", "start"],  # an update's step: started, and no more
        [manage, "milo", "milo-update@x.service", "stop"],
        [manage, "milo", "milo-update@y.service", "start"],
    ]
    assert run_rule(rule, cases) == ["yes", "yes", "yes", None, None, None, None, None, "yes", None, None]
    assert set(VERBS) >= {"start", "stop", "restart"}
