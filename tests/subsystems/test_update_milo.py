"""Milo updates itself: real wheels of this checkout from a local feed, into a throwaway venv."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.release_feed import ReleaseFeed
from harness.systemd1 import DBusDaemon, FakeSystemd, FakeUnit
from node import __version__
from node.install.plan import toml
from node.subsystems.update import Update
from tests.conftest import NodeFactory
from tests.helpers import probe
from tests.test_wheel import _clean_env, _copy_sources, _run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
WAIT = 120.0  # pip installs a wheel and the check starts the new milo: seconds on a loaded machine
GOOD, BAD, LATER = "9.0.1", "9.0.2", "9.0.3"


@dataclass
class Wheels:
    deps: Path  # milo at this checkout's version and every dependency, to build the venv from
    by_version: dict[str, Path]


def _build(src: Path, out: Path, version: str, *, broken: bool = False) -> Path:
    init = src / "node" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))
    if broken:  # --version still answers; `milo run --check` (the app's import) fails
        app = src / "node" / "app.py"
        app.write_text(app.read_text() + '\nraise RuntimeError("a broken build")\n')
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src, cwd=out)
    return next(out.glob(f"milo-{version}-*.whl"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    tmp = tmp_path_factory.mktemp("wheels")
    deps, out = tmp / "deps", tmp / "out"
    deps.mkdir()
    out.mkdir()
    pins = tmp / "pins.txt"
    frozen = _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable", cwd=tmp).splitlines()
    pins.write_text("".join(f"{line}\n" for line in frozen if not line.lower().startswith("milo")))
    first = tmp / "src"
    first.mkdir()
    _copy_sources(first)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "-w", deps, "-c", pins, first, cwd=tmp)
    built = {}
    for version, broken in ((GOOD, False), (BAD, True), (LATER, False)):
        src = tmp / f"src-{version}"
        shutil.copytree(first, src, symlinks=True)
        built[version] = _build(src, out, version, broken=broken)
    return Wheels(deps, built)


@pytest.fixture
def venv(tmp_path: Path, wheels: Wheels) -> Path:
    """A venv as /opt/milo on a Pi: milo of this checkout installed from its wheel (not the test venv)."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels.deps, "milo", cwd=tmp_path
    )
    return venv


def milo_version(venv: Path) -> str:
    return _run(venv / "bin" / "milo", "--version", cwd=venv).strip()


@pytest.fixture
def dbus(tmp_path: Path) -> Iterator[DBusDaemon]:
    daemon = DBusDaemon(tmp_path).start()
    yield daemon
    daemon.stop()


@pytest.fixture
async def systemd(dbus: DBusDaemon) -> AsyncIterator[FakeSystemd]:
    fake = FakeSystemd(dbus.address)
    fake.add(FakeUnit("milo.service", active=True), allowed=True)
    await fake.start()
    yield fake
    await fake.stop()


def publish(feed: ReleaseFeed, wheel: Path, version: str) -> None:
    data = wheel.read_bytes()
    feed.files[f"/{wheel.name}"] = data
    sha = hashlib.sha256(data).hexdigest()
    feed.feed = {
        "milo": {"version": version, "files": {"any": {"url": feed.url(f"/{wheel.name}"), "sha256": sha}}}
    }


def sections(tmp: Path, feed: ReleaseFeed, venv: Path, systemd: FakeSystemd) -> dict[str, dict[str, Any]]:
    milo = str(venv / "bin" / "milo")
    step = {
        "feed_url": feed.url("/feed.json"),
        "status_dir": str(tmp / "run"),
        "backup_dir": str(tmp / "backup"),
        "paths": {"milo": milo},
        "systemd_bus": systemd.address,
    }
    root_file = tmp / "milo.toml"
    root_file.write_text(toml({}, {"update": step}, ["root's config, read by the step"]))
    node = {**step, "apply": "direct", "milo": milo, "config_file": str(root_file)}
    return {"update": {**node, "first_check_s": 0, "check_every_h": 0}}


async def install(r: Any, p: Any, result: str) -> dict[str, Any]:
    topic = f"{r.base}/update"
    await p.subscribe(topic)
    await p.wait_for(topic, lambda g: g.json()["checked_at"] is not None, timeout=WAIT)
    mark = p.mark()
    await p.publish(f"{topic}/set", "check")
    got = await p.wait_for(topic, lambda g: g.json()["programs"]["milo"]["update"], after=mark, timeout=WAIT)
    assert got.json()["programs"]["milo"]["installable"] is True
    mark = p.mark()
    await p.publish(f"{topic}/set", {"install": "milo"})

    def finished(g: Any) -> bool:
        job = g.json().get("job") or {}
        return job.get("result") == result and g.json()["status"] == "idle"

    final = await p.wait_for(topic, finished, after=mark, timeout=WAIT)
    state: dict[str, Any] = final.json()
    return state


async def test_milo_updates_itself_keeps_a_good_one_and_rolls_back_a_broken_one(  # noqa: PLR0917
    run_node: NodeFactory,
    tmp_path: Path,
    venv: Path,
    wheels: Wheels,
    systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert milo_version(venv) == f"milo {__version__}"
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    with ReleaseFeed() as feed:
        config = sections(tmp_path, feed, venv, systemd)
        # 1. A good wheel: installed, checked, kept; not under systemd, the node says to restart it.
        publish(feed, wheels.by_version[GOOD], GOOD)
        async with run_node(subsystems=(Update,), sections=config) as r, probe(r.port) as p:
            state = await install(r, p, "done")
        job = state["job"]
        assert job["steps"] == ["starting", "downloading", "backup", "installing", "checking", "finished"]
        assert (job["from_version"], job["to_version"]) == (__version__, GOOD)
        assert "restart milo to run it" in job["detail"] and state["restart_needed"] is True
        assert state["programs"]["milo"]["installed"] == GOOD
        assert milo_version(venv) == f"milo {GOOD}"
        assert (tmp_path / "backup" / f"milo-{__version__}.tar").is_file()

        # 2. A wheel whose self test fails: rolled back to the one before, which still runs.
        publish(feed, wheels.by_version[BAD], BAD)
        async with run_node(subsystems=(Update,), sections=config) as r, probe(r.port) as p:
            state = await install(r, p, "rolled_back")
        job = state["job"]
        assert "run --check" in job["detail"] and "a broken build" in job["detail"]
        assert f"back to {GOOD}" in job["detail"] and job["steps"][-2:] == ["rolling back", "finished"]
        assert milo_version(venv) == f"milo {GOOD}"
        check = subprocess.run(  # noqa: ASYNC221 - nothing else runs on the loop meanwhile
            [str(venv / "bin" / "milo"), "run", "--check", "--config", str(tmp_path / "milo.toml")],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=120,
            check=False,
        )
        assert check.returncode == 0 and f"milo {GOOD}: ok" in check.stdout
        assert systemd.units["milo.service"].jobs == []

        # 3. Run by systemd (INVOCATION_ID): the node restarts its own unit to run the new milo.
        monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
        publish(feed, wheels.by_version[LATER], LATER)
        async with run_node(subsystems=(Update,), sections=config) as r, probe(r.port) as p:
            state = await install(r, p, "done")
        assert "restarting milo.service" in state["job"]["detail"] and state["restart_needed"] is False
        assert systemd.units["milo.service"].jobs == ["restart"]
        assert milo_version(venv) == f"milo {LATER}"

        # 4. The node systemd started again shows the update it was restarted for.
        async with run_node(subsystems=(Update,), sections=config) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/update")
            got = await p.wait_for(f"{r.base}/update", lambda g: g.json()["job"] is not None, timeout=WAIT)
        job = got.json()["job"]
        assert (job["result"], job["to_version"]) == ("done", LATER)
        assert "running it since the restart" in job["detail"]
