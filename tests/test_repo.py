"""Repository rules: schemas/ is current, every module has a docstring, subsystems never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

from node import registry, schemagen

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "broker", "tests", "bench")


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


def test_subsystems_never_import_each_other() -> None:
    modules = {cls.__module__ for cls in registry.ALL}
    for cls in registry.ALL:
        path = ROOT / (cls.__module__.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert not (imported & (modules - {cls.__module__})), f"{cls.__module__} imports another subsystem"


def test_broker_never_imports_node() -> None:
    for path in (ROOT / "broker").rglob("*.py"):
        assert "from node" not in path.read_text()
        assert "import node" not in path.read_text()
