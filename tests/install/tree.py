"""Snapshots of a rendered tree (type, mode, content, link target) and golden trees to compare them with."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
Entry = tuple[str, ...]


def snapshot(root: Path) -> dict[str, tuple[str, str, bytes]]:
    """Relative path -> (kind, mode or link target, content) for everything under `root`."""
    found: dict[str, tuple[str, str, bytes]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("l", str(path.readlink()), b"")
        elif path.is_dir():
            found[rel] = ("d", f"{path.stat().st_mode & 0o7777:04o}", b"")
        else:
            found[rel] = ("f", f"{path.stat().st_mode & 0o7777:04o}", path.read_bytes())
    return found


def listing(tree: dict[str, tuple[str, str, bytes]]) -> str:
    lines = []
    for rel, (kind, meta, _) in tree.items():
        lines.append(f"{kind} {rel} -> {meta}" if kind == "l" else f"{kind} {meta} {rel}")
    return "\n".join(lines) + "\n"


def check_golden(name: str, root: Path) -> None:
    """`root` is the golden tree `name`: the listing (types, modes, links) and every file's bytes."""
    tree = snapshot(root)
    folder = GOLDEN / name
    if os.environ.get("MILO_UPDATE_GOLDEN") == "1":
        import shutil  # noqa: PLC0415

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (GOLDEN / f"{name}.tree").write_text(listing(tree))
        for rel, (kind, _, data) in tree.items():
            if kind == "f":
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
    assert (GOLDEN / f"{name}.tree").exists(), (
        f"no golden {name}: run with MILO_UPDATE_GOLDEN=1 and review it"
    )
    assert listing(tree) == (GOLDEN / f"{name}.tree").read_text(), (
        f"{name}.tree differs (MILO_UPDATE_GOLDEN=1)"
    )
    for rel, (kind, _, data) in tree.items():
        if kind == "f":
            assert data.decode() == (folder / rel).read_text(), f"{name}/{rel} differs (MILO_UPDATE_GOLDEN=1)"
