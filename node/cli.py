"""Command line: `milo run` (the node), `milo schemas` (regenerate or --check schemas/), `milo version`."""

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
    sch = sub.add_parser("schemas", help="write schemas/ from the models")
    sch.add_argument("--check", action="store_true", help="exit 1 if schemas/ is not current")
    sub.add_parser("version", help="print the version")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "version":
        print(__version__)
        return 0
    if args.cmd == "schemas":
        return _schemas(check=args.check)
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
