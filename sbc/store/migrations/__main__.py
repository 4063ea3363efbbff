"""Developer commands for the store's migrations: ``python -m sbc.store.migrations COMMAND``.

``revision -m MSG``  autogenerate the next revision (``versions/000N_msg.py``) from the difference
                     between :mod:`sbc.store.schema` and a scratch database migrated to head.
``initial``          delete every revision and write ``0001_initial_schema.py`` from the models:
                     the way to fold schema changes into the first revision before it has ever
                     been released (afterwards, always add a revision instead).
``check``            exit 1 and list the differences when the models and head disagree.

The scratch database is a temporary SQLite file unless ``--db URL`` names another (use a
throw-away PostgreSQL database to see what PostgreSQL reflects). Read every generated revision
before committing it: autogenerate does not see renames, CHECK constraint changes or data moves.
Generated files are passed through ``ruff format`` and ``ruff check --fix`` when ruff is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from sbc.store.migrations import INITIAL_REVISION, MIGRATIONS_DIR, alembic_config, migrate, script_directory
from sbc.store.schema import Base
from sbc.store.store import async_db_url

VERSIONS_DIR = MIGRATIONS_DIR / "versions"
#: Width of the numeric revision ids ("0001", "0002", ...): sorts by name in the folder.
REVISION_ID_WIDTH = 4


async def _with_scratch_db(db: str | None, fn: Any, *, upgrade: bool) -> Any:
    """Run ``fn(sync_connection)`` on a scratch database (optionally migrated to head first)."""
    with tempfile.TemporaryDirectory(prefix="sbc-migrations-") as tmp:
        url = async_db_url(db or f"sqlite:///{Path(tmp) / 'scratch.db'}")
        engine = create_async_engine(url)
        try:
            if upgrade:
                await migrate(engine)
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()


def _ruff_fix(paths: list[Path]) -> None:
    if paths and shutil.which("ruff"):
        subprocess.run(["ruff", "format", "--quiet", *map(str, paths)], check=False)
        subprocess.run(["ruff", "check", "--fix", "--quiet", *map(str, paths)], check=False)


def _new_files(before: set[Path]) -> list[Path]:
    return sorted(set(VERSIONS_DIR.glob("*.py")) - before)


def cmd_revision(args: argparse.Namespace) -> int:
    """Autogenerate the next numbered revision."""
    head = script_directory().get_current_head()
    rev_id = str(int(head) + 1).zfill(REVISION_ID_WIDTH) if head else INITIAL_REVISION
    before = set(VERSIONS_DIR.glob("*.py"))

    def generate(connection: Any) -> None:
        cfg = alembic_config(connection)
        command.revision(cfg, message=args.message, autogenerate=True, rev_id=rev_id)

    asyncio.run(_with_scratch_db(args.db, generate, upgrade=True))
    created = _new_files(before)
    _ruff_fix(created)
    for path in created:
        print(path)
    return 0


def cmd_initial(args: argparse.Namespace) -> int:
    """Replace every revision by one initial revision generated from the models."""
    for path in VERSIONS_DIR.glob("*.py"):
        path.unlink()

    def generate(connection: Any) -> None:
        cfg = alembic_config(connection)
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id=INITIAL_REVISION)

    asyncio.run(_with_scratch_db(args.db, generate, upgrade=False))
    created = _new_files(set())
    _ruff_fix(created)
    for path in created:
        print(path)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Compare the models with a database migrated to head; exit 1 on any difference."""

    def compare(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    diffs = asyncio.run(_with_scratch_db(args.db, compare, upgrade=True))
    for diff in diffs:
        print(json.dumps(repr(diff)))
    if diffs:
        print("models and migrations differ: run `python -m sbc.store.migrations revision -m MSG`", file=sys.stderr)
    return 1 if diffs else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sbc.store.migrations", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="autogenerate the next revision from the models")
    rev.add_argument("-m", "--message", required=True, help="what changed, e.g. 'add applications'")
    rev.set_defaults(func=cmd_revision)
    initial = sub.add_parser("initial", help="rewrite the initial revision from the models (pre-release only)")
    initial.set_defaults(func=cmd_initial)
    check = sub.add_parser("check", help="exit 1 when the models and head differ")
    check.set_defaults(func=cmd_check)
    for sp in (rev, initial, check):
        sp.add_argument("--db", metavar="URL", help="scratch database (default: a temporary SQLite file)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
