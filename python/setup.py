"""Build hooks pyproject.toml cannot express: the version comes from the
crate's Cargo.toml (one source for Rust, C and Python), and the wheel is
tagged abi3 because the shared library it carries uses no Python API."""

import sys
from pathlib import Path

from setuptools import setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - older interpreters build with tomli
    import tomli as tomllib

CARGO_TOML = Path(__file__).resolve().parent.parent / "Cargo.toml"

with CARGO_TOML.open("rb") as manifest:
    VERSION = tomllib.load(manifest)["package"]["version"]

setup(version=VERSION, options={"bdist_wheel": {"py_limited_api": "cp39"}})
