# cython: language_level=3
"""Placeholder translation unit so the build compiles Cython from the first commit.

The relay engine (issue 5) replaces this module's contents.
"""


def engine_version():
    """Return the engine's version string (proves the compiled module imports)."""
    return "0.1.0"
