"""Compiled copies of the hot .py modules load only while they match their source (sbc._native)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import re
import sys
import warnings
from pathlib import Path

import pytest

import sbc
import sbc.sip
from sbc import _native

SIP = list(sbc.sip.__path__)

MANIFEST = _native.read_manifest()
needs_build = pytest.mark.skipif(not MANIFEST, reason="built with SBC_NO_COMPILE=1: nothing compiled")


@needs_build
def test_every_compiled_module_of_this_build_is_the_one_imported() -> None:
    for name in MANIFEST:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.endswith(".so"), name
    finder = next(f for f in sys.meta_path if isinstance(f, _native.FreshCompiledFinder))
    assert all(finder.chosen.get(name, "compiled") == "compiled" for name in MANIFEST)


@needs_build
def test_a_source_that_changed_since_the_build_is_run_instead(tmp_path) -> None:
    name = "sbc.sip.uri"
    fresh = _native.FreshCompiledFinder("sbc", MANIFEST)
    spec = fresh.find_spec(name, SIP)
    assert spec is not None and spec.origin.endswith(".so") and fresh.chosen[name] == "compiled"

    stale = _native.FreshCompiledFinder("sbc", {**MANIFEST, name: "0" * 64})  # built from other text
    with pytest.warns(RuntimeWarning, match="sbc.sip.uri: the compiled copy was built from another version"):
        spec = stale.find_spec(name, SIP)
    assert spec is not None and spec.origin.endswith("sbc/sip/uri.py") and stale.chosen[name] == "source"

    # The compiled modules cimport each other: one stale source sends every listed module to its
    # source (a compiled headers beside uri.py fails at import), warning once.
    other = "sbc.sip.headers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = stale.find_spec(other, SIP)
    assert spec is not None and spec.origin.endswith("sbc/sip/headers.py") and stale.chosen[other] == "source"

    unlisted = _native.FreshCompiledFinder("sbc", {})  # an old build's leftover: not in the manifest
    with pytest.warns(RuntimeWarning):
        assert unlisted.find_spec(name, SIP).origin.endswith("uri.py")

    pure = _native.FreshCompiledFinder("sbc", MANIFEST, pure=True)  # SBC_PURE_PYTHON=1: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pure.find_spec(name, SIP).origin.endswith("uri.py")


def test_real_extensions_and_other_packages_are_left_to_the_default_finders() -> None:
    finder = _native.FreshCompiledFinder("sbc", MANIFEST)
    assert importlib.machinery.PathFinder.find_spec("sbc.sip._speedups", SIP) is not None
    assert finder.find_spec("sbc.sip._speedups", SIP) is None  # a .pyx build: no .py twin
    assert finder.find_spec("sbc.sip.errors", SIP) is None  # never compiled
    assert finder.find_spec("routing.limits") is None


def test_manifest_lines_and_hashes(tmp_path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("# comment\nsbc.a 00ff\n\nsbc.b abcd\n")
    assert _native.read_manifest(str(manifest)) == {"sbc.a": "00ff", "sbc.b": "abcd"}
    assert _native.read_manifest(str(tmp_path / "missing")) == {}
    source = tmp_path / "x.py"
    source.write_bytes(b"X = 1\n")
    digest = "0" * 64
    real = hashlib.sha256(b"X = 1\n").hexdigest()
    assert _native.source_matches(str(source), real)
    assert not _native.source_matches(str(source), digest)
    assert not _native.source_matches(str(source), None)
    assert not _native.source_matches(str(tmp_path / "gone.py"), real)
    # A .pxd beside the source (extension types) is part of what the build came from.
    (tmp_path / "x.pxd").write_bytes(b"cdef class X:\n    pass\n")
    assert not _native.source_matches(str(source), real)
    assert _native.source_matches(str(source), _native.source_digest(str(source)))
    assert _native.source_digest(str(source)) != real


PY_TPFLAGS_HEAPTYPE = 1 << 9  # set on classes made by a class statement, not on extension types


@needs_build
def test_every_class_a_pxd_declares_is_an_extension_type_in_this_build() -> None:
    """A .pxd beside a compiled module (sbc/core.pxd, sbc/sip/message.pxd...) is what makes its
    classes extension types, whose methods read their fields as struct members: a build that
    dropped one would still pass every other test, only slower."""
    root = Path(sbc.__file__).resolve().parent.parent
    declared = {}
    for name in MANIFEST:
        pxd = root / (name.replace(".", "/") + ".pxd")
        if pxd.exists():
            declared[name] = re.findall(r"^cdef class (\w+)", pxd.read_text(), re.M)
    assert {"sbc.core", "sbc.sip.message", "sbc.sip.transaction", "sbc.b2bua.engine"} <= set(declared)
    for name, classes in declared.items():
        module = importlib.import_module(name)
        for cls_name in classes:
            cls = getattr(module, cls_name)
            assert not cls.__flags__ & PY_TPFLAGS_HEAPTYPE, f"{name}.{cls_name} is not an extension type"
