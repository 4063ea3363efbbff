"""Compiled copies of pure-Python modules, used only while they match their source.

``setup.py`` compiles the signalling hot path's ``.py`` modules with Cython, unchanged, and
writes each source's SHA-256 (with its ``.pxd``, see :func:`source_digest`) into
``_native_sources.txt``. A compiled module sits beside its ``.py`` and Python's import system
prefers it, so an edited source would silently lose to the build made before the edit. The
finder installed here (from ``sbc/__init__.py``, before any submodule is imported) loads a
compiled module only while its ``.py`` and ``.pxd`` still have the hash it was built from, and
the ``.py`` otherwise, with one warning naming the module and the rebuild command. The compiled
modules ``cimport`` each other (a ``.pxd`` declares types and C functions another module calls
directly), so they load together or not at all: one stale source makes every listed module run
its source, since a compiled module beside the source of one it cimports fails at import
("size changed, may indicate binary incompatibility").
``SBC_PURE_PYTHON=1`` loads every source (a profiler such as py-spy sees only Python frames, and
a compiled module's functions show as one native frame).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from importlib.machinery import ModuleSpec

PURE_PYTHON_ENV = "SBC_PURE_PYTHON"
MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native_sources.txt")
REBUILD_HINT = "pip install -e . (or python setup.py build_ext --inplace)"


def read_manifest(path: str = MANIFEST) -> dict[str, str]:
    """Module name -> SHA-256 of the source it was compiled from; {} without a manifest."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, digest = line.partition(" ")
            out[name] = digest.strip()
    return out


def source_digest(source: str) -> str:
    """SHA-256 of what a compiled copy of ``source`` (a .py) is built from: the .py, and the .pxd
    beside it when there is one (it declares the module's extension types, so a changed .pxd
    changes the build as much as a changed .py). ``setup.py`` writes these into the manifest.
    Raises OSError when the .py cannot be read."""
    h = hashlib.sha256()
    with open(source, "rb") as f:
        h.update(f.read())
    pxd = source[:-3] + ".pxd"
    if os.path.exists(pxd):
        with open(pxd, "rb") as f:
            h.update(b"\0pxd\0" + f.read())
    return h.hexdigest()


def source_matches(source: str, digest: str | None) -> bool:
    """Whether ``source`` (with its .pxd) has :func:`source_digest` ``digest`` (False when either
    is missing)."""
    if not digest:
        return False
    try:
        return source_digest(source) == digest
    except OSError:
        return False


class FreshCompiledFinder(importlib.abc.MetaPathFinder):
    """For a module of ``package`` found as an extension with a ``.py`` beside it: that
    extension while the manifest's hash matches the ``.py`` (and ``pure`` is off), else the
    ``.py``. Real extensions (a ``.pyx`` build with no ``.py`` twin) are left to the default
    finders. ``chosen`` records the decision per module, for tests and diagnostics."""

    def __init__(
        self, package: str, manifest: dict[str, str], *, pure: bool = False, root: str | None = None
    ) -> None:
        self.prefix = package + "."
        self.manifest = manifest
        self.pure = pure
        self.chosen: dict[str, str] = {}
        # The directory holding the package, where a listed module's source is found by its name.
        self.root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._stale: list[str] | None = None

    def stale(self) -> list[str]:
        """Listed modules whose source (or .pxd) changed since the build; checked once, with one
        warning, since they load together or not at all (see the module docstring)."""
        if self._stale is None:
            self._stale = [
                name
                for name, digest in self.manifest.items()
                if not source_matches(os.path.join(self.root, *name.split(".")) + ".py", digest)
            ]
            if self._stale and not self.pure:
                warnings.warn(
                    f"{', '.join(self._stale)}: the compiled copy was built from another version of the "
                    f"source; running every compiled module's source (slower: they cimport each other) "
                    f"until it is rebuilt: {REBUILD_HINT}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._stale

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:  # noqa: ANN001
        if not fullname.startswith(self.prefix):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        origin = spec.origin or ""
        directory, filename = os.path.split(origin)
        source = os.path.join(directory, filename.split(".", 1)[0] + ".py")
        if not os.path.exists(source):
            return None
        listed = fullname in self.manifest
        # stale() has hashed every listed source, this one's included: no second hash here.
        if not self.pure and listed and not self.stale():
            self.chosen[fullname] = "compiled"
            return spec
        if not self.pure and not listed:  # an old build's leftover (a stale listed one warned above)
            warnings.warn(
                f"{fullname}: the compiled copy was built from another version of {source}; "
                f"running the source (slower) until it is rebuilt: {REBUILD_HINT}",
                RuntimeWarning,
                stacklevel=2,
            )
        self.chosen[fullname] = "source"
        return importlib.util.spec_from_file_location(fullname, source)


def install(package: str = "sbc") -> FreshCompiledFinder:
    """Put the finder first on ``sys.meta_path`` (once per package); return it."""
    for finder in sys.meta_path:
        if isinstance(finder, FreshCompiledFinder) and finder.prefix == package + ".":
            return finder
    finder = FreshCompiledFinder(package, read_manifest(), pure=os.environ.get(PURE_PYTHON_ENV) == "1")
    sys.meta_path.insert(0, finder)
    return finder
