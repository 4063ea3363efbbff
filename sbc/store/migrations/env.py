"""Alembic environment of the store: runs on the connection :mod:`sbc.store.migrations` hands in.

Nothing here opens a database: :func:`sbc.store.migrations.migrate` (``Store.open``,
``sbc migrate``) and the developer commands of ``python -m sbc.store.migrations`` pass a sync
connection (from ``AsyncConnection.run_sync``) already inside a transaction, and every revision
runs in that one transaction. Regenerate revisions with::

    python -m sbc.store.migrations revision -m "what changed"
    python -m sbc.store.migrations initial     # rewrite 0001 from the models (before a release)

Options that matter for both backends:

* ``render_as_batch``: SQLite cannot ALTER most things; batch mode recreates the table there and
  issues plain ALTERs on PostgreSQL, so one revision file serves both;
* ``compare_type``: a changed column type is a difference worth a revision;
* :class:`sbc.store.schema.UtcDateTime` is rendered as ``sa.DateTime(timezone=True)`` (what it
  stores), so revisions never import model code that may change after them.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from sbc.store.schema import Base, UtcDateTime


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render the project's type decorators as the plain SQLAlchemy types they store."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run() -> None:
    """Run the pending revisions on the connection from ``config.attributes``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "sbc migrations run on a connection handed in by sbc.store.migrations "
            "(sbc migrate, Store.open, python -m sbc.store.migrations); offline --sql mode is not supported"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
