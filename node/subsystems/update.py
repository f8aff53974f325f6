"""The `update` subsystem: newer versions of the node's programs, installed on command, rolled back."""

# Checking is the node's own job (apt-cache's candidate, the release feed; offline, a program's
# available version is unknown and the check says why, never more). Installing needs root: the node
# starts milo-update@<program>.service through systemd's D-Bus API (polkit lets it start exactly those
# units) and follows the step that unit writes to <status_dir>/<program>.json; the unit runs
# `milo update-apply`, which backs up, installs, checks the new version runs, and rolls back.
# `apply = "direct"` runs that step as a child instead (a node run as root by hand; the tests).

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.adapters import updates, versions
from node.adapters.systemd import JobFailedError, Systemd, SystemdError
from node.framework.errors import CommandError
from node.framework.subsystem import Subsystem, SubsystemConfig, local_only

POLL_S = 0.25  # how often the running step's status file is read
RESTART_WINDOW_S = 600  # a milo update this much before the node started is the one it restarted for


class UpdateConfig(SubsystemConfig):
    # What names a program to run, a path to write or a place to fetch from is local-only: the
    # network may ask for a check or an install, never say what runs.
    feed_url: str = local_only(
        default="", max_length=2000, description="release feed (JSON) of milo and go-librespot"
    )
    check_every_h: int = Field(default=24, ge=0, le=720, description="0: only on `update/set check`")
    first_check_s: int = Field(default=300, ge=0, le=86400, description="first check this long after start")
    apply: Literal["systemd", "direct"] = local_only(
        default="systemd", description="systemd: milo-update@<program>.service; direct: a child (as root)"
    )
    apt_cache: str = local_only(default="apt-cache", max_length=300)
    apt_get: str = local_only(default="apt-get", max_length=300)
    status_dir: str = local_only(
        default="/run/milo-update", max_length=300, description="the step's progress files"
    )
    backup_dir: str = local_only(default="/var/lib/milo-update/backup", max_length=300)
    paths: dict[str, str] = local_only(
        default_factory=dict, description="program -> its binary, for feed updates"
    )
    settle_s: float = Field(default=5.0, ge=0.0, le=300.0, description="the new version must run this long")
    systemd_bus: str = local_only(
        default="", max_length=300, description="D-Bus address; empty: the system bus"
    )
    milo: str = local_only(default="", max_length=300, description="direct: the milo that runs the step")
    config_file: str = local_only(
        default="/etc/milo/milo.toml", max_length=300, description="what the step reads"
    )
    node_unit: str = local_only(
        default="milo.service", max_length=300, description="the node's own unit, restarted after its update"
    )


# Why a program cannot be installed from here: a code, translated by the clients (web/i18n `error.*`).
NotInstallable = Literal["editable_install"]


class ProgramState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    installed: str | None = None
    available: str | None = Field(default=None, description="the newest known; null: unknown (offline...)")
    source: Literal["apt", "feed"] = "apt"
    update: bool = False
    installable: bool = True
    reason: NotInstallable | None = Field(
        default=None, description="why installable is false (editable_install: milo runs from a checkout)"
    )
    detail: str = Field(default="", description="that reason in words")


class JobState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str
    step: str = "starting"
    steps: list[str] = Field(default_factory=list, description="every step so far, in order")
    result: Literal["running", "done", "unchanged", "rolled_back", "failed"] = "running"
    from_version: str | None = None
    to_version: str | None = None
    detail: str = ""


class UpdateState(BaseModel):
    """Retained `<base>/update`: what could be updated, and the update that runs or ran last."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["idle", "checking", "updating"] = "idle"
    checked_at: float | None = None
    error: str = Field(default="", description="why the last check could not see everything")
    programs: dict[str, ProgramState] = Field(default_factory=dict)
    job: JobState | None = None
    restart_needed: bool = Field(
        default=False,
        description="milo was updated but this node, not run by systemd, still runs the old one",
    )


class Install(BaseModel):
    """`{"install": "go-librespot"}`: install the newer version of that program."""

    model_config = ConfigDict(extra="forbid")

    install: str = Field(max_length=100)


UpdateCommand = Literal["check"] | Install


class Update(Subsystem[UpdateState, UpdateConfig]):
    name = "update"
    description = (
        "newer versions of the node's programs (apt, release feed); install with backup and rollback"
    )
    State = UpdateState
    Config = UpdateConfig
    Command = TypeAdapter(UpdateCommand)

    async def setup(self) -> None:
        self._check_now = asyncio.Event()
        self._job: asyncio.Task[None] | None = None
        self.state = UpdateState()

    async def teardown(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job

    async def _installed(self) -> dict[str, ProgramState]:
        found = await versions.collect()
        programs: dict[str, ProgramState] = {}
        for name, program in updates.PROGRAMS.items():
            installed = self.ctx.node.version if name == "milo" else found.get(name)
            if name == "milo" and name in self.config.paths:
                installed = await asyncio.to_thread(versions.of_milo, self.config.paths[name])
            elif name in self.config.paths:
                installed = await asyncio.to_thread(versions.of_binary, self.config.paths[name], name)
            source: Literal["apt", "feed"] = "apt" if program.package else "feed"
            programs[name] = ProgramState(installed=installed, source=source, installable=program.installable)
        # A checkout is updated with git, never by a wheel over it: not offered (the step would refuse).
        checkout = await asyncio.to_thread(versions.milo_checkout, self.config.paths.get("milo"))
        if checkout is not None and "milo" in programs:
            programs["milo"].installable = False
            programs["milo"].reason = "editable_install"
            programs["milo"].detail = f"running from a checkout ({checkout}): update it with git pull"
        return programs

    async def check(self) -> None:
        await self.set_state(status="checking")
        programs = await self._installed()
        problems: list[str] = []
        packages = {n: p.package for n, p in updates.PROGRAMS.items() if p.package}
        try:
            policy = await asyncio.to_thread(
                updates.apt_policy, list(packages.values()), self.config.apt_cache
            )
        except updates.UpdateCheckError as exc:
            policy = {}
            problems.append(str(exc))
        for name, package in packages.items():
            found = policy.get(package)
            if found is not None:
                programs[name].installed = found.installed
                programs[name].available = found.candidate
        if self.config.feed_url:
            try:
                feed = await updates.read_feed(self.config.feed_url)
            except updates.UpdateCheckError as exc:
                feed = {}
                problems.append(str(exc))
            for name, entry in feed.items():
                if name in programs and programs[name].source == "feed":
                    programs[name].available = entry.version
        else:
            problems.append("no feed_url: milo and go-librespot are not checked")
        for state in programs.values():
            state.update = await asyncio.to_thread(updates.newer, state.available, state.installed)
        await self.set_state(
            status="idle" if self._job is None else "updating",
            checked_at=round(time.time(), 3),
            error="; ".join(problems),
            programs=programs,
        )

    async def _last_self_update(self) -> JobState | None:
        """The update of milo that restarted this node into its new version, from its status file."""
        try:
            raw = json.loads(await asyncio.to_thread((Path(self.config.status_dir) / "milo.json").read_text))
            at = float(raw.get("at", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        if raw.get("result") != "done" or at < self.ctx.node.started - RESTART_WINDOW_S:
            return None
        try:
            return JobState(
                program="milo",
                step="finished",
                steps=[str(x) for x in raw.get("steps", [])],
                result="done",
                from_version=raw.get("from"),
                to_version=raw.get("to"),
                detail=f"{raw.get('detail', '')}; running it since the restart",
            )
        except ValueError:
            return None

    async def run(self) -> None:
        await self.set_state(programs=await self._installed(), job=await self._last_self_update())
        delay: float | None = self.config.first_check_s
        while True:
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._check_now.wait()
            elif delay is None:
                await self._check_now.wait()  # check_every_h = 0: only when asked
            self._check_now.clear()
            if self._job is None:
                await self.check()
            delay = self.config.check_every_h * 3600 or None

    def parse_text(self, text: str) -> Any:
        return text if text == "check" else {"install": text}

    async def on_command(self, command: Any) -> None:
        if command == "check":
            self._check_now.set()
            await self.acknowledge()
            return
        assert isinstance(command, Install)
        program = updates.PROGRAMS.get(command.install)
        if program is None or not program.installable:
            known = ", ".join(n for n, p in updates.PROGRAMS.items() if p.installable)
            raise CommandError("invalid_payload", f"{command.install!r}: updates install {known}")
        state = self.state.programs.get(command.install)
        if state is not None and state.reason == "editable_install":
            raise CommandError("editable_install", state.detail)
        if self._job is not None:
            raise CommandError(
                "busy", f"an update of {self.state.job.program if self.state.job else '?'} runs"
            )
        job = JobState(program=command.install, from_version=state.installed if state else None)
        await self.set_state(status="updating", job=job)
        self._job = asyncio.create_task(self._install(command.install))

    async def _install(self, name: str) -> None:
        status_file = Path(self.config.status_dir) / f"{name}.json"
        started = time.time()
        try:
            runner = asyncio.create_task(self._start_step(name))
            while not runner.done():
                await self._follow(status_file, started)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await asyncio.shield(runner)
            problem = runner.result()
            await self._follow(status_file, started)
            if problem and self.state.job and self.state.job.result == "running":
                await self._finish(result="failed", detail=problem)
            if name == "milo" and self.state.job and self.state.job.result == "done":
                await self._restart_self()
        finally:
            self._job = None
            versions.forget()
            await self.check()

    async def _start_step(self, name: str) -> str:
        """Run the privileged step to its end; "" or why it could not be run at all."""
        cfg = self.config
        if cfg.apply == "direct":
            milo = cfg.milo or str(Path(sys.executable).parent / "milo")
            argv = [milo, "update-apply", name, "--config", cfg.config_file, "--status-dir", cfg.status_dir]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
                )
            except OSError as exc:
                return f"{milo}: {exc}"
            _, err = await proc.communicate()
            return "" if proc.returncode in (0, 1) else err.decode(errors="replace").strip()[-300:]
        try:
            async with Systemd(cfg.systemd_bus) as sd:
                await sd.start(f"milo-update@{name}.service", timeout=3600)
        except JobFailedError:
            return ""  # the step ended badly: its status file says how (rolled back, failed)
        except SystemdError as exc:
            return str(exc)
        return ""

    async def _follow(self, path: Path, started: float) -> None:
        try:
            raw = json.loads(await asyncio.to_thread(path.read_text))
        except (OSError, ValueError):
            return
        if not isinstance(raw, dict) or float(raw.get("at", 0)) < started - 1:
            return  # the file of an earlier run
        current = self.state.job
        if current is None:
            return
        job = current.model_copy(
            update={
                "step": str(raw.get("step", current.step)),
                "steps": [str(x) for x in raw.get("steps", current.steps)],
                "result": raw.get("result", current.result),
                "from_version": raw.get("from", current.from_version),
                "to_version": raw.get("to", current.to_version),
                "detail": str(raw.get("detail", "")),
            }
        )
        if job != current:
            await self.set_state(job=JobState.model_validate(job.model_dump()))

    async def _restart_self(self) -> None:
        """Run the milo just installed: systemd restarts this node, or the state says to restart it."""
        detail = self.state.job.detail if self.state.job else ""
        unit = self.config.node_unit
        if not os.environ.get("INVOCATION_ID"):  # systemd sets it for every process a unit starts
            await self.set_state(restart_needed=True)
            await self._finish(detail=f"{detail}; not run by systemd: restart milo to run it")
            return
        await self._finish(detail=f"{detail}; restarting {unit}")
        try:
            async with Systemd(self.config.systemd_bus) as sd:
                # No wait: the job's end is this process's end.
                await sd.restart(unit, wait=False)
        except SystemdError as exc:
            await self.set_state(restart_needed=True)
            await self._finish(detail=f"{detail}; restart {unit} failed: {exc}")

    async def _finish(self, **changes: Any) -> None:
        if self.state.job is not None:
            await self.set_state(job=self.state.job.model_copy(update={"step": "finished", **changes}))

    async def on_config(self, old: UpdateConfig, new: UpdateConfig) -> bool:
        return False
