"""Builds the native extension modules; everything else is declared in pyproject.toml.

rtp_relay_ext._relay   the RTP relay engine (C threads + Cython control surface)
loadtest.rtp_load._gen the RTP load generator's native sender/receiver
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O2 for the packet path; -pthread because the engine and generator start threads.
C_FLAGS = ["-O2", "-pthread", "-Wall", "-Wno-unused-function"]

extensions = [
    Extension(
        "rtp_relay_ext._relay",
        ["rtp_relay_ext/_relay.pyx", "rtp_relay_ext/relay_engine.c", "rtp_relay_ext/rtp_stats.c"],
        include_dirs=["rtp_relay_ext"],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False}))
