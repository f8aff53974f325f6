"""Command line: `milo run` (the node), `milo satellite` (set-up), `milo schemas`, `milo version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from node import __version__, registry
from node.config import load, setup_logging
from node.framework.errors import ConfigError

logger = logging.getLogger("node")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="milo", description="Milo audio node: MQTT is its one and only API.")
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
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
                "log_level": args.log_level,
            },
        )
    except ConfigError as exc:
        print(f"milo: {exc}", file=sys.stderr)
        return 2
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


def _satellite(args: argparse.Namespace) -> int:
    from node import satellite  # noqa: PLC0415 - only this command needs it

    return satellite.run(satellite.options(args, registry.names()))


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
