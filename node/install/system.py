"""What install, uninstall and doctor ask of the machine: packages, users, units, modules, sound cards."""

# Two implementations of one interface: `RealSystem` runs apt-get, useradd, systemctl and modprobe (as
# root) and reads the machine; `SimulatedSystem` records the same commands and keeps their effect in a
# JSON file at the top of a --root tree, so that a second install in that tree sees the packages,
# user and units of the first, uninstall undoes them, and doctor has a machine to look at.

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.framework.errors import MiloError
from node.framework.files import write_atomic

SIMULATED_STATE = ".milo-simulated-system.json"
# Groups a Raspberry Pi OS bookworm image has from the start (a --root tree with no etc/group).
PI_OS_GROUPS = ("audio", "video", "render", "input", "gpio", "i2c", "spi", "plugdev", "netdev", "bluetooth")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
COMMAND_TIMEOUT = 1800  # apt-get on a Pi's SD card can take many minutes


class InstallError(MiloError):
    """An install step could not be done (a command failed, an option does not fit this machine)."""


@dataclass
class UserInfo:
    name: str
    uid: int
    groups: list[str]


@dataclass
class System:
    """The machine under `root`; every change it makes is also appended to `commands`."""

    root: Path = Path("/")
    simulated: bool = False
    commands: list[list[str]] = field(default_factory=list)

    def path(self, system_path: str | Path) -> Path:
        return self.root / str(system_path).lstrip("/")

    def run(self, argv: Sequence[str]) -> None:
        self.commands.append(list(argv))

    def write(self, path: Path, data: bytes) -> None:
        """Replace a file atomically; on the real system durably too (fsync: a power cut on a Pi)."""
        if self.simulated:
            # A --root tree is a test's or an SD card being prepared: atomic is enough, fsync is slow.
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            write_atomic(path, data)

    # Queries and changes, overridden below.
    def package_installed(self, name: str) -> bool:
        raise NotImplementedError

    def install_packages(self, names: Sequence[str]) -> None:
        self.run(["apt-get", "install", "-y", "--no-install-recommends", *names])

    def mark_auto(self, names: Sequence[str]) -> None:
        self.run(["apt-mark", "auto", *names])

    def forget(self, system_path: str) -> None:
        """`system_path` was removed (a simulated system forgets its owner)."""

    def user(self, name: str) -> UserInfo | None:
        raise NotImplementedError

    def group_exists(self, name: str) -> bool:
        raise NotImplementedError

    def create_user(self, name: str, home: str, groups: Sequence[str]) -> None:
        argv = ["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home"]
        argv += ["--shell", "/usr/sbin/nologin"]
        self.run([*argv, *(["--groups", ",".join(groups)] if groups else []), name])

    def add_groups(self, name: str, groups: Sequence[str]) -> None:
        self.run(["usermod", "--append", "--groups", ",".join(groups), name])

    def delete_user(self, name: str) -> None:
        self.run(["userdel", name])

    def chown(self, system_path: str, user: str) -> None:
        """`system_path` (a path on the installed system, under `root`) becomes `user`'s."""
        self.commands.append(["chown", f"{user}:{user}", system_path])

    def owner(self, system_path: str) -> str:
        raise NotImplementedError

    def unit_enabled(self, unit: str) -> bool:
        raise NotImplementedError

    def unit_active(self, unit: str) -> bool:
        raise NotImplementedError

    def daemon_reload(self) -> None:
        self.run(["systemctl", "daemon-reload"])

    def enable_now(self, units: Sequence[str]) -> None:
        self.run(["systemctl", "enable", "--now", *units])

    def disable_now(self, units: Sequence[str]) -> None:
        self.run(["systemctl", "disable", "--now", *units])

    def restart(self, units: Sequence[str]) -> None:
        self.run(["systemctl", "try-restart", *units])

    def load_module(self, name: str) -> None:
        self.run(["modprobe", name])

    def module_loaded(self, name: str) -> bool | None:
        raise NotImplementedError

    def cards(self) -> dict[str, list[str]] | None:
        """ALSA card id -> its simple mixer controls; None when this cannot be known (a --root tree)."""
        raise NotImplementedError

    def clock_synced(self) -> bool | None:
        raise NotImplementedError

    def save(self) -> None:
        """Keep what a simulated system changed (nothing to do on a real one)."""


class RealSystem(System):
    """This machine: commands run for real (install needs root), queries read it."""

    def run(self, argv: Sequence[str]) -> None:
        super().run(argv)
        env = {**os.environ, **APT_ENV} if argv[0] == "apt-get" else None
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{shlex.join(argv)}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InstallError(f"{shlex.join(argv)} failed ({done.returncode}): {' / '.join(tail)}")

    def install_packages(self, names: Sequence[str]) -> None:
        self.run(["apt-get", "update", "-q"])
        super().install_packages(names)

    def package_installed(self, name: str) -> bool:
        return _query(["dpkg-query", "-W", "-f=${Status}", name]).endswith("install ok installed")

    def user(self, name: str) -> UserInfo | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
        return UserInfo(name, entry.pw_uid, groups)

    def group_exists(self, name: str) -> bool:
        try:
            grp.getgrnam(name)
        except KeyError:
            return False
        return True

    def chown(self, system_path: str, user: str) -> None:
        super().chown(system_path, user)
        entry = pwd.getpwnam(user)
        os.chown(self.path(system_path), entry.pw_uid, entry.pw_gid)

    def owner(self, system_path: str) -> str:
        uid = self.path(system_path).stat().st_uid
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def unit_enabled(self, unit: str) -> bool:
        return _query(["systemctl", "is-enabled", unit]) in ("enabled", "enabled-runtime", "static")

    def unit_active(self, unit: str) -> bool:
        return _query(["systemctl", "is-active", unit]) == "active"

    def module_loaded(self, name: str) -> bool | None:
        try:
            text = Path("/proc/modules").read_text()
        except OSError:
            return None
        wanted = name.replace("-", "_")
        return any(line.split(" ", 1)[0] == wanted for line in text.splitlines())

    def cards(self) -> dict[str, list[str]] | None:
        import alsaaudio  # noqa: PLC0415 - only doctor asks, and only on a live system

        found: dict[str, list[str]] = {}
        with contextlib.suppress(alsaaudio.ALSAAudioError):
            for index in alsaaudio.card_indexes():
                card = alsaaudio.card_name(index)[0]
                try:
                    found[card] = list(alsaaudio.mixers(cardindex=index))
                except alsaaudio.ALSAAudioError:
                    found[card] = []
        return found

    def clock_synced(self) -> bool | None:
        return kernel_clock_synced()


class SimulatedSystem(System):
    """A --root tree's machine: commands recorded, their effect kept in <root>/.milo-simulated-system.json."""

    def __init__(self, root: Path) -> None:
        super().__init__(root=root, simulated=True)
        self.state_path = root / SIMULATED_STATE
        try:
            self.state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            self.state = {}
        except (OSError, ValueError) as exc:
            raise InstallError(f"{self.state_path}: {exc}") from exc
        for key in ("packages", "auto", "enabled", "active", "modules"):
            self.state.setdefault(key, [])
        self.state.setdefault("users", {})
        self.state.setdefault("owners", {})
        self.state.setdefault("groups", list(PI_OS_GROUPS))

    def _add(self, key: str, items: Sequence[str]) -> None:
        self.state[key] = sorted({*self.state[key], *items})

    def _drop(self, key: str, items: Sequence[str]) -> None:
        self.state[key] = sorted(set(self.state[key]) - set(items))

    def package_installed(self, name: str) -> bool:
        return name in self.state["packages"]

    def install_packages(self, names: Sequence[str]) -> None:
        super().install_packages(names)
        self._add("packages", names)
        self._drop("auto", names)

    def mark_auto(self, names: Sequence[str]) -> None:
        super().mark_auto(names)
        self._add("auto", names)

    def forget(self, system_path: str) -> None:
        self.state["owners"].pop(system_path, None)

    def user(self, name: str) -> UserInfo | None:
        entry = self.state["users"].get(name)
        return None if entry is None else UserInfo(name, int(entry["uid"]), list(entry["groups"]))

    def group_exists(self, name: str) -> bool:
        return name in self.state["groups"]

    def create_user(self, name: str, home: str, groups: Sequence[str]) -> None:
        super().create_user(name, home, groups)
        uid = 900 + len(self.state["users"])
        self.state["users"][name] = {"uid": uid, "groups": sorted(groups)}

    def add_groups(self, name: str, groups: Sequence[str]) -> None:
        super().add_groups(name, groups)
        entry = self.state["users"][name]
        entry["groups"] = sorted({*entry["groups"], *groups})

    def delete_user(self, name: str) -> None:
        super().delete_user(name)
        self.state["users"].pop(name, None)

    def chown(self, system_path: str, user: str) -> None:
        super().chown(system_path, user)
        self.state["owners"][system_path] = user

    def owner(self, system_path: str) -> str:
        return str(self.state["owners"].get(system_path, "root"))

    def unit_enabled(self, unit: str) -> bool:
        return unit in self.state["enabled"]

    def unit_active(self, unit: str) -> bool:
        return unit in self.state["active"]

    def enable_now(self, units: Sequence[str]) -> None:
        super().enable_now(units)
        self._add("enabled", units)
        self._add("active", units)

    def disable_now(self, units: Sequence[str]) -> None:
        super().disable_now(units)
        self._drop("enabled", units)
        self._drop("active", units)

    def load_module(self, name: str) -> None:
        super().load_module(name)
        self._add("modules", [name])

    def module_loaded(self, name: str) -> bool | None:
        return name in self.state["modules"]

    def cards(self) -> dict[str, list[str]] | None:
        cards = self.state.get("cards")
        return None if cards is None else {str(k): list(v) for k, v in cards.items()}

    def clock_synced(self) -> bool | None:
        value = self.state.get("clock_synced")
        return None if value is None else bool(value)

    def save(self) -> None:
        self.write(self.state_path, (json.dumps(self.state, indent=2, sort_keys=True) + "\n").encode())
        self.state_path.chmod(0o644)


def system_for(root: Path | None) -> System:
    return RealSystem() if root is None else SimulatedSystem(root)


def _query(argv: Sequence[str]) -> str:
    """A read-only command's output, "" when it fails (a missing package, a unit that is not there)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> on 64-bit Linux: the fields up to `status`, then room for the rest.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


STA_UNSYNC = 0x0040
TIME_ERROR = 5
MAX_ERROR_US = 16_000_000  # what timedatectl also calls unsynchronised


def kernel_clock_synced() -> bool | None:
    """The kernel's NTP status, as systemd-timesyncd or chrony leave it (what timedatectl shows)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    timex = _Timex()
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    return state != TIME_ERROR and not (timex.status & STA_UNSYNC) and timex.maxerror < MAX_ERROR_US
