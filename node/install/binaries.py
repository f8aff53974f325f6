"""`milo fetch-binaries`: daemons no registry has (go-librespot, roc-recv), checked against a pinned list."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def main(
    *,
    names: Sequence[str],
    source: Path | None,
    pinned: Path | None,
    arch: str | None,
    root: Path | None,
    dry_run: bool,
) -> int:
    raise NotImplementedError
