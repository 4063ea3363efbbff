"""Builds the Cython extension modules; everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "rtp_relay_ext._relay",
        ["rtp_relay_ext/_relay.pyx"],
        extra_compile_args=["-O2"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False}))
