"""`milo satellite`: this Pi becomes a multiroom satellite: a snapclient unit, a stable host id, a name."""

# Each step is printed before it is done; --dry-run prints them only, --root writes the files under
# another directory and runs no systemctl (tests, or preparing an SD card's file system).

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from node.adapters.snapcast import Control, Event, SnapcastError, client_argv
from node.adapters.units import base_context, render_unit
from node.framework.bus import BrokerURL

ENV_FILE = "snapclient.env"
PASSWORD_FILE = "/etc/milo/broker.password"  # noqa: S105 - a path; `milo install --satellite` uses it too
HOST_ID = re.compile(r"--hostID\s+(\S+)")
# Subsystems a satellite may run against the main node's broker: what it has of these is started.
SATELLITE_SUBSYSTEMS = ("volume", "screen", "knob")


@dataclass
class Options:
    server: str
    port: int = 1704
    control_port: int = 1705
    host_id: str = ""
    name: str = ""
    soundcard: str = "default"
    mixer: str = "software"
    latency: int = 0
    broker: str = ""
    data_dir: str = "/var/lib/milo"
    user: str = "milo"
    root: Path | None = None
    dry_run: bool = False
    wait_s: float = 20.0
    known_subsystems: Sequence[str] = ()


@dataclass
class Plan:
    host_id: str
    name: str
    files: dict[Path, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    secret: set[Path] = field(default_factory=set)  # files written 0600 and never printed


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "milo"


def derived_host_id(root: Path) -> str:
    """`<host name>-<6 hex of /etc/machine-id>`: readable, and two Pis both named raspberrypi differ."""
    try:
        machine = (root / "etc/machine-id").read_text().strip()
    except OSError:
        machine = socket.gethostname()
    return f"{_clean(socket.gethostname())[:40]}-{hashlib.sha256(machine.encode()).hexdigest()[:6]}"


def _write_secret(path: Path, text: str, owner: str | None) -> None:
    """Created 0600 (never readable by others, not even for a moment), then given to the node's user."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        with contextlib.suppress(KeyError, PermissionError):
            shutil.chown(tmp, owner, owner)
    os.replace(tmp, path)


def _on(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def make_plan(opts: Options) -> Plan:
    """What set-up writes and runs; the host id is kept from an earlier set-up so it never changes."""
    root = opts.root or Path("/")
    env_path = _on(root, f"{opts.data_dir}/{ENV_FILE}")
    host_id = opts.host_id
    if not host_id and env_path.exists():
        found = HOST_ID.search(env_path.read_text())
        host_id = found.group(1) if found else ""
    host_id = host_id or derived_host_id(root)
    name = opts.name or socket.gethostname()
    plan = Plan(host_id=host_id, name=name)
    context = base_context(data_dir=opts.data_dir, user=opts.user, snapserver_host=opts.server, gpio=False)
    plan.files[_on(root, "/etc/systemd/system/snapclient.service")] = render_unit(
        "snapclient.service", context
    )
    argv = client_argv(
        "snapclient",
        host=opts.server,
        port=opts.port,
        host_id=host_id,
        soundcard=opts.soundcard,
        mixer=opts.mixer,
        latency=opts.latency,
        logsink=None,
    )
    plan.files[env_path] = f"# Written by `milo satellite`.\nSNAPCLIENT_OPTS={' '.join(argv[1:])}\n"
    units = ["snapclient.service"]
    if opts.broker:
        only = [n for n in SATELLITE_SUBSYSTEMS if n in opts.known_subsystems]
        url = BrokerURL.parse(opts.broker)  # a bad URL is said before anything is written
        lines = [
            "# Written by `milo satellite`: this node's own subsystems, on the main node's broker.",
            f"node_id = {json.dumps(_clean(host_id))}",
            f"broker = {json.dumps(url.safe())}",
            f"only = {json.dumps(only)}",
        ]
        if url.password:
            # milo.toml is world-readable: the password goes to a file of its own, 0600.
            secret = _on(root, PASSWORD_FILE)
            plan.files[secret] = url.password + "\n"
            plan.secret.add(secret)
            lines.append(f"broker_password_file = {json.dumps(PASSWORD_FILE)}")
        plan.files[_on(root, "/etc/milo/milo.toml")] = "\n".join(lines) + "\n"
        milo_context = base_context(data_dir=opts.data_dir, user=opts.user)
        plan.files[_on(root, "/etc/systemd/system/milo.service")] = render_unit("milo.service", milo_context)
        units.append("milo.service")
    plan.commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *units]]
    return plan


async def name_client(
    server: str, port: int, *, host_id: str, name: str, wait_s: float, say: Callable[[str], None]
) -> bool:
    """Client.SetName on the main node's snapserver once this satellite's client has connected."""
    seen = asyncio.Event()

    def on_event(event: Event) -> None:
        if event.kind == "connected" or host_id in str(event.params)[:100000]:
            seen.set()

    control = Control(server, port, on_event)
    runner = asyncio.create_task(control.run())
    try:
        async with asyncio.timeout(wait_s):
            while True:
                await seen.wait()
                seen.clear()
                with contextlib.suppress(SnapcastError):
                    status = await control.call("Server.GetStatus")
                    ids = [c["id"] for g in status["server"]["groups"] for c in g["clients"]]
                    if host_id in ids:
                        await control.call("Client.SetName", {"id": host_id, "name": name})
                        return True
                    say(f"  waiting for {host_id} to connect to {server}:{port} ...")
    except TimeoutError:
        say(f"  {host_id} did not show up on {server}:{port} within {wait_s:.0f} s: {control.last_error}")
        return False
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def run(opts: Options, out: TextIO = sys.stdout) -> int:
    """Set up (or, with dry_run, print) every step; 0 when the client was named on the server."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    plan = make_plan(opts)
    verb = "would " if opts.dry_run else ""
    say(f"satellite: host id {plan.host_id}, name {plan.name!r}, server {opts.server}:{opts.port}")
    for path, text in plan.files.items():
        secret = path in plan.secret
        say(f"{verb}write {path}" + (" (mode 0600; not shown)" if secret else ""))
        if opts.dry_run:
            if not secret:
                say("  | " + "\n  | ".join(text.rstrip("\n").splitlines()))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if secret:
            _write_secret(path, text, None if opts.root is not None else opts.user)
        else:
            path.write_text(text)
    for command in plan.commands:
        if opts.root is not None and not opts.dry_run:
            say(f"skip (--root): {shlex.join(command)}")
            continue
        say(f"{verb}run {shlex.join(command)}")
        if not opts.dry_run:
            done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                say(f"  failed: {done.stderr.strip()}")
                return 1
    rpc = {"id": plan.host_id, "name": plan.name}
    say(f"{verb}name it: Client.SetName {rpc} on {opts.server}:{opts.control_port}")
    if opts.dry_run:
        return 0
    named = asyncio.run(
        name_client(
            opts.server, opts.control_port, host_id=plan.host_id, name=plan.name, wait_s=opts.wait_s, say=say
        )
    )
    if not named:
        topic = f"milo/<main node id>/multiroom/client/{plan.host_id}/set"
        say(f'  name it later: mosquitto_pub -t {topic} -m \'{{"name": "{plan.name}"}}\'')
        return 1
    say("done: it shows in the main node's `multiroom` state by itself")
    return 0


def options(args: Any, known_subsystems: Sequence[str]) -> Options:
    return Options(
        server=args.server,
        port=args.port,
        control_port=args.control_port,
        host_id=args.host_id or "",
        name=args.name or "",
        soundcard=args.soundcard,
        mixer=args.mixer,
        latency=args.latency,
        broker=args.broker or "",
        data_dir=args.data_dir,
        user=args.user,
        root=args.root,
        dry_run=args.dry_run,
        wait_s=args.wait,
        known_subsystems=known_subsystems,
    )
