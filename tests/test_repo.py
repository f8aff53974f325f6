"""Repository rules: schemas/ is current, every module has a docstring, subsystems never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from node import registry, schemagen

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "broker", "harness", "tests", "bench")


def test_committed_schemas_are_current() -> None:
    assert schemagen.check() == [], "run `milo schemas` and commit schemas/"


def test_every_state_config_and_command_has_a_schema() -> None:
    files = schemagen.generate()
    for cls in registry.ALL:
        slug = cls.state_topic().replace("/", ".")
        assert f"{slug}.state.json" in files
        assert f"{slug}.config.json" in files
        assert (f"{slug}.command.json" in files) == (cls.Command is not None)
    assert "| `info` | state | yes |" in files["README.md"]


def _modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts]


def test_every_module_starts_with_a_one_line_docstring() -> None:
    missing = []
    for path in _modules():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or "\n" in doc.strip():
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_the_cli_loads_neither_the_broker_nor_the_tests() -> None:
    # Layering is import-linter's job (pyproject.toml, run by `make lint`); this checks what is loaded.
    code = (
        "import sys, node.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'amqtt', 'broker', 'tests'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_the_node_loads_no_library_that_only_a_working_subsystem_needs() -> None:
    # Each costs resident memory on a 512 MB Pi (README, Benchmark): loaded where first used, or never.
    heavy = {
        "dbus_fast",  # the Bluetooth source, once a bus is there; systemd, on an update
        "pwdlib", "argon2",  # amqtt's password plugins; broker/admit.py answers its auth hook
        "aiomqtt", "paho",  # only a node on an external broker
        "mpv", "PIL", "gpiozero",  # radio on first play, logo uploads, the knob
        "hypothesis", "numpy",  # tests only
    }  # fmt: skip
    code = (
        f"import sys, node.cli, node.app; print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
