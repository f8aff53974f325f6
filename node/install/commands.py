"""From the command line's arguments to install, uninstall, doctor and fetch-binaries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from node.adapters.units import templates
from node.framework.topics import default_node_id, valid_node_id
from node.install.system import InstallError


def this_milo() -> str:
    """The `milo` beside this Python (a venv's bin/), else the script this process was started as."""
    beside = Path(sys.executable).parent / "milo"
    return str(beside if beside.exists() else Path(sys.argv[0]).absolute())


def broker_password(args: argparse.Namespace) -> str | None:
    """A satellite's broker password: from --broker-password-file, else typed (never an argument)."""
    source = getattr(args, "broker_password_file", None)
    if source is None:
        if not getattr(args, "broker_user", None):
            return None
        if not sys.stdin.isatty():
            raise InstallError(
                "--broker-user needs its password: --broker-password-file FILE (or '-' for stdin)"
            )
        import getpass  # noqa: PLC0415

        first = getpass.getpass(f"password of {args.broker_user} on the main node's broker: ")
        if getpass.getpass("again: ") != first:
            raise InstallError("the two passwords differ")
        return first
    try:
        text = sys.stdin.readline() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise InstallError(f"--broker-password-file {source}: {exc}") from exc
    return text.split("\n", 1)[0].rstrip("\r")


def main(args: argparse.Namespace, subsystems: Sequence[str]) -> int:
    try:
        return _dispatch(args, subsystems)
    except InstallError as exc:
        print(f"milo {args.cmd}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, subsystems: Sequence[str]) -> int:
    root = args.root.resolve() if getattr(args, "root", None) else None
    if root is not None and not root.is_dir() and args.cmd in ("install", "uninstall"):
        if args.cmd == "uninstall":
            raise InstallError(f"--root {root}: no such directory")
        try:  # a tree being prepared (an SD card's, a test's): made as `make DESTDIR=` would
            root.mkdir(parents=True)
        except OSError as exc:
            raise InstallError(f"--root {root}: {exc.strerror or exc}") from None
    if args.cmd == "install":
        from node.install.plan import Options  # noqa: PLC0415
        from node.install.run import install  # noqa: PLC0415

        node_id = args.node_id or default_node_id()
        if not valid_node_id(node_id):
            raise InstallError(f"--node-id {node_id!r} must match [a-z0-9_-]+")
        opts = Options(
            node_id=node_id,
            milo=args.milo or this_milo(),
            dac=args.dac,
            card=args.card,
            mixer=args.mixer,
            screen=args.screen,
            satellite=args.satellite,
            main=args.main,
            user=args.user,
            data_dir=args.data_dir,
            boot_config=args.boot_config,
            http_port=args.http_port,
            broker_user=args.broker_user,
            broker_password=broker_password(args),
        )
        return install(
            opts,
            root=root,
            # Under --root no command ever runs and the tree is the point: --dry-run changes nothing there.
            dry_run=args.dry_run and root is None,
            force=args.force,
            templates=templates(),
            subsystems=subsystems,
        )
    if args.cmd == "uninstall":
        from node.install.run import UninstallOptions, uninstall  # noqa: PLC0415

        unopts = UninstallOptions(data_dir=args.data_dir, purge=args.purge, keep_packages=args.keep_packages)
        return uninstall(unopts, root=root, dry_run=args.dry_run and root is None)
    if args.cmd == "doctor":
        from node.install import doctor  # noqa: PLC0415

        return doctor.run(root=root, config=args.config, subsystems=subsystems, broker=args.broker)
    if args.cmd == "update-apply":
        from node.install import apply  # noqa: PLC0415

        return apply.run(args.program, config=args.config, status_dir=args.status_dir)
    from node.install import binaries  # noqa: PLC0415

    return binaries.main(
        names=args.names,
        source=args.source,
        pinned=args.list,
        arch=args.arch,
        root=root,
        dry_run=args.dry_run,
    )
