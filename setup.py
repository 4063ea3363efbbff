"""Builds the native extension modules; everything else is declared in pyproject.toml.

sbc.sip._speedups      C-speed SIP header splitting (pure-Python fallback in sbc.sip.message)
rtp_relay_ext._relay   the RTP relay engine (C threads + Cython control surface)
loadtest.rtp_load._gen the RTP load generator's native sender/receiver
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O2 for the packet path; -pthread because the engine and generator start threads.
C_FLAGS = ["-O2", "-pthread", "-Wall", "-Wno-unused-function"]

extensions = [
    # The SIP header splitter: the parse benchmark's profile hot spot (see sbc/sip/_speedups.pyx).
    Extension("sbc.sip._speedups", ["sbc/sip/_speedups.pyx"], extra_compile_args=["-O2"]),
    Extension(
        "rtp_relay_ext._relay",
        ["rtp_relay_ext/_relay.pyx", "rtp_relay_ext/relay_engine.c", "rtp_relay_ext/rtp_stats.c"],
        include_dirs=["rtp_relay_ext"],
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
