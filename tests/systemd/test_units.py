"""Every unit template renders with the base context and passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node import registry
from node.adapters.units import base_context, render_unit, templates


def test_there_is_a_template_for_the_node() -> None:
    assert "milo.service" in templates()


@pytest.mark.parametrize("unit", templates())
def test_unit_renders_and_verifies(unit: str, tmp_path: Path) -> None:
    # The unit's programs must exist for verify: this venv's milo stands in for /usr/bin/milo.
    text = render_unit(unit, base_context(milo=str(Path(sys.executable).parent / "milo")))
    assert "{{" not in text
    assert "User=root" not in text
    # A template (name@.service) is verified as one of its instances: verify refuses the template itself.
    path = tmp_path / unit.replace("@.", "@check.")
    path.write_text(text)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    # A program this machine has not installed (cage, go-librespot...) is the one complaint let through.
    missing = re.compile(r"Command (\S+) is not executable: No such file or directory")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    absent = [m.group(1) for line in lines if (m := missing.search(line)) and not Path(m.group(1)).exists()]
    problems = [line for line in lines if not missing.search(line)]
    assert not problems, done.stderr
    assert done.returncode == 0 or absent, done.stderr


def test_every_source_names_an_existing_unit_template() -> None:
    for cls in registry.SOURCES:
        assert cls.unit is None or cls.unit in templates(), (cls.name, cls.unit)
