"""From `milo install` options to the ordered steps: data dir, packages, user, files, units."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import jinja2

from node.adapters.units import base_context, render_unit
from node.framework.users import MAX_PASSWORD, NAME_RE
from node.install import daemons
from node.install.actions import (
    Action,
    ConfigBlock,
    Directory,
    EnableUnits,
    LoadModule,
    Owner,
    Packages,
    Symlink,
    User,
    WriteFile,
)
from node.install.daemons import Role
from node.install.hardware import DACS, SCREENS, Dac, Screen
from node.install.manifest import INSTALL_DIR
from node.install.system import InstallError, System
from node.resources import data_dir as package_data

UNIT_DIR = "/etc/systemd/system"
POLKIT_RULE = "/etc/polkit-1/rules.d/50-milo.rules"
BACKLIGHT_RULE = "/etc/udev/rules.d/60-milo-backlight.rules"
MODULES_LOAD = "/etc/modules-load.d/milo.conf"
MODPROBE = "/etc/modprobe.d/milo.conf"
SYSTEM_ASOUND = "/etc/asound.conf"
# The verbs systemd names in the polkit check of a unit job (org.freedesktop.systemd1.manage-units).
VERBS = ("start", "stop", "restart", "try-restart", "reload", "reload-or-restart", "reset-failed")
# What a satellite runs of the node, against the main node's broker (whatever of these this build has).
SATELLITE_SUBSYSTEMS = ("volume", "screen", "knob")
BASE_PACKAGES: dict[Role, tuple[str, ...]] = {
    # alsaequal + caps: the equalizer; libmpv2: the radio; avahi: the sources' zeroconf; polkitd: the rule.
    "main": ("alsa-utils", "libasound2-plugin-equal", "caps", "libmpv2", "avahi-daemon", "dbus", "polkitd"),
    "satellite": ("alsa-utils", "dbus", "polkitd"),
}
KIOSK_DEFAULTS = {
    "node_unit": "milo.service",
    "tty": "tty1",
    "cage": "/usr/bin/cage",
    "chromium": "/usr/bin/chromium",
}
HEADER = "Written by `milo install`; `milo uninstall` removes it unless it was changed since."


@dataclass(frozen=True)
class Options:
    node_id: str
    milo: str  # the executable the node's unit runs
    dac: str = "auto"
    card: str | None = None  # override the DAC table's card id
    mixer: str | None = None  # and its mixer control
    screen: str = "none"
    satellite: bool = False
    main: str | None = None  # a satellite's main node: host or host:mqtt_port
    user: str = "milo"
    data_dir: str = "/var/lib/milo"
    config: str = "/etc/milo/milo.toml"
    boot_config: str = "/boot/firmware/config.txt"
    http_port: int = 8080
    # A satellite's login on the main node's broker, once the main node has users (a `node` user
    # there). The password goes to `broker_password_file` only: never into as_dict (plan.json,
    # the manifest), milo.toml or a unit's command line.
    broker_user: str | None = None
    broker_password: str | None = field(default=None, repr=False)

    def check(self) -> None:
        if self.dac not in DACS:
            raise InstallError(f"--dac {self.dac!r}: known are {', '.join(DACS)}")
        if self.screen not in SCREENS:
            raise InstallError(f"--screen {self.screen!r}: known are {', '.join(SCREENS)}")
        if self.satellite and not self.main:
            raise InstallError("--satellite needs --main HOST (the main node: its broker and snapserver)")
        if self.main and not self.satellite:
            raise InstallError("--main is for a satellite: add --satellite")
        self._check_broker()
        if self.user == "root":
            raise InstallError("--user root: the node and its daemons never run as root")
        for name, path in (("--data-dir", self.data_dir), ("--config", self.config), ("--milo", self.milo)):
            if not PurePosixPath(path).is_absolute():
                raise InstallError(f"{name} {path!r} must be an absolute path")
        for hidden in ("/home/", "/root/", "/run/user/"):
            if self.milo.startswith(hidden):
                raise InstallError(
                    f"{self.milo} is under {hidden}, which the node's unit cannot see (ProtectHome): install "
                    "milo elsewhere, e.g. python3 -m venv /opt/milo && /opt/milo/bin/pip install milo"
                )

    def _check_broker(self) -> None:
        password = self.broker_password
        if self.broker_user is None:
            if password is not None:
                raise InstallError("a broker password without --broker-user: give the user it is for")
            return
        if not self.satellite:
            raise InstallError(
                "--broker-user is a satellite's login on the main node's broker: add --satellite"
            )
        if not NAME_RE.fullmatch(self.broker_user):
            raise InstallError(f"--broker-user {self.broker_user[:80]!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
        if not password:
            raise InstallError("--broker-user needs its password (--broker-password-file FILE)")
        if "\n" in password or "\r" in password or len(password) > MAX_PASSWORD:
            raise InstallError(f"the broker password must be one line of at most {MAX_PASSWORD} characters")

    @property
    def role(self) -> Role:
        return "satellite" if self.satellite else "main"

    @property
    def roles(self) -> frozenset[Role]:
        extra: list[Role] = ["screen"] if self.screen != "none" else []
        return frozenset({self.role, *extra})

    @property
    def the_dac(self) -> Dac:
        base = DACS[self.dac]
        return Dac(
            base.key,
            base.label,
            base.card if self.card is None else self.card,
            base.mixer if self.mixer is None else self.mixer,
            base.overlay,
            base.card_format,
        )

    @property
    def the_screen(self) -> Screen:
        return SCREENS[self.screen]

    @property
    def main_host(self) -> str:
        return (self.main or "").rsplit(":", 1)[0] if (self.main or "").count(":") == 1 else self.main or ""

    @property
    def main_broker(self) -> str:
        """The main node's broker, with the satellite's user (its password is in its own file)."""
        host = self.main or ""
        user = f"{quote(self.broker_user, safe='')}@" if self.broker_user else ""
        return f"mqtt://{user}{host}" if host.count(":") == 1 else f"mqtt://{user}{host}:1883"

    @property
    def broker_password_file(self) -> str:
        return str(PurePosixPath(self.config).parent / "broker.password")

    @property
    def install_dir(self) -> str:
        return f"{self.data_dir.rstrip('/')}/{INSTALL_DIR}"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None and k != "broker_password"}


@dataclass
class Plan:
    options: Options
    actions: list[Action] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # the unit files written
    enabled: list[str] = field(default_factory=list)  # of those, the ones enabled at boot
    notes: list[str] = field(default_factory=list)  # what the user should know (a program to fetch...)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml(top: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], comments: Sequence[str]) -> str:
    lines = [f"# {c}" if c else "#" for c in comments]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, keys in sections.items():
        if keys:
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


def node_config(opts: Options, subsystems: Sequence[str], hand_over: Mapping[str, Mapping[str, Any]]) -> str:
    """/etc/milo/milo.toml: only sections of subsystems this build has (the node refuses others)."""
    dac, screen = opts.the_dac, opts.the_screen
    top: dict[str, Any] = {"node_id": opts.node_id, "data_dir": opts.data_dir}
    sections: dict[str, dict[str, Any]] = {}
    if opts.satellite:
        only = [
            n for n in SATELLITE_SUBSYSTEMS if n in subsystems and (n != "screen" or screen.key != "none")
        ]
        top["broker"] = opts.main_broker
        if opts.broker_user:
            top["broker_password_file"] = opts.broker_password_file
        top["only"] = only
    else:
        top["alsa_config"] = f"{opts.data_dir.rstrip('/')}/asound.conf"
        if dac.card:
            sections["routing"] = {"card": dac.card, "card_format": dac.card_format}
    if dac.card and dac.mixer:
        sections["volume"] = {"device": f"hw:{dac.card}", "control": dac.mixer}
    if screen.has_backlight:
        sections["screen"] = {"backlight": screen.backlight, "invert": screen.invert}
        if screen.max_brightness is not None:
            sections["screen"]["max_brightness"] = screen.max_brightness
    if not opts.satellite:
        for name, keys in hand_over.items():
            sections.setdefault(name, {}).update(keys)
    sections = {k: v for k, v in sections.items() if k in subsystems}
    comments = [
        f"{HEADER}",
        f"dac {dac.key} ({dac.card or 'any card'}), screen {screen.key}, "
        + (f"satellite of {opts.main}" if opts.satellite else "main node"),
        "Every key: docs/milo.example.toml; a [subsystem] table configures that subsystem.",
    ]
    if not opts.satellite:
        comments.append("/etc/asound.conf links to alsa_config: the node's unit may write only its data dir.")
    return toml(top, sections, comments)


def snapclient_env(opts: Options) -> str:
    dac = opts.the_dac
    card = f"plughw:CARD={dac.card},DEV=0" if dac.card else "default"
    mixer = f"hardware:{dac.mixer}" if dac.card and dac.mixer else "software"
    args = f"-h {opts.main_host} --hostID {opts.node_id} --soundcard {card} --mixer {mixer}"
    about = "# The main node's snapserver, this satellite's client id and its DAC."
    return f"# {HEADER}\n{about}\nSNAPCLIENT_OPTS={args}\n"


def polkit_rule(user: str, units: Sequence[str], start_only: Sequence[str] = ()) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(package_data("install")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - JavaScript, values through tojson
    )
    template = env.get_template("polkit.rules.j2")
    return template.render(user=user, units=list(units), verbs=list(VERBS), start_only=list(start_only))


def backlight_rule(user: str) -> str:
    return (
        f"# {HEADER}\n"
        f"# The node (user {user}, in group video) sets the panel's brightness and switches it off.\n"
        'SUBSYSTEM=="backlight", ACTION=="add", RUN+="/bin/sh -c \'chgrp video /sys%p/brightness '
        "/sys%p/bl_power; chmod g+w /sys%p/brightness /sys%p/bl_power'\"\n"
    )


def unit_context(opts: Options, groups: Sequence[str], gpio: bool) -> dict[str, Any]:
    writable = ["-/sys/devices/platform"] if opts.the_screen.has_backlight else []
    context = base_context(
        milo=opts.milo,
        user=opts.user,
        data_dir=opts.data_dir,
        config=opts.config,
        gpio=gpio,
        groups=groups,
        writable_paths=writable,
    )
    # What the daemons' templates take that only an install knows (the kiosk's port, a satellite's
    # snapserver), and the kiosk's keys for a build whose base_context lacks them.
    context |= {
        "http_port": opts.http_port,
        "snapserver_host": opts.main_host if opts.satellite else "127.0.0.1",
    }
    for key, value in KIOSK_DEFAULTS.items():
        context.setdefault(key, value)
    return context


def _needs(opts: Options, system: System, chosen: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """The packages and the user's groups (those there are, or that the packages make), and gpio."""
    packages = list(BASE_PACKAGES[opts.role])
    groups = ["audio"]
    for unit in chosen:
        r = daemons.rule(unit)
        packages += [*r.packages, *daemons.packages_file(unit)]
        groups += r.groups
    if opts.the_screen.has_backlight:
        groups.append("video")
    gpio = system.group_exists("gpio")
    groups += ["gpio"] if gpio else []
    made = _from_packages(packages)
    return packages, [g for g in dict.fromkeys(groups) if system.group_exists(g) or g in made], gpio


def _unit_files(
    plan: Plan, chosen: Sequence[str], context: dict[str, Any], system: System
) -> tuple[list[Action], dict[str, dict[str, Any]]]:
    """A file per unit; which are enabled, and the milo.toml keys that hand their daemons over."""
    roles = plan.options.roles
    hand_over: dict[str, dict[str, Any]] = {}
    files: list[Action] = []
    for unit in chosen:
        r = daemons.rule(unit)
        try:
            text = render_unit(unit, context)
        except jinja2.UndefinedError as exc:
            raise InstallError(f"systemd/{unit}.j2: {exc} (add the key to base_context)") from exc
        files.append(WriteFile(f"{UNIT_DIR}/{unit}", text.encode()))
        plan.units.append(unit)
        program = context.get(r.program) if r.program else None
        if program and not system.path(str(program)).exists():
            plan.notes.append(
                f"{unit}: {program} is not there (no package has it): `milo fetch-binaries` gets it, then "
                "`milo install` again enables the unit; until then its source says unavailable"
            )
            continue
        for name, keys in r.hand_over.items():
            hand_over.setdefault(name, {}).update(keys)
        if r.enabled & roles:
            plan.enabled.append(unit)
    return files, hand_over


def _loopback(opts: Options) -> list[Action]:
    loop = f"# {HEADER}\n# The ALSA loopback the multiroom streams go through.\nsnd-aloop\n"
    options = f"# {HEADER}\n# One subdevice per source (8), as asound.conf pins them.\n"
    return [
        WriteFile(MODULES_LOAD, loop.encode()),
        WriteFile(MODPROBE, (options + "options snd-aloop pcm_substreams=8\n").encode()),
        Symlink(SYSTEM_ASOUND, f"{opts.data_dir.rstrip('/')}/asound.conf"),
    ]


def build(
    opts: Options,
    system: System,
    *,
    templates: Sequence[str],
    subsystems: Sequence[str],
) -> Plan:
    """Every step of an install with `opts`, for the unit `templates` and `subsystems` this build has."""
    opts.check()
    plan = Plan(opts)
    chosen = [u for u in templates if daemons.rule(u).roles & opts.roles]
    packages, groups, gpio = _needs(opts, system, chosen)
    unit_files, hand_over = _unit_files(plan, chosen, unit_context(opts, groups, gpio), system)
    main = not opts.satellite
    a = plan.actions
    a += [Directory(opts.data_dir, 0o750), Directory(opts.install_dir, 0o755)]
    a.append(Packages(sorted(dict.fromkeys(packages))))
    a.append(User(opts.user, opts.data_dir, groups))
    a.append(Owner(opts.data_dir, opts.user))
    if main:
        a += _loopback(opts)
    a.append(WriteFile(opts.config, node_config(opts, subsystems, hand_over).encode()))
    if opts.broker_user and opts.broker_password:
        # 0600 and the node's: its unit reads it (root too); nobody else on the Pi.
        password = f"{opts.broker_password}\n".encode()
        a += [
            WriteFile(opts.broker_password_file, password, 0o600),
            Owner(opts.broker_password_file, opts.user),
        ]
    if opts.satellite:
        a.append(WriteFile(f"{opts.data_dir.rstrip('/')}/snapclient.env", snapclient_env(opts).encode()))
    a += unit_files
    controlled, start_only = _rule_units(plan.units)
    if controlled or start_only:
        a.append(WriteFile(POLKIT_RULE, polkit_rule(opts.user, controlled, start_only).encode()))
    if opts.the_screen.has_backlight:
        a.append(WriteFile(BACKLIGHT_RULE, backlight_rule(opts.user).encode()))
    lines = [*opts.the_dac.overlay, *opts.the_screen.overlay]
    if lines:
        a.append(ConfigBlock(opts.boot_config, lines))
    if main:
        a.append(LoadModule("snd-aloop"))
    a.append(EnableUnits(plan.enabled))
    return plan


def _rule_units(units: Sequence[str]) -> tuple[list[str], list[str]]:
    """The units the polkit rule lets the node drive (every job verb), and those it may only start."""
    drive: list[str] = []
    start: list[str] = []
    for unit in units:
        r = daemons.rule(unit)
        if r.controlled:
            (start if r.start_only else drive).extend(r.instances or [unit])
    return drive, start


def _from_packages(packages: Sequence[str]) -> set[str]:
    """Groups that installing these packages creates (bluez makes `bluetooth`)."""
    return {"bluetooth"} if "bluez" in packages else set()
