"""`milo user add|remove|list` and `milo broker-config`: users, and the same roles for mosquitto."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.config import load
from node.framework.errors import ConfigError
from node.framework.files import write_atomic
from node.framework.users import ROLES, UserError, Users

# Levels under `milo/<id>/` a command topic may have (`source/radio/config/set` has four).
MAX_COMMAND_DEPTH = 5


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="people who may use the node: add, remove, list (users.json)")
    user_sub = user.add_subparsers(dest="user_cmd", required=True)
    add = user_sub.add_parser("add", help="add a user, or give one a new password or role")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES, help="control, read, or node (another node)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    rem = user_sub.add_parser("remove", help="remove a user")
    rem.add_argument("name")
    user_sub.add_parser("list", help="list the users and their roles")
    bc = sub.add_parser(
        "broker-config", help="write a mosquitto password file, ACL file and config snippet with milo's roles"
    )
    bc.add_argument(
        "--out", type=Path, required=True, help="directory to write milo.passwd, milo.acl, milo.conf"
    )
    for cmd in (add, rem, user_sub.choices["list"], bc):
        cmd.add_argument(
            "--config", type=Path, help="TOML config file (default: $MILO_CONFIG, /etc/milo/milo.toml)"
        )
        cmd.add_argument("--data-dir", type=Path, help="the node's data dir (default: the config's)")


def _users(args: argparse.Namespace, names: Sequence[str]) -> Users:
    config = load(subsystem_names=names, config_file=args.config, cli={"data_dir": args.data_dir})
    return Users(config.data_dir)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


def main(args: argparse.Namespace, names: Sequence[str], request_paths: Sequence[str]) -> int:
    try:
        users = _users(args, names)
        if args.cmd == "broker-config":
            return _broker_config(users, args.out, request_paths)
        if args.user_cmd == "add":
            replaced = users.add(args.name, args.role, _read_password(args.password_stdin))
            print(f"{'updated' if replaced else 'added'} {args.name} ({args.role}) in {users.path}")
        elif args.user_cmd == "remove":
            if not users.remove(args.name):
                print(f"milo: no user {args.name!r} in {users.path}", file=sys.stderr)
                return 1
            print(f"removed {args.name} from {users.path}")
        else:
            for user in users.all():
                print(f"{user.name}\t{user.role}")
    except (ConfigError, UserError, OSError) as exc:
        print(f"milo: {exc}", file=sys.stderr)
        return 2
    return 0


def acl_lines(users: Users, request_paths: Sequence[str]) -> list[str]:
    """mosquitto ACL lines giving each user its role's rights (README, Security)."""
    out = [
        "# milo roles (written by `milo broker-config`; regenerate after `milo user add`).",
        "# node: everything; control: read everything, publish commands; read: read only.",
        "# mosquitto cannot refuse a retained publish per topic: the node re-asserts its own state.",
    ]
    commands = [
        "milo/+/" + "/".join(["+"] * depth + [verb])
        for depth in range(1, MAX_COMMAND_DEPTH)
        for verb in ("set", "get")
    ]
    commands += [f"milo/+/{path}" for path in sorted(set(request_paths))]
    for user in users.all():
        out += ["", f"user {user.name}"]
        if user.role == "node":
            out.append("topic readwrite #")
            continue
        out.append("topic read #")
        if user.role == "control":
            out += [f"topic write {topic}" for topic in commands]
            # Home Assistant's birth message and the like live outside milo/.
            out.append("topic write homeassistant/#")
    return out


def _broker_config(users: Users, out: Path, request_paths: Sequence[str]) -> int:
    listed = users.all()
    if not listed:
        print("milo: no users yet: add some with `milo user add NAME --role ...` first", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    passwd = out / "milo.passwd"
    acl = out / "milo.acl"
    old = os.umask(0o077)
    try:
        # The users file already holds mosquitto's `$7$` lines: nothing to re-hash, no password asked.
        write_atomic(passwd, "".join(f"{u.name}:{u.hash}\n" for u in listed).encode())
        write_atomic(acl, ("\n".join(acl_lines(users, request_paths)) + "\n").encode())
    finally:
        os.umask(old)
    conf = out / "milo.conf"
    write_atomic(
        conf,
        (
            "# Include from mosquitto.conf (or pass with -c); mosquitto 2.0 or later.\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {passwd.resolve()}\n"
            f"acl_file {acl.resolve()}\n"
            "# Round trips of a command and its state: see README (external broker).\n"
            "set_tcp_nodelay true\n"
        ).encode(),
    )
    for path in (passwd, acl, conf):
        print(f"wrote {path}")
    print(f"{len(listed)} user(s); run the node with --broker mqtt://<a node user>:<password>@host:1883")
    return 0


__all__ = ["acl_lines", "add_parsers", "main"]
