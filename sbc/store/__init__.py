"""Persistence: provisioning data, the store version and CDRs (SQLAlchemy 2 asyncio).

SQLite file by default, PostgreSQL for a cluster. See :class:`sbc.store.store.Store`.
"""

from sbc.store.cdr import CdrAttempt, CdrRecord
from sbc.store.store import DEFAULT_DB_URL, Store, StoreError, async_db_url, bump_version

__all__ = [
    "DEFAULT_DB_URL",
    "CdrAttempt",
    "CdrRecord",
    "Store",
    "StoreError",
    "async_db_url",
    "bump_version",
]
