"""`milo doctor`: checks an installation, says what is wrong and the command that fixes it; exit 1 if any."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from node.adapters import versions
from node.config import NodeConfig, load
from node.framework.bus import BrokerURL
from node.framework.errors import ConfigError
from node.install import daemons
from node.install.manifest import Manifest
from node.install.plan import MODULES_LOAD, POLKIT_RULE, SYSTEM_ASOUND, UNIT_DIR
from node.install.system import InstallError, System, system_for

Level = Literal["ok", "warn", "fail", "skip"]
BROKER_TIMEOUT = 3.0
# A program per unit, for its version in the report.
UNIT_PROGRAMS = {
    "snapserver.service": "snapserver",
    "snapclient.service": "snapclient",
    "go-librespot.service": "go-librespot",
    "roc-recv.service": "roc-recv",
    "shairport-sync.service": "shairport-sync",
    "bluealsa.service": "bluealsa",
    "milo-kiosk.service": "chromium",
}


@dataclass
class Check:
    name: str
    level: Level
    message: str
    fix: str = ""

    def lines(self) -> list[str]:
        tag = {"ok": "  ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[self.level]
        out = [f"{tag}  {self.name}: {self.message}"]
        if self.fix:
            out.append(f"      fix: {self.fix}")
        return out


@dataclass
class Doctor:
    system: System
    config_path: Path  # the system path, e.g. /etc/milo/milo.toml
    subsystems: Sequence[str]
    broker: str | None = None  # overrides what the config says (a test's node)
    checks: list[Check] = field(default_factory=list)
    config: NodeConfig | None = None

    def add(self, name: str, level: Level, message: str, fix: str = "") -> None:
        self.checks.append(Check(name, level, message, fix))

    @property
    def user(self) -> str:
        manifest = self._manifest()
        return str(manifest.options.get("user", "milo")) if manifest else "milo"

    def _manifest(self) -> Manifest | None:
        if self.config is None:
            return None
        data = str(self.config.data_dir)
        path = self.system.path(f"{data}/install/manifest.json")
        try:
            return Manifest.load(path, data, self.system)
        except InstallError:
            return None

    # ---- the checks -------------------------------------------------------------------------------
    def check_config(self) -> None:
        path = self.system.path(self.config_path)
        if not path.is_file():
            self.add(
                "config", "fail", f"{self.config_path} is missing: not installed", "milo install --dac ..."
            )
            return
        try:
            # The data dir as the installed node sees it, not this shell's default.
            self.config = load(subsystem_names=self.subsystems, config_file=path, env={}, cli={})
        except ConfigError as exc:
            self.add("config", "fail", str(exc).replace("\n", " "), f"edit {self.config_path}")
            return
        self.add("config", "ok", f"{self.config_path}: node {self.config.node_id}")

    def check_user_and_data(self) -> None:
        assert self.config is not None
        info = self.system.user(self.user)
        if info is None:
            self.add("user", "fail", f"no user {self.user}", "milo install (creates it)")
        elif info.uid == 0:
            self.add("user", "fail", f"{self.user} is root", "milo uninstall && milo install --user milo")
        else:
            self.add("user", "ok", f"{self.user} (groups {', '.join(info.groups) or 'none'})")
        data = str(self.config.data_dir)
        path = self.system.path(data)
        if not path.is_dir():
            self.add("data dir", "fail", f"{data} is missing", "milo install")
            return
        owner = self.system.owner(data)
        writable = bool(path.stat().st_mode & 0o200)
        if owner != self.user or not writable:
            self.add(
                "data dir",
                "fail",
                f"{data} is owned by {owner}, not writable by {self.user}",
                f"chown -R {self.user}:{self.user} {data} && chmod u+rwx {data}",
            )
        else:
            self.add("data dir", "ok", f"{data} is {self.user}'s and writable")

    def check_alsa(self) -> None:
        assert self.config is not None
        if self.config.broker and self.config.only:
            return  # a satellite: snapclient plays on the DAC, the node renders no asound.conf
        wanted = str(self.config.alsa_config or self.config.data_dir / "asound.conf")
        link = self.system.path(SYSTEM_ASOUND)
        if wanted != SYSTEM_ASOUND:
            if not link.is_symlink() or str(link.readlink()) != wanted:
                self.add(
                    "asound.conf",
                    "fail",
                    f"{SYSTEM_ASOUND} does not link to {wanted}: the daemons miss the PCMs",
                    f"ln -sfn {wanted} {SYSTEM_ASOUND}",
                )
            elif not self.system.path(wanted).is_file():
                self.add(
                    "asound.conf",
                    "warn",
                    f"{wanted} not written yet",
                    "systemctl start milo (routing writes it)",
                )
            else:
                self.add("asound.conf", "ok", f"{SYSTEM_ASOUND} -> {wanted}")
        loaded = self.system.module_loaded("snd-aloop")
        at_boot = self.system.path(MODULES_LOAD).is_file()
        if loaded is None:
            self.add("loopback", "skip", "cannot read the loaded modules")
        elif not loaded:
            fix = "modprobe snd-aloop" + ("" if at_boot else " (and milo install, to load it at boot)")
            self.add("loopback", "fail", "snd-aloop is not loaded: multiroom has no streams", fix)
        else:
            self.add("loopback", "ok", "snd-aloop loaded" + ("" if at_boot else ", but not at boot"))
        self._check_card()

    def _check_card(self) -> None:
        assert self.config is not None
        card = str(self.config.subsystems.get("routing", {}).get("card", ""))
        control = str(self.config.subsystems.get("volume", {}).get("control", ""))
        cards = self.system.cards()
        if cards is None:
            self.add("sound card", "skip", "the card list cannot be read here")
            return
        real = {k: v for k, v in cards.items() if k != "Loopback"}
        if not card:
            level: Level = "ok" if real else "fail"
            self.add(
                "sound card",
                level,
                f"any card; found {', '.join(real) or 'none'}",
                "" if real else "aplay -l",
            )
            return
        if card not in cards:
            self.add(
                "sound card",
                "fail",
                f"{card} not found (cards: {', '.join(cards) or 'none'})",
                "check the dtoverlay line in /boot/firmware/config.txt (milo install --dac ...), then reboot",
            )
            return
        if control and control not in cards[card]:
            self.add(
                "mixer",
                "fail",
                f"{card} has no control {control!r} ({', '.join(cards[card]) or 'none'})",
                f"amixer -c {card} scontrols, then set [volume] control in {self.config_path}",
            )
            return
        self.add("sound card", "ok", f"{card}" + (f", mixer {control}" if control else ""))

    def check_units(self) -> None:
        assert self.config is not None
        manifest = self._manifest()
        expected = list((manifest.get("units") or {}).get("enabled", [])) if manifest else [daemons.NODE_UNIT]
        folder = self.system.path(UNIT_DIR)
        present = {p.name for p in folder.glob("*.service")} if folder.is_dir() else set()
        for unit in expected:
            if unit not in present:
                self.add(f"unit {unit}", "fail", f"{UNIT_DIR}/{unit} is missing", "milo install")
                continue
            program = UNIT_PROGRAMS.get(unit)
            version = versions.PROGRAMS[program]() if program and not self.system.simulated else None
            suffix = f" ({program} {version})" if version else ""
            if not self.system.unit_enabled(unit):
                self.add(f"unit {unit}", "fail", "not enabled", f"systemctl enable --now {unit}")
            elif not self.system.unit_active(unit):
                self.add(
                    f"unit {unit}",
                    "fail",
                    "enabled but not running" + suffix,
                    f"journalctl -u {unit} -n 50, then systemctl restart {unit}",
                )
            else:
                self.add(f"unit {unit}", "ok", "enabled and running" + suffix)
        controlled = [u for u in expected if daemons.rule(u).controlled]
        if controlled and not self.system.path(POLKIT_RULE).is_file():
            self.add(
                "polkit",
                "fail",
                f"{POLKIT_RULE} is missing: the node cannot restart its daemons",
                "milo install",
            )

    def check_clock(self) -> None:
        synced = self.system.clock_synced()
        if synced is None:
            self.add("clock", "skip", "the clock's sync state cannot be read here")
        elif not synced:
            self.add(
                "clock",
                "warn",
                "not synchronised: multiroom speakers drift apart",
                "timedatectl set-ntp true (and check the network: timedatectl timesync-status)",
            )
        else:
            self.add("clock", "ok", "synchronised (NTP)")

    def broker_url(self) -> BrokerURL | None:
        assert self.config is not None
        if self.broker:
            return BrokerURL.parse(self.broker)
        if self.config.broker:
            return BrokerURL.parse(self.config.broker)
        if self.system.simulated:
            return None  # a rendered tree's node does not run here
        port = self.config.mqtt_port or 1883
        return BrokerURL.parse(f"mqtt://127.0.0.1:{port}")

    def _login(self, url: BrokerURL) -> BrokerURL | None:
        """`url` with the password of `broker_password_file` (read in the tree), None when it cannot be."""
        assert self.config is not None
        path = self.config.broker_password_file
        if path is None or url.password is not None or (self.broker and not url.username):
            return url  # no file; a --broker URL with its own password, or an anonymous one asked for
        fix = (
            f"milo install --satellite --main {url.host}:{url.port} --broker-user {url.username or 'NAME'} "
            "--broker-password-file FILE (the password of that `node` user on the main node)"
        )
        try:
            found = url.with_password_file(self.system.path(str(path)))
        except ConfigError as exc:
            message = str(exc).replace(str(self.system.path(str(path))), str(path))
            self.add("broker login", "fail", f"{message}: the node cannot log in to {url.safe()}", fix)
            return None
        owner = self.system.owner(str(path))
        mode = self.system.path(str(path)).stat().st_mode & 0o777
        if owner != self.user:
            self.add(
                "broker login",
                "fail",
                f"{path} is {owner}'s (mode {mode:04o}): the node ({self.user}) may not be able to read it",
                f"chown {self.user}:{self.user} {path} && chmod 600 {path}",
            )
        elif mode & 0o077:
            self.add(
                "broker login",
                "warn",
                f"{path} is mode {mode:04o}: others may read the password",
                f"chmod 600 {path}",
            )
        return found

    def _refused(self, url: BrokerURL, rc: int) -> None:
        """A CONNACK that refused the login: what is wrong, and where to fix it (here or on the main node)."""
        assert self.config is not None
        who = f"user {url.username}" if url.username else "an anonymous client"
        here = (
            f"milo install --satellite --main {url.host}:{url.port} --broker-user NAME "
            "--broker-password-file FILE"
            if self.config.broker
            else f"milo doctor --broker mqtt://USER:PASSWORD@{url.host}:{url.port}"
        )
        if rc in (4, 134):  # MQTT 3.1.1's code, and paho's MQTT 5 name for it
            message = f"{url.safe()} refused {who}: wrong user name or password (CONNACK 4)"
            fix = (
                f"on {url.host}: `milo user list` (is {url.username} there?), `milo user add {url.username} "
                f"--role node` sets its password; here: the same password in "
                f"{self.config.broker_password_file or 'broker_password_file'} ({here})"
            )
        elif rc in (5, 135) and not url.username:
            message = (
                f"{url.safe()} refused {who} (CONNACK 5, not authorized): that node has users, so a login "
                "is needed from the LAN"
            )
            fix = f"on {url.host}: milo user add NAME --role node; here: {here}"
        elif rc in (5, 135):
            message = f"{url.safe()} refused {who} (CONNACK 5, not authorized)"
            fix = f"on {url.host}: milo user add {url.username} --role node (a satellite logs in as a node)"
        else:
            message, fix = (
                f"{url.safe()} refused {who} (CONNACK {rc})",
                f"journalctl -u milo -n 50 on {url.host}",
            )
        self.add("broker", "fail", message, fix)

    async def check_broker(self, timeout: float = BROKER_TIMEOUT) -> None:
        assert self.config is not None
        url = self.broker_url()
        if url is None:
            self.add("broker", "skip", "a rendered tree: no node runs (give --broker to check one)")
            return
        login = self._login(url)
        if login is None:
            return
        url = login
        import aiomqtt  # noqa: PLC0415 - only this check needs a client

        base = f"milo/{self.config.node_id}"
        got: dict[str, bytes] = {}
        connected = False
        down = f"on {url.host}: systemctl status milo; journalctl -u milo -n 50"
        try:
            async with asyncio.timeout(timeout):
                async with aiomqtt.Client(
                    url.host, url.port, username=url.username, password=url.password, identifier=None
                ) as client:
                    connected = True  # the CONNACK said yes
                    await client.subscribe(f"{base}/status")
                    await client.subscribe(f"{base}/info")
                    async for message in client.messages:
                        payload = message.payload
                        got[str(message.topic)] = (
                            payload if isinstance(payload, bytes) else str(payload).encode()
                        )
                        if {f"{base}/status", f"{base}/info"} <= set(got):
                            break
        except TimeoutError:
            if not connected:
                self.add("broker", "fail", f"{url.safe()}: no CONNACK within {timeout:g} s", down)
                return
        except aiomqtt.MqttCodeError as exc:
            if connected:
                self.add("broker", "fail", f"{url.safe()}: {exc}", down)
            else:
                rc = exc.rc
                self._refused(url, rc if isinstance(rc, int) else -1 if rc is None else int(rc.value))
            return
        except aiomqtt.MqttError as exc:
            self.add("broker", "fail", f"{url.safe()}: {exc}", down)
            return
        who = f"user {url.username}" if url.username else "anonymous"
        self.add("broker", "ok", f"{url.safe()} reachable, {who} accepted")
        status = got.get(f"{base}/status", b"").decode()
        if status != "online":
            fix = "systemctl restart milo; journalctl -u milo -n 50"
            if url.username:
                fix += (
                    f" (it publishes as {url.username}: a `node` user on {url.host}, `milo user list` there)"
                )
            self.add("node", "fail", f"{base}/status is {status or 'not there'}", fix)
            return
        self.add("node", "ok", f"{base} online")
        self._check_info(got.get(f"{base}/info", b""))

    def _check_info(self, payload: bytes) -> None:
        try:
            info: dict[str, Any] = json.loads(payload)
        except ValueError:
            self.add("info", "warn", "no readable info state")
            return
        self.add("version", "ok", f"milo {info.get('version', '?')}")
        for name, entry in sorted(info.get("subsystems", {}).items()):
            status, detail = entry.get("status"), entry.get("detail", "")
            if status in ("crashed", "config_error"):
                self.add(
                    f"subsystem {name}", "fail", f"{status}: {detail}", f"journalctl -u milo | grep {name}"
                )
            elif status == "unavailable":
                self.add(f"subsystem {name}", "warn", f"unavailable: {detail}")


async def diagnose(doctor: Doctor) -> list[Check]:
    doctor.check_config()
    if doctor.config is not None:
        doctor.check_user_and_data()
        doctor.check_alsa()
        doctor.check_units()
        doctor.check_clock()
        await doctor.check_broker()
    return doctor.checks


def report(checks: Sequence[Check], out: TextIO | None = None) -> int:
    """Print every check; 1 when something failed, else 0 (warnings do not fail a script)."""
    out = out or sys.stdout
    for check in checks:
        for line in check.lines():
            print(line, file=out)
    failed = [c for c in checks if c.level == "fail"]
    warned = [c for c in checks if c.level == "warn"]
    print(
        f"{len(failed)} failed, {len(warned)} warnings, {len(checks) - len(failed) - len(warned)} fine",
        file=out,
    )
    return 1 if failed else 0


def run(
    *,
    root: Path | None,
    config: Path,
    subsystems: Sequence[str],
    broker: str | None = None,
    out: TextIO | None = None,
) -> int:
    doctor = Doctor(system_for(root), config, subsystems, broker)
    with contextlib.suppress(KeyboardInterrupt):
        return report(asyncio.run(diagnose(doctor)), out or sys.stdout)
    return 130
