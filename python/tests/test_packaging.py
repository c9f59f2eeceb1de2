"""How the package installs: its version is the crate's, it is typed, and an
installed wheel carries its own library."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from conftest import INSTALLED

import decnet_agent_client as dac

REPO = Path(__file__).resolve().parents[2]


def crate_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert match, "no version in Cargo.toml"
    return match.group(1)


def test_the_library_is_the_crates_version():
    assert dac.version() == crate_version()


def test_the_package_is_typed():
    assert (Path(dac.__file__).parent / "py.typed").is_file()


@pytest.mark.skipif(not INSTALLED, reason="tests an installed wheel (DECNET_TEST_INSTALLED=1)")
def test_the_installed_distribution_is_the_crates_version_and_carries_the_library():
    assert importlib.metadata.version("decnet-agent-client") == crate_version()
    files = {str(f) for f in importlib.metadata.files("decnet-agent-client") or []}
    assert "decnet_agent_client/py.typed" in files
    library = Path(dac.library_path())
    assert f"decnet_agent_client/{library.name}" in files
    assert library.parent == Path(dac.__file__).parent
