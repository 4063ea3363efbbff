"""The ``sbc`` command: run, parse, provision."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_settings
    from .workers import WorkerInfo

    overrides = {
        "sip_listen": args.sip_listen,
        "api_listen": args.api_listen,
        "db": args.db,
        "rtp_ip": args.rtp_ip,
        "rtp_ports": args.rtp_ports,
        "log_level": args.log_level,
        "redis_url": args.redis,
        "workers": args.workers,
    }
    try:
        settings = load_settings(overrides, args.config)
    except ConfigError as e:
        print(f"sbc: {e}", file=sys.stderr)
        return 2
    worker = WorkerInfo.from_env()
    tag = f"w{worker.index} " if worker is not None else ""
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s")
    if worker is None and settings.workers > 1:
        from .workers.supervisor import supervise

        return supervise(settings, sys.argv[1:])
    import uvloop

    from .app import serve

    try:
        uvloop.run(serve(settings, worker))
    except OSError as e:
        print(f"sbc: cannot start: {e}", file=sys.stderr)
        return 1
    return 0


def parse_file_report(path: str) -> dict:
    """Parse and fully validate one file; return the JSON-able report ``sbc parse`` prints."""
    from .sip.errors import SIPParseError
    from .sip.message import Request, parse_message

    report: dict = {"file": path}
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        report.update(ok=False, error=f"cannot read: {e.strerror}")
        return report
    kind = "response" if data.lstrip(b"\r\n").startswith(b"SIP/") else "request"
    report["kind"] = kind
    try:
        msg = parse_message(data)
        if isinstance(msg, Request):
            report["method"] = msg.method
        else:
            report["status"] = msg.status
        msg.validate()
    except SIPParseError as e:
        report.update(ok=False, error=e.reason, code=e.status)
        return report
    report["ok"] = True
    return report


def _cmd_parse(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        report = parse_file_report(path)
        bad += not report["ok"]
        print(json.dumps(report, ensure_ascii=False))
    return 1 if bad else 0


def _cmd_provision(args: argparse.Namespace) -> int:
    import os

    from .provision import provision_main

    return provision_main(args.file, args.db or os.environ.get("SBC_DB") or "sqlite:///sbc.db")


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema to the newest revision (or down to ``--downgrade REV``)."""
    import asyncio
    import os

    from .store.migrations import downgrade, head_revision, migrate
    from .store.store import Store, StoreError

    url = args.db or os.environ.get("SBC_DB") or "sqlite:///sbc.db"

    async def run() -> dict:
        store = await Store.open(url, create=False)  # the engine with the SQLite hooks, no schema work
        try:
            if args.downgrade:
                before, after = await downgrade(store.engine, args.downgrade)
            else:
                before, after = await migrate(store.engine)
            return {
                "db": store.engine.url.render_as_string(hide_password=True),
                "from": before,
                "to": after,
                "head": head_revision(),
            }
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except StoreError as e:
        print(f"sbc: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # unreachable database, failed migration: one line, not a traceback
        print(f"sbc: migration failed: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbc", description="Elastic SIP trunking session border controller")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the SBC",
        description="Run the SBC. Every flag is also settable by env (SBC_<NAME>) or a TOML file.",
    )
    run.add_argument(
        "--sip-listen",
        action="append",
        metavar="[udp:|tcp:]HOST:PORT",
        help="SIP listener (repeatable; env SBC_SIP_LISTEN, space-separated). Without a prefix: UDP and TCP. "
        "Default udp:0.0.0.0:5060 and tcp:0.0.0.0:5060",
    )
    run.add_argument("--api-listen", metavar="HOST:PORT", help="REST API address (env SBC_API_LISTEN)")
    run.add_argument("--db", metavar="URL", help="store URL, default sqlite:///sbc.db (env SBC_DB)")
    run.add_argument("--rtp-ip", metavar="IP", help="address the RTP relay binds (env SBC_RTP_IP)")
    run.add_argument("--rtp-ports", metavar="MIN-MAX", help="RTP port range (env SBC_RTP_PORTS)")
    run.add_argument(
        "--redis", metavar="URL", help="Redis for cluster-wide limits and carrier health (env SBC_REDIS_URL)"
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the SIP listeners, one per core to use (env SBC_WORKERS, default 1); "
        "more than 1 needs the SIP steering program (clang and libbpf at build time, CAP_BPF to run)",
    )
    run.add_argument("--config", metavar="FILE.toml", help="TOML settings file (env SBC_CONFIG)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="env SBC_LOG_LEVEL")
    run.set_defaults(func=_cmd_run)

    parse = sub.add_parser("parse", help="parse SIP message files, one JSON line each")
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.set_defaults(func=_cmd_parse)

    prov = sub.add_parser("provision", help="apply a declarative provision file to the store")
    prov.add_argument("file", metavar="FILE.yaml")
    prov.add_argument("--db", metavar="URL", help="store URL (env SBC_DB), default sqlite:///sbc.db")
    prov.set_defaults(func=_cmd_provision)

    mig = sub.add_parser(
        "migrate",
        help="bring the store's schema to the newest revision (sbc run also does at start)",
        description="Apply the store's schema migrations and print one JSON line {db, from, to, head}.",
    )
    mig.add_argument("--db", metavar="URL", help="store URL (env SBC_DB), default sqlite:///sbc.db")
    mig.add_argument("--downgrade", metavar="REV", help="downgrade to revision REV instead ('base': drop all)")
    mig.set_defaults(func=_cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
