"""The update flow: a local release feed, a fake package manager, fake systemd1; installs, and rolls back."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.fake_apt import FakeApt
from harness.net import free_port
from harness.release_feed import ReleaseFeed
from harness.systemd1 import DBusDaemon, FakeSystemd, FakeUnit
from node.install.binaries import ARCHES
from node.install.plan import toml
from node.subsystems.info import Info
from node.subsystems.update import Update
from tests.conftest import NodeFactory
from tests.helpers import Got, probe

ARCH = ARCHES.get(platform.machine(), platform.machine())
MILO = str(Path(sys.executable).parent / "milo")
CHECKOUT = str(Path(__file__).resolve().parents[2])
WAIT = 30.0


def librespot(version: str, *, works: bool = True) -> bytes:
    return f"#!/bin/sh\necho 'go-librespot v{version}'\n".encode() if works else b"#!/bin/sh\nexit 1\n"


def tar_gz(binary: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("go-librespot")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    return out.getvalue()


@dataclass
class World:
    tmp: Path
    feed: ReleaseFeed
    apt: FakeApt
    systemd: FakeSystemd
    binary: Path

    def publish(self, version: str, *, works: bool = True) -> None:
        import hashlib  # noqa: PLC0415

        data = tar_gz(librespot(version, works=works))
        self.feed.files["/go-librespot.tar.gz"] = data
        sha = hashlib.sha256(data).hexdigest()
        self.feed.feed = {
            "go-librespot": {
                "version": version,
                "files": {
                    ARCH: {
                        "url": self.feed.url("/go-librespot.tar.gz"),
                        "sha256": sha,
                        "member": "go-librespot",
                    }
                },
            }
        }

    def settings(self, **more: Any) -> dict[str, Any]:
        return {
            "feed_url": self.feed.url("/feed.json"),
            "apt_cache": self.apt.apt_cache,
            "apt_get": self.apt.apt_get,
            "status_dir": str(self.tmp / "run"),
            "backup_dir": str(self.tmp / "backup"),
            "paths": {"go-librespot": str(self.binary)},
            "settle_s": 0.0,
            "systemd_bus": self.systemd.address,
            **more,
        }

    def sections(self, **more: Any) -> dict[str, dict[str, Any]]:
        """The node's [update]: the same settings as root's file, run directly, checked at once."""
        root_file = self.tmp / "milo.toml"
        root_file.write_text(toml({}, {"update": self.settings()}, ["root's config, read by the step"]))
        node = self.settings(apply="direct", milo=MILO, config_file=str(root_file), first_check_s=0)
        return {"update": {**node, "check_every_h": 0, **more}}


@pytest.fixture
def dbus(tmp_path: Path) -> Iterator[DBusDaemon]:
    daemon = DBusDaemon(tmp_path).start()
    yield daemon
    daemon.stop()


@pytest.fixture
async def world(tmp_path: Path, dbus: DBusDaemon) -> AsyncIterator[World]:
    async with make_world(tmp_path, dbus) as w:
        yield w


@contextlib.asynccontextmanager
async def make_world(tmp_path: Path, dbus: DBusDaemon) -> AsyncIterator[World]:
    """go-librespot 0.9.0 installed (0.9.1 in the feed), snapserver 0.26.0 (0.27.0 the candidate)."""
    binary = tmp_path / "bin" / "go-librespot"
    binary.parent.mkdir()
    binary.write_bytes(librespot("0.9.0"))
    binary.chmod(0o755)
    apt = FakeApt(tmp_path / "apt", {"snapserver": {"installed": "0.26.0", "candidate": "0.27.0"}})
    fake = FakeSystemd(dbus.address)
    fake.add(FakeUnit("go-librespot.service", active=True), allowed=True)
    fake.add(FakeUnit("snapserver.service", active=True), allowed=True)
    await fake.start()
    with ReleaseFeed() as feed:
        w = World(tmp_path, feed, apt, fake, binary)
        w.publish("0.9.1")
        yield w
    await fake.stop()


def job_is(result: str) -> Any:
    return lambda g: (g.json().get("job") or {}).get("result") == result and g.json()["status"] == "idle"


async def test_a_check_says_what_is_newer(run_node: NodeFactory, world: World) -> None:
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/update")
        got = await p.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=WAIT)
    programs = got.json()["programs"]
    assert programs["go-librespot"] == {
        "installed": "0.9.0",
        "available": "0.9.1",
        "source": "feed",
        "update": True,
        "installable": True,
        "reason": None,
        "detail": "",
    }
    assert programs["snapserver"]["installed"] == "0.26.0" and programs["snapserver"]["update"] is True
    # The feed has no milo: unknown; and this node runs from this checkout (editable): never offered.
    assert programs["milo"]["available"] is None and programs["milo"]["installable"] is False
    assert got.json()["error"] == ""


async def test_offline_the_feed_is_unknown_and_nothing_breaks(run_node: NodeFactory, world: World) -> None:
    sections = world.sections(feed_url=f"http://127.0.0.1:{free_port()}/feed.json")
    async with run_node(subsystems=(Info, Update), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/update", f"{r.base}/info")
        got = await p.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=WAIT)
        assert "release feed" in got.json()["error"]
        assert got.json()["programs"]["go-librespot"]["available"] is None
        assert got.json()["programs"]["snapserver"]["available"] == "0.27.0"  # apt's lists are local
        info = await p.wait_for(f"{r.base}/info")
        assert info.json()["subsystems"]["update"]["status"] == "running"


async def install(r: Any, p: Any, program: str, result: str) -> list[Got]:
    await p.subscribe(f"{r.base}/update")
    await p.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=WAIT)
    mark = p.mark()
    await p.publish(f"{r.base}/update/set", {"install": program})
    await p.wait_for(f"{r.base}/update", job_is(result), after=mark, timeout=WAIT)
    return [g for g in p.seen[mark:] if g.topic == f"{r.base}/update"]


async def test_a_feed_update_is_installed_checked_and_kept(run_node: NodeFactory, world: World) -> None:
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        seen = await install(r, p, "go-librespot", "done")
        final = await p.wait_for(
            f"{r.base}/update",
            lambda g: g.json()["programs"].get("go-librespot", {}).get("installed") == "0.9.1",
        )
    assert world.binary.read_bytes() == librespot("0.9.1")
    assert (world.tmp / "backup" / "go-librespot-0.9.0").read_bytes() == librespot("0.9.0")
    assert world.systemd.units["go-librespot.service"].jobs == ["restart"]
    job = final.json()["job"]
    assert job["steps"] == ["starting", "downloading", "backup", "installing", "checking", "finished"]
    assert seen[0].json()["status"] == "updating"
    assert (job["from_version"], job["to_version"]) == ("0.9.0", "0.9.1")
    assert final.json()["programs"]["go-librespot"]["update"] is False


async def test_a_feed_update_that_does_not_run_is_rolled_back(run_node: NodeFactory, world: World) -> None:
    world.publish("0.9.1", works=False)
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        seen = await install(r, p, "go-librespot", "rolled_back")
    assert world.binary.read_bytes() == librespot("0.9.0")
    job = seen[-1].json()["job"]
    assert "runs as nothing, not 0.9.1" in job["detail"] and "back to 0.9.0" in job["detail"]
    assert job["steps"][-2:] == ["rolling back", "finished"]
    assert world.systemd.units["go-librespot.service"].jobs == ["restart", "restart"]


async def test_a_package_update_and_its_rollback(run_node: NodeFactory, world: World) -> None:
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        await install(r, p, "snapserver", "done")
    assert world.apt.installed("snapserver") == "0.27.0"
    assert ["apt-get", "download", "snapserver=0.26.0"] in world.apt.log
    assert ["apt-get", "install", "-y", "--only-upgrade", "snapserver=0.27.0"] in world.apt.log
    # 0.27.1 dies as soon as it starts: back to 0.27.0 from the .deb kept before.
    world.apt.state.write_text(
        json.dumps(
            {
                **json.loads(world.apt.state.read_text()),
                "packages": {"snapserver": {"installed": "0.27.0", "candidate": "0.27.1"}},
            }
        )
    )
    world.systemd.units["snapserver.service"].fails_when = lambda: (
        world.apt.installed("snapserver") == "0.27.1"
    )
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        seen = await install(r, p, "snapserver", "rolled_back")
    assert world.apt.installed("snapserver") == "0.27.0"
    assert ["apt-get", "install", "-y", "--allow-downgrades", "./snapserver_0.27.0_all.deb"] in world.apt.log
    assert "restart snapserver.service: failed" in seen[-1].json()["job"]["detail"]


async def test_through_its_unit_as_on_a_pi(run_node: NodeFactory, world: World) -> None:
    # The node starts milo-update@go-librespot.service (polkit allows it); the unit runs the step.
    import asyncio  # noqa: PLC0415

    sections = world.sections(apply="systemd")
    step_config = sections["update"]["config_file"]

    async def step() -> bool:
        argv = [MILO, "update-apply", "go-librespot", "--config", step_config]
        proc = await asyncio.create_subprocess_exec(*argv)
        return await proc.wait() == 0

    world.systemd.add(FakeUnit("milo-update@go-librespot.service", on_start=step), allowed=True)
    async with run_node(subsystems=(Info, Update), sections=sections) as r, probe(r.port) as p:
        await install(r, p, "go-librespot", "done")
    assert world.binary.read_bytes() == librespot("0.9.1")
    assert world.systemd.units["milo-update@go-librespot.service"].jobs == ["start"]


async def test_refusals(run_node: NodeFactory, world: World) -> None:
    async with run_node(subsystems=(Info, Update), sections=world.sections()) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        await p.publish(f"{r.base}/update/set", {"install": "pulseaudio"})
        err = await p.wait_for(f"{r.base}/error")
        assert (
            err.json()["code"] == "invalid_payload"
            and "updates install milo, go-librespot" in err.json()["error"]
        )


async def test_a_checkout_is_never_updated_from_the_feed(run_node: NodeFactory, world: World) -> None:
    # This node runs from this checkout (the test venv has milo installed editable): a newer milo in
    # the feed is shown, never offered; an install asked anyway is refused with the reason's code.
    import asyncio  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    wheel = b"not a wheel: never installed"
    world.feed.files["/milo-99.0.0-py3-none-any.whl"] = wheel
    url = world.feed.url("/milo-99.0.0-py3-none-any.whl")
    entry = {"version": "99.0.0", "files": {"any": {"url": url, "sha256": hashlib.sha256(wheel).hexdigest()}}}
    world.feed.feed = {**world.feed.feed, "milo": entry}
    sections = world.sections()
    async with run_node(subsystems=(Info, Update), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/update", f"{r.base}/error")
        got = await p.wait_for(f"{r.base}/update", lambda g: g.json()["checked_at"] is not None, timeout=WAIT)
        milo = got.json()["programs"]["milo"]
        assert (milo["available"], milo["update"], milo["installable"]) == ("99.0.0", True, False)
        assert milo["reason"] == "editable_install"
        assert "running from a checkout" in milo["detail"] and "git pull" in milo["detail"]
        assert CHECKOUT in milo["detail"]
        mark = p.mark()
        await p.publish(f"{r.base}/update/set", "milo")
        err = await p.wait_for(f"{r.base}/error", after=mark)
        assert err.json()["code"] == "editable_install" and "git pull" in err.json()["error"]
        assert r.node.broker is not None
        assert json.loads(dict(r.node.broker.retained())[f"{r.base}/update"])["job"] is None
    # The step, started anyway (by hand, as root), refuses it too before pip runs.
    argv = [MILO, "update-apply", "milo", "--config", sections["update"]["config_file"]]
    proc = await asyncio.create_subprocess_exec(*argv)
    assert await proc.wait() == 1
    status = json.loads((world.tmp / "run" / "milo.json").read_text())
    assert status["result"] == "failed" and "editable install" in status["detail"]
    assert status["steps"][-2:] == ["backup", "finished"]
