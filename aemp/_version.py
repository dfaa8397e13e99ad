# The package's version, in a leaf: aemp/__init__.py exports it, the
# network names it in its greeting (the provider "aemp-py-<version>") and
# the CLI prints it. Nothing inside the package imports aemp/__init__.py
# for it. Keep it equal to the version in pyproject.toml.

from __future__ import annotations

__version__ = "0.1.0"
