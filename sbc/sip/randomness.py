"""Random hex for tags, branches, Call-IDs and call ids, drawn from a pooled ``os.urandom``.

Each call needs about ten of them; one ``getrandom`` system call apiece was ~3 % of the SBC's
CPU at 300 calls/s (py-spy, native frames). The pool is the same kernel randomness, read 4 KiB
at a time. Only the event loop's thread draws from it (the sans-I/O core is single-threaded).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

#: Bytes read from the kernel per refill.
POOL_BYTES = 4096

_pool = b""
_pos = 0
_source: Callable[[int], bytes] | None = None  # None: os.urandom


def seed(value: int | None) -> None:
    """Draw from a seeded generator (``None``: the kernel again), emptying the pool.

    Only for benchmarks that record a run's traffic and replay it into a fresh SBC: the
    replayed responses name the tags and branches the first run made, so both must draw the
    same. Never for a running SBC (tags and branches must not be guessable).
    """
    global _pool, _pos, _source
    _source = None if value is None else random.Random(value).randbytes
    _pool = b""
    _pos = 0


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` lowercase hex digits."""
    global _pool, _pos
    if _pos + nbytes > len(_pool):
        _pool = (_source or os.urandom)(max(POOL_BYTES, nbytes))
        _pos = 0
    start = _pos
    _pos += nbytes
    return _pool[start:_pos].hex()
