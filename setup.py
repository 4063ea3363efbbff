"""Builds the native extension modules; everything else is declared in pyproject.toml.

sbc.sip._speedups      C-speed SIP header splitting (pure-Python fallback in sbc.sip.message)
sbc.transport._udpio   recvmmsg/sendmmsg for SIP over UDP, with kernel receive timestamps
rtp_relay_ext._relay   the RTP relay engine (C threads + Cython control surface)
loadtest.rtp_load._gen the RTP load generator's native sender/receiver
"""

import os
import shutil
import subprocess
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O2 for the packet path; -pthread because the engine and generator start threads.
C_FLAGS = ["-O2", "-pthread", "-Wall", "-Wno-unused-function"]
# Set to 1 to build the relay without its io_uring backend even where liburing exists.
NO_IO_URING_ENV = "RTP_RELAY_NO_IO_URING"
# Smallest program that needs liburing's header and library (Debian: liburing-dev); it is
# only compiled and linked, never run.
_LIBURING_PROBE = (
    "#include <liburing.h>\nint main(void) { struct io_uring r; return io_uring_queue_init(2, &r, 0); }\n"
)


def have_liburing() -> bool:
    """True if a C compiler here can compile and link against liburing."""
    if os.environ.get(NO_IO_URING_ENV) == "1":
        return False
    cc = os.environ.get("CC", "cc").split()[0]
    if not shutil.which(cc):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_LIBURING_PROBE)
        result = subprocess.run(
            [cc, src, "-o", os.path.join(tmp, "probe"), "-luring"], capture_output=True, check=False
        )
    return result.returncode == 0


# The relay's io_uring backend (rtp_relay_ext/relay_uring.c) compiles only with liburing;
# without it the engine has the epoll backend alone and a fresh `pip install .` still works.
RELAY_URING = have_liburing()

extensions = [
    # The SIP header splitter: the parse benchmark's profile hot spot (see sbc/sip/_speedups.pyx).
    Extension("sbc.sip._speedups", ["sbc/sip/_speedups.pyx"], extra_compile_args=["-O2"]),
    # Batched SIP datagram I/O with kernel receive timestamps (see sbc/transport/_udpio.pyx).
    Extension("sbc.transport._udpio", ["sbc/transport/_udpio.pyx"], extra_compile_args=["-O2"]),
    Extension(
        "rtp_relay_ext._relay",
        [
            "rtp_relay_ext/_relay.pyx",
            "rtp_relay_ext/relay_engine.c",
            "rtp_relay_ext/relay_uring.c",
            "rtp_relay_ext/rtp_stats.c",
        ],
        include_dirs=["rtp_relay_ext"],
        define_macros=[("RR_HAVE_IO_URING", "1")] if RELAY_URING else [],
        libraries=["uring"] if RELAY_URING else [],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
    ),
    Extension(
        "loadtest.rtp_load._gen",
        ["loadtest/rtp_load/_gen.pyx", "loadtest/rtp_load/gen.c"],
        include_dirs=["loadtest/rtp_load"],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False}))
