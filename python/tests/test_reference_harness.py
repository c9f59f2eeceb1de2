"""The reference master's own client tests, run against our aio classes.

The reference master is not fetched here: PyPI's ``decnet`` (1.0.0) is older
than the reference's master, and installing the master's checkout needs
``netfilterqueue`` built from source. Point ``DECNET_REFERENCE_DIR`` at a checkout, and
``DECNET_REFERENCE_PYTHON`` at an interpreter that has its test needs
(uvicorn, fastapi, httpx, pytest-asyncio, ...; default: this one). The
reference's test files run unchanged, in a child pytest, with
``decnet.swarm.client`` and ``decnet.swarm.updater_client`` re-exporting
:mod:`decnet_agent_client.aio` (``reference_shim/decnet_aio_shim.py``);
each drives a real uvicorn agent over mutual TLS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import decnet_agent_client as dac

HERE = Path(__file__).resolve().parent
REFERENCE = os.environ.get("DECNET_REFERENCE_DIR")
PYTHON = os.environ.get("DECNET_REFERENCE_PYTHON", sys.executable)
#: The reference's client test files that drive a real uvicorn agent, with their test counts.
FILES = {
    "tests/swarm/test_client_agent_roundtrip.py": 4,
    "tests/swarm/test_client_mutate.py": 2,
}

pytestmark = pytest.mark.skipif(
    not REFERENCE, reason="DECNET_REFERENCE_DIR is unset: no checkout of the reference "
    "master (github:4nt11/DECNET) to run its client tests against")


def _missing_modules() -> str:
    probe = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if not u.find_spec(m)))"
    needed = ["uvicorn", "fastapi", "httpx", "pytest_asyncio", "cryptography"]
    out = subprocess.run([PYTHON, "-c", probe, *needed], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()


def test_reference_client_tests_pass_against_the_aio_classes():
    missing = _missing_modules()
    if missing:
        pytest.skip(f"{PYTHON} lacks {missing} (the reference agent's needs)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE / "reference_shim"), str(Path(dac.__file__).resolve().parent.parent), REFERENCE])
    env.setdefault(dac.LIBRARY_ENV, dac.library_path())
    run = subprocess.run(
        [PYTHON, "-m", "pytest", "-p", "decnet_aio_shim", "-o", "addopts=", "-p", "no:cacheprovider",
         "-q", *FILES],
        cwd=REFERENCE, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    assert "decnet.swarm.client.AgentClient is decnet_agent_client.aio.AgentClient" in report, report
    assert "updater_client.UpdaterClient is decnet_agent_client.aio.UpdaterClient" in report, report
    passed = re.search(r"(\d+) passed", report)
    assert run.returncode == 0 and passed and int(passed.group(1)) == sum(FILES.values()), report
