"""sbc."""

from ._native import install as _install_native

# Before any submodule is imported: compiled copies of .py modules load only while they match
# their source (sbc/_native.py).
_install_native()
