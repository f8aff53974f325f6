"""Home Assistant for the tests: its cached venv (scripts/ha-venv.sh) and the discovery check run in it."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHECK = Path(__file__).with_name("ha_check.py")
# Building the venv the first time downloads Home Assistant and its pins (about 5 minutes here);
# `make test` builds it before pytest starts, so a test only finds it.
BUILD_TIMEOUT = 1200


def installed_by(script: str, timeout: float) -> Path:
    """Run `scripts/<script>` (it installs what is missing, then prints a path last) and return that path."""
    done = subprocess.run(
        [str(ROOT / "scripts" / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/{script} failed:\n{done.stderr[-4000:]}")
    return ROOT / done.stdout.strip().splitlines()[-1]


@cache
def ha_python() -> Path:
    """The Home Assistant venv's python, built first if it is missing or of another version."""
    return installed_by("ha-venv.sh", BUILD_TIMEOUT)


def ha_check(
    configs: dict[str, bytes], retained: dict[str, bytes], events: dict[str, list[bytes]] | None = None
) -> dict[str, Any]:
    """What Home Assistant's discovery code makes of `configs`, rendered against `retained` states.

    `events`: messages (not retained) on event entities' topics, read as those entities would.
    {"problems": [...], "entities": {id: {"platform", "state", "available", "commands", "events"}}}.
    """
    request = {
        "configs": {topic: payload.decode() for topic, payload in configs.items()},
        "retained": {topic: payload.decode() for topic, payload in retained.items()},
        "events": {topic: [p.decode() for p in payloads] for topic, payloads in (events or {}).items()},
    }
    done = subprocess.run(
        [str(ha_python()), "-P", str(CHECK)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise RuntimeError(f"ha_check failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
