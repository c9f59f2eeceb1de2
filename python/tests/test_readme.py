"""The README's Python example runs, unchanged, against the OpenSSL worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INSTALLED

import decnet_agent_client as dac

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO = PYTHON_DIR.parent
HEADING = "## From Python"


def readme_example() -> "tuple[str, Path]":
    """The first ```python block under '## From Python' in README.md."""
    source = REPO / "README.md"
    text = source.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(HEADING)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '{HEADING}' section in README.md"
    block = re.search(r"^```python[ \t]*\n(.*?)^```", match.group(1), re.M | re.S)
    assert block, f"README.md has '{HEADING}' but no ```python block under it"
    return block.group(1), source


def run_example(code: str, ca_dir: Path, host: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({
        "DECNET_CA_DIR": str(ca_dir),
        "DECNET_HOST_JSON": json.dumps(host),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if not INSTALLED:  # installed: a plain import, as a user's program does it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PYTHON_DIR), env.get("PYTHONPATH")]))
        env[dac.LIBRARY_ENV] = dac.library_path()
    env.pop("DECNET_VERIFY_HOSTNAME", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_readme_example_runs(ca_dir, worker):
    code, source = readme_example()
    run = run_example(code, ca_dir, worker.host_record(pinned=True))
    assert run.returncode == 0, f"{source}:\n{run.stdout}\n{run.stderr}"
    assert "{'status': 'ok'}" in run.stdout
    assert "accepted: ['decky-01']" in run.stdout
    assert "worker answered 404" in run.stdout
    assert [(method, path) for method, path, _ in worker.ledger] == [
        ("GET", "/health"), ("GET", "/status"), ("POST", "/deploy"), ("POST", "/mutate")]
    assert worker.ledger[3][2] == {"decky_id": "decky-99", "services": ["http"], "dry_run": True}


def test_readme_example_catches_a_pin_mismatch(ca_dir, worker, ecdsa_bundle):
    from reference_pki import fingerprint_pem_file

    code, _source = readme_example()
    wrong = fingerprint_pem_file(ecdsa_bundle / "worker.crt")
    run = run_example(code, ca_dir, worker.host_record(pin=wrong))
    assert run.returncode == 1
    assert f"is not the enrolled worker: expected {wrong[:16]}…, got {worker.fingerprint[:16]}…" in run.stderr
    assert worker.ledger == []


def test_readme_example_passes_mypy_strict(tmp_path):
    """The example type-checks with ``mypy --strict`` against the package's
    annotations (``py.typed``): the installed one, or the source tree's."""
    pytest.importorskip("mypy", reason="mypy is not installed (.ci/install installs it)")
    code, source = readme_example()
    example = tmp_path / "readme_example.py"
    example.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    if not INSTALLED:
        env["MYPYPATH"] = str(PYTHON_DIR)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
         str(example)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{source}'s Python example:\n{run.stdout}\n{run.stderr}"
