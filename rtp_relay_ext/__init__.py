"""Native RTP relay engine (Cython + C). Imports nothing of the project.

The engine's worker threads own the relay sockets and move packets outside the
GIL; this package is the control surface: allocate a session, point its legs at
peers, read stats, drain events, free it.  See README.md.
"""

from rtp_relay_ext._relay import (
    DEFAULT_HOLD_TIMEOUT,
    DEFAULT_MEDIA_TIMEOUT,
    DEFAULT_QUARANTINE,
    KERNEL_ENV,
    LATCH_STRICT,
    LATCH_SYMMETRIC,
    TIMING_BOUNDS_US,
    RelayEngine,
    StreamStatsFeeder,
    engine_version,
    io_uring_available,
    io_uring_status,
    kernel_built,
    mos_g711,
    now,
)
from rtp_relay_ext.events import (
    LEG_A,
    LEG_B,
    DtmfEvent,
    MediaTimeout,
    PoolExhausted,
    RelayError,
    SessionNotFound,
)

__all__ = [
    "DEFAULT_HOLD_TIMEOUT",
    "DEFAULT_MEDIA_TIMEOUT",
    "DEFAULT_QUARANTINE",
    "KERNEL_ENV",
    "LATCH_STRICT",
    "LATCH_SYMMETRIC",
    "LEG_A",
    "LEG_B",
    "DtmfEvent",
    "MediaTimeout",
    "PoolExhausted",
    "RelayEngine",
    "RelayError",
    "SessionNotFound",
    "StreamStatsFeeder",
    "TIMING_BOUNDS_US",
    "engine_version",
    "io_uring_available",
    "io_uring_status",
    "kernel_built",
    "mos_g711",
    "now",
]
