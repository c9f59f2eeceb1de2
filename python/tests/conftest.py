"""Fixtures: reference-made PKI, the master identity, and OpenSSL stand-in workers.

The tests load the REAL shared library: set ``DECNET_AGENT_CLIENT_LIB`` to a
build (``cargo build --release --lib``), or let the module find it in the
repository's ``target/release`` (then ``target/debug``).

With ``DECNET_TEST_INSTALLED=1`` they test the INSTALLED package instead (a
wheel from ``pip install ./python``): the source tree is kept off
``sys.path``, ``DECNET_AGENT_CLIENT_LIB`` must be unset, and the library must
be the one inside the installed package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent
#: True when the suite tests the installed wheel rather than the source tree.
INSTALLED = os.environ.get("DECNET_TEST_INSTALLED") == "1"
if not INSTALLED:
    sys.path.insert(0, str(PYTHON_DIR))
sys.path.insert(0, str(HERE))

import decnet_agent_client as dac  # noqa: E402

if INSTALLED:
    _package = Path(dac.__file__).resolve().parent
    assert dac.LIBRARY_ENV not in os.environ, f"unset {dac.LIBRARY_ENV} to test the installed wheel"
    assert PYTHON_DIR not in _package.parents, f"{_package} is the source tree, not an install"
    assert Path(dac.library_path()).parent == _package, dac.library_path()
from openssl_worker import OpenSSLWorker  # noqa: E402
from reference_pki import make_reference_ca, make_reference_leaf  # noqa: E402


def pytest_report_header(config):
    where = "installed package" if INSTALLED else "source tree"
    return [f"decnet_agent_client ({where}) {dac.__file__}, library: {dac.library_path()} "
            f"(version {dac.version()})"]


@pytest.fixture(autouse=True)
def _no_hostname_env(monkeypatch):
    """Tests decide DECNET_VERIFY_HOSTNAME themselves; start every test without it."""
    monkeypatch.delenv("DECNET_VERIFY_HOSTNAME", raising=False)


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory) -> Path:
    """A CA made with Python ``cryptography`` the reference way (RSA-4096 ...)."""
    return make_reference_ca(tmp_path_factory.mktemp("pki") / "ca")


@pytest.fixture(scope="session")
def identity(ca_dir):
    """The master identity: ``Identity.ensure`` creates ``master/`` under the reference CA."""
    with dac.Identity.ensure(ca_dir) as ident:
        yield ident


@pytest.fixture(scope="session")
def rsa_bundle(ca_dir, tmp_path_factory) -> Path:
    """A reference RSA-2048 worker leaf (SAN IP 127.0.0.1) signed by the reference CA."""
    out = tmp_path_factory.mktemp("worker-rsa")
    make_reference_leaf(ca_dir, "worker-rsa", ["127.0.0.1"], out)
    return out


@pytest.fixture(scope="session")
def ecdsa_bundle(ca_dir, tmp_path_factory) -> Path:
    """A worker bundle issued by the library (ECDSA P-256), SAN 127.0.0.1."""
    out = tmp_path_factory.mktemp("worker-ec") / "bundle"
    dac.issue_worker_bundle("worker-ec", ["127.0.0.1"], out, ca_dir=ca_dir)
    return out


@pytest.fixture(scope="session")
def far_bundle(ca_dir, tmp_path_factory) -> Path:
    """A reference worker leaf whose SANs do not include 127.0.0.1."""
    out = tmp_path_factory.mktemp("worker-far")
    make_reference_leaf(ca_dir, "worker-far", ["worker-far.example", "192.0.2.7"], out)
    return out


@pytest.fixture(scope="session")
def foreign_ca_dir(tmp_path_factory) -> Path:
    """Another CA (same subject, different key): nothing it signs is trusted."""
    return make_reference_ca(tmp_path_factory.mktemp("foreign") / "ca", key_kind="p256")


@pytest.fixture
def start_worker():
    """Factory: ``start_worker(bundle_dir, **options)`` -> a running OpenSSLWorker, stopped at teardown."""
    workers = []

    def start(bundle_dir, **options):
        worker = OpenSSLWorker(bundle_dir, **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker, rsa_bundle):
    """An OpenSSL worker presenting the reference RSA leaf."""
    return start_worker(rsa_bundle)


@pytest.fixture
def client(identity, worker):
    """A pinned, hostname-verifying client for ``worker``."""
    with dac.Client.from_host(identity, worker.host_record(pinned=True), verify_hostname=True) as c:
        yield c


@pytest.fixture
def free_port():
    """A loopback port with nothing listening on it."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
