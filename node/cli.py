"""Command line: `milo run`, `install`/`uninstall`/`doctor`, `satellite`, `user`, `broker-config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node import __version__, registry
from node.config import load, setup_logging
from node.framework.errors import ConfigError

logger = logging.getLogger("node")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="milo", description="Milo audio node: MQTT is its one and only API.")
    # What an update's check asks the new version (and `versions.of_binary` reads): "milo 0.1.0".
    p.add_argument("--version", action="version", version=f"milo {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the node (embedded broker, web UI, subsystems)")
    run.add_argument(
        "--config", type=Path, help="TOML config file (default: $MILO_CONFIG, /etc/milo/milo.toml)"
    )
    run.add_argument("--node-id", help="node id, [a-z0-9_-]+ (default: host name)")
    run.add_argument(
        "--data-dir", type=Path, help="where state is kept (default: /var/lib/milo or ~/.local/share)"
    )
    run.add_argument("--bind", help="address the broker and HTTP port listen on (default 0.0.0.0)")
    run.add_argument("--mqtt-port", type=int, help="embedded broker TCP port (default 1883; 0 = a free one)")
    run.add_argument(
        "--http-port", type=int, help="web UI and MQTT-over-WebSocket port (default 8080; 0 = free)"
    )
    run.add_argument("--broker", help="use an external broker, mqtt://[user:pass@]host:port")
    run.add_argument(
        "--only", nargs="+", metavar="NAME", help=f"run only these subsystems ({', '.join(registry.names())})"
    )
    run.add_argument(
        "--skip", nargs="+", metavar="NAME", help="run every subsystem but these (another process runs them)"
    )
    run.add_argument(
        "--join",
        action="store_true",
        default=None,
        help="run the --only subsystems for a node whose main process is elsewhere, on --broker "
        "(its status stays that process's)",
    )
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--check",
        action="store_true",
        help="load the config and every module the node runs, then exit (an update's self test)",
    )
    sat = sub.add_parser(
        "satellite", help="set this Pi up as a multiroom satellite of a main node (snapclient unit, host id)"
    )
    sat.add_argument("--server", required=True, help="the main node's host (its snapserver)")
    sat.add_argument("--port", type=int, default=1704, help="snapserver's stream port (default 1704)")
    sat.add_argument("--control-port", type=int, default=1705, help="its JSON-RPC port (default 1705)")
    sat.add_argument("--name", help="the name this speaker shows under (default: the host name)")
    sat.add_argument(
        "--host-id", help="the client id (default: kept from before, else host name + machine id)"
    )
    sat.add_argument("--soundcard", default="default", help="ALSA PCM of this Pi's DAC (default: default)")
    sat.add_argument("--mixer", default="software", help="snapclient --mixer (hardware:Digital on HiFiBerry)")
    sat.add_argument("--latency", type=int, default=0, help="the DAC's own latency in ms")
    sat.add_argument(
        "--broker", help="also run `milo --only volume,...` on the main node's broker (mqtt://...)"
    )
    sat.add_argument("--data-dir", default="/var/lib/milo", help="where the client's options are kept")
    sat.add_argument("--user", default="milo", help="the user the units run as")
    sat.add_argument("--root", type=Path, help="write the files under this directory and run no systemctl")
    sat.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the client to connect")
    sat.add_argument("--dry-run", action="store_true", help="print every step, do nothing")
    sch = sub.add_parser("schemas", help="write schemas/ from the models")
    sch.add_argument("--check", action="store_true", help="exit 1 if schemas/ is not current")
    sub.add_parser("version", help="print the version")
    _install_parsers(sub)
    from node import accounts  # noqa: PLC0415 - small; argparse wants every command up front

    accounts.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - a return per command
    args = _parser().parse_args(argv)
    if args.cmd in INSTALL_COMMANDS:
        return _install_command(args)
    if args.cmd in ("user", "broker-config"):
        from node import accounts  # noqa: PLC0415 - only these commands need it

        return accounts.main(args, registry.names(), registry.request_paths())
    if args.cmd == "version":
        print(__version__)
        return 0
    if args.cmd in ("schemas", "satellite"):
        return _schemas(check=args.check) if args.cmd == "schemas" else _satellite(args)
    try:
        config = load(
            subsystem_names=registry.names(),
            renamed=registry.renamed(),
            config_file=args.config,
            cli={
                "node_id": args.node_id,
                "data_dir": args.data_dir,
                "bind": args.bind,
                "mqtt_port": args.mqtt_port,
                "http_port": args.http_port,
                "broker": args.broker,
                "only": args.only,
                "skip": args.skip,
                "join": args.join,
                "log_level": args.log_level,
            },
        )
    except ConfigError as exc:
        print(f"milo: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return _self_test()
    setup_logging(config.log_level)
    try:
        asyncio.run(_run(config))
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0


async def _run(config: object) -> None:
    from node.app import serve  # noqa: PLC0415 - keeps `milo schemas` free of the broker import

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)  # type: ignore[arg-type]


def _self_test() -> int:
    """What `milo run` needs before it serves: the app, the broker and every subsystem import."""
    try:
        import node.app  # noqa: F401, PLC0415

        for name in registry.names():
            registry.by_name(name)
    except Exception as exc:  # any failure to import is the answer
        print(f"milo {__version__}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"milo {__version__}: ok")
    return 0


def _satellite(args: argparse.Namespace) -> int:
    from node import satellite  # noqa: PLC0415 - only this command needs it

    try:
        return satellite.run(satellite.options(args, registry.names()))
    except ConfigError as exc:  # a broker URL that cannot be parsed
        print(f"milo satellite: {exc}", file=sys.stderr)
        return 2


def _schemas(*, check: bool) -> int:
    from node import schemagen  # noqa: PLC0415

    if check:
        problems = schemagen.check()
        if problems:
            print("schemas/ is stale (run `milo schemas`):\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("schemas/ is current")
        return 0
    for name in schemagen.write():
        print(f"wrote schemas/{name}")
    print("wrote the reference in docs/mqtt.md")
    return 0


INSTALL_COMMANDS = ("install", "uninstall", "doctor", "fetch-binaries", "update-apply")


def _install_parsers(sub: Any) -> None:
    from node.install.hardware import dac_help, screen_help  # noqa: PLC0415 - small, data only

    ins = sub.add_parser(
        "install", help="install this node on a Raspberry Pi: packages, user, units (as root)"
    )
    ins.add_argument("--dac", default="auto", metavar="DAC", help=f"the DAC, by name ({dac_help()})")
    ins.add_argument("--card", help="ALSA card id, instead of the --dac table's (another DAC)")
    ins.add_argument("--mixer", help="its volume control, instead of the table's ('' = none)")
    ins.add_argument("--screen", default="none", metavar="SCREEN", help=f"the display ({screen_help()})")
    ins.add_argument("--node-id", help="node id, [a-z0-9_-]+ (default: host name)")
    ins.add_argument(
        "--satellite", action="store_true", help="a multiroom satellite: snapclient + volume/screen/knob"
    )
    ins.add_argument(
        "--main", metavar="HOST[:PORT]", help="a satellite's main node (its broker and snapserver)"
    )
    ins.add_argument(
        "--broker-user",
        metavar="NAME",
        help="a satellite's `node` user on the main node's broker (needed once the main node has users)",
    )
    ins.add_argument(
        "--broker-password-file",
        metavar="FILE",
        help="its password: the first line of FILE ('-': stdin); without it, asked on the terminal",
    )
    ins.add_argument("--user", default="milo", help="the unprivileged user the node runs as (default milo)")
    ins.add_argument("--data-dir", default="/var/lib/milo")
    ins.add_argument("--milo", help="the milo executable the unit runs (default: this one)")
    ins.add_argument("--boot-config", default="/boot/firmware/config.txt", help="where dtoverlay lines go")
    ins.add_argument("--http-port", type=int, default=8080, help="the node's HTTP port (the kiosk opens it)")
    ins.add_argument("--force", action="store_true", help="also replace files changed since the last install")
    uni = sub.add_parser("uninstall", help="remove what `milo install` added, and nothing else (as root)")
    uni.add_argument("--data-dir", default="/var/lib/milo")
    uni.add_argument("--purge", action="store_true", help="also the node's data and the user that owns it")
    uni.add_argument(
        "--keep-packages",
        action="store_true",
        help="leave the packages install added as they are (else: marked automatic, for autoremove)",
    )
    doc = sub.add_parser("doctor", help="check an installation; exit 1 when something is wrong")
    doc.add_argument("--config", type=Path, default=Path("/etc/milo/milo.toml"), help="the installed config")
    doc.add_argument(
        "--broker", help="check the node on this broker, mqtt://host:port (default: the config's)"
    )
    fetch = sub.add_parser("fetch-binaries", help="verify (and place) go-librespot and roc-recv by checksum")
    fetch.add_argument("names", nargs="*", help="which (default: all of the pinned list)")
    fetch.add_argument("--from", dest="source", type=Path, help="a downloaded file or a folder of them")
    fetch.add_argument("--list", type=Path, help="the pinned list (default: the one shipped with milo)")
    fetch.add_argument("--arch", help="the machine (default: this one's, e.g. arm64)")
    app = sub.add_parser(
        "update-apply", help="the privileged step of an update (milo-update@.service runs it)"
    )
    app.add_argument("program", help="what to update (the unit's instance name)")
    app.add_argument(
        "--config", type=Path, default=Path("/etc/milo/milo.toml"), help="root's config: [update]"
    )
    app.add_argument(
        "--status-dir", type=Path, help="where the progress file goes (default: [update] status_dir)"
    )
    for cmd in (ins, uni, doc, fetch):
        cmd.add_argument(
            "--root", type=Path, help="act on the tree under DIR (tests, an SD card); no commands run"
        )
    for cmd in (ins, uni, fetch):
        cmd.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")


def _install_command(args: argparse.Namespace) -> int:
    from node.install import commands  # noqa: PLC0415 - only these commands need it

    return commands.main(args, registry.names())
