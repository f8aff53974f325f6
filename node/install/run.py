"""`milo install` and `milo uninstall`: run the plan's steps, print each, keep the manifest and plan.json."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from node.install.actions import EnableUnits, Outcome, Target, Undo, WriteFile
from node.install.daemons import NODE_UNIT
from node.install.manifest import Manifest
from node.install.plan import UNIT_DIR, Options, build
from node.install.system import InstallError, System, system_for

MANIFEST = "manifest.json"
PLAN_FILE = "plan.json"
UNDONE_WHEN_STALE = ("file", "link", "block")
CHANGED = ("created", "updated", "replaced", "installed", "started", "loaded", "removed", "restored")


def _manifest(system: System, opts_data_dir: str, install_dir: str) -> Manifest:
    return Manifest.load(system.path(install_dir) / MANIFEST, opts_data_dir, system)


def _check_root(system: System, dry_run: bool) -> None:
    if not system.simulated and not dry_run and os.geteuid() != 0:
        raise InstallError(
            "must run as root: it installs packages, creates a user and writes /etc (or try --dry-run, "
            "or --root DIR to write the tree into a directory)"
        )


def _header(opts: Options, system: System, dry_run: bool) -> str:
    dac = opts.the_dac
    kind = f"satellite of {opts.main}" if opts.satellite else "main node"
    where = f" into {system.root} (simulated: commands recorded, not run)" if system.simulated else ""
    mode = " (dry run: nothing is changed)" if dry_run else ""
    mixer = f", mixer {dac.mixer}" if dac.mixer else ""
    return (
        f"milo install: {kind} {opts.node_id!r}, dac {dac.key} (card {dac.card or 'any'}{mixer}), "
        f"screen {opts.screen}{where}{mode}"
    )


def _reload_units(
    t: Target, opts: Options, plan_units: Sequence[str], outcomes: Sequence[Outcome]
) -> list[Outcome]:
    """daemon-reload after a unit file changed; restart an enabled unit whose file or config changed."""
    changed_files = {o.what.removeprefix("write ") for o in outcomes if o.status in CHANGED}
    configs = {
        opts.config: NODE_UNIT,
        opts.broker_password_file: NODE_UNIT,
        f"{opts.data_dir.rstrip('/')}/snapclient.env": "snapclient.service",
    }
    changed = [u for u in plan_units if f"{UNIT_DIR}/{u}" in changed_files]
    if changed and not t.dry_run:
        t.system.daemon_reload()
    restart = [
        *changed,
        *(unit for path, unit in configs.items() if path in changed_files and unit not in changed),
    ]
    running = [u for u in restart if u in plan_units and t.system.unit_enabled(u)]
    if not running or t.dry_run:
        return []
    t.system.restart(running)
    return [Outcome("restarted", f"units {' '.join(running)}", "their unit file or config changed")]


def install(
    opts: Options,
    *,
    root: Path | None,
    dry_run: bool = False,
    force: bool = False,
    templates: Sequence[str],
    subsystems: Sequence[str],
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    system = system_for(root)
    _check_root(system, dry_run)
    plan = build(opts, system, templates=templates, subsystems=subsystems)
    manifest = _manifest(system, opts.data_dir, opts.install_dir)
    t = Target(system, manifest, backup_dir=f"{opts.install_dir}/backup", force=force, dry_run=dry_run)
    print(_header(opts, system, dry_run), file=out)
    outcomes: list[Outcome] = []

    def say(outcome: Outcome) -> None:
        outcomes.append(outcome)
        print(outcome.line(), file=out, flush=True)

    for action in plan.actions:
        if isinstance(action, EnableUnits):
            for outcome in _reload_units(t, opts, plan.units, outcomes):
                say(outcome)
            if not action.units:
                continue
        say(action.apply(t))
    wanted = {a.key for a in plan.actions}
    undo = Undo(t)
    for key, entry in list(manifest.entries.items()):
        if key in wanted or entry["kind"] not in UNDONE_WHEN_STALE:
            continue
        if dry_run:
            say(Outcome("would be removed", str(entry.get("path", key)), "no longer part of this install"))
            continue
        outcome = undo(key, entry)
        say(Outcome(outcome.status, outcome.what, "no longer part of this install"))
        manifest.drop(key)
    stale_units = [u for u in (manifest.get("units") or {}).get("enabled", []) if u not in plan.enabled]
    if stale_units and not dry_run:
        system.disable_now(stale_units)
        manifest.put(
            "units", {"kind": "units", "enabled": [u for u in plan.enabled if system.unit_enabled(u)]}
        )
        say(Outcome("stopped", f"units {' '.join(stale_units)}", "no longer part of this install"))
    if undo.removed_units and not dry_run:
        system.daemon_reload()
    if not dry_run:
        if manifest.options != opts.as_dict():
            manifest.options = opts.as_dict()
            manifest.save()
        system.save()
        record = {
            "simulated": system.simulated,
            "options": opts.as_dict(),
            "commands": system.commands,
            "outcomes": [o.as_dict() for o in outcomes],
            "notes": plan.notes,
        }
        path = system.path(opts.install_dir) / PLAN_FILE
        system.write(path, (json.dumps(record, indent=2) + "\n").encode())
        path.chmod(0o644)
    _summary(system, outcomes, plan.notes, out)
    return 0


def _summary(system: System, outcomes: Sequence[Outcome], notes: Sequence[str], out: TextIO) -> None:
    verb = "recorded (not run)" if system.simulated else "ran"
    for command in system.commands:
        print(f"{verb}: {shlex.join(command)}", file=out)
    changed = sum(1 for o in outcomes if o.status != "unchanged")
    for note in notes:
        print(f"note: {note}", file=out)
    print(f"{changed} changed, {len(outcomes) - changed} unchanged", file=out)


@dataclass(frozen=True)
class UninstallOptions:
    data_dir: str = "/var/lib/milo"
    purge: bool = False  # also the node's data (and the user that owns it)
    keep_packages: bool = False


def uninstall(
    opts: UninstallOptions, *, root: Path | None, dry_run: bool = False, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    system = system_for(root)
    _check_root(system, dry_run)
    install_dir = f"{opts.data_dir.rstrip('/')}/install"
    manifest = _manifest(system, opts.data_dir, install_dir)
    where = f" in {system.root}" if system.simulated else ""
    if not manifest.entries:
        print(f"milo uninstall: nothing to do, no install manifest at {manifest.path}{where}", file=out)
        return 0
    data = system.path(opts.data_dir)
    ours = {str(e["path"]) for e in manifest.entries.values() if "path" in e}
    data_kept = (
        not opts.purge
        and data.is_dir()
        and any(
            p.name != "install" and f"{opts.data_dir.rstrip('/')}/{p.name}" not in ours
            for p in data.iterdir()
        )
    )
    t = Target(system, manifest, backup_dir=f"{install_dir}/backup", dry_run=dry_run)
    undo = Undo(t, purge=opts.purge, keep_packages=opts.keep_packages, data_kept=data_kept)
    print(f"milo uninstall{where}: what `milo install` added, newest first", file=out)
    outcomes: list[Outcome] = []
    last = {f"dir:{install_dir}", f"dir:{opts.data_dir}"}
    entries = list(manifest.entries.items())
    if dry_run:
        for key, entry in reversed(entries):
            outcomes.append(Outcome("would be undone", str(entry.get("path", key)), entry["kind"]))
            print(outcomes[-1].line(), file=out)
        _summary(system, outcomes, [], out)
        return 0
    for key, entry in reversed(entries):
        if key in last:
            continue
        outcomes.append(undo(key, entry))
        print(outcomes[-1].line(), file=out, flush=True)
    if undo.removed_units:
        system.daemon_reload()
    if data_kept:
        # The node's data and its user stay, and stay recorded: `uninstall --purge` later removes them.
        kept = {
            k
            for k, o in zip(reversed([k for k, _ in entries if k not in last]), outcomes, strict=True)
            if o.status == "kept" and k.startswith("user:")
        }
        manifest.entries = {k: v for k, v in entries if k in kept or k in last}
        manifest.save()
        (system.path(install_dir) / PLAN_FILE).unlink(missing_ok=True)
        outcomes.append(Outcome("kept", f"directory {opts.data_dir}", "the node's data (--purge removes it)"))
        print(outcomes[-1].line(), file=out)
    else:
        # The manifest goes last: a crash before this point leaves it, and uninstall can run again.
        for name in (MANIFEST, PLAN_FILE):
            (system.path(install_dir) / name).unlink(missing_ok=True)
        for key, entry in reversed(entries):
            if key in last:
                outcomes.append(undo(key, entry))
                print(outcomes[-1].line(), file=out, flush=True)
    system.save()
    _summary(system, outcomes, [], out)
    left = [o for o in outcomes if o.status == "kept"]
    if left:
        print(f"{len(left)} kept: changed since install, or holding data (see above)", file=out)
    return 0


def as_written(actions: Sequence[object]) -> list[str]:
    """The system paths of the files a plan writes (tests, docs)."""
    return [a.path for a in actions if isinstance(a, WriteFile)]
