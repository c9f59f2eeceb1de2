"""TLS interop with OpenSSL: pins, hostname verification, trust, and PKI made the reference way."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import decnet_agent_client as dac
from reference_pki import fingerprint_pem_file, make_reference_ca, make_reference_leaf


def _colon(fingerprint: str) -> str:
    return ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2))


# ---------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["lower", "upper", "colon-upper", "colon-lower"])
def test_right_pin_in_every_form(identity, worker, form):
    pin = {"lower": worker.fingerprint, "upper": worker.fingerprint.upper(),
           "colon-upper": _colon(worker.fingerprint).upper(),
           "colon-lower": _colon(worker.fingerprint)}[form]
    with dac.Client.from_host(identity, worker.host_record(pin=pin), verify_hostname=True) as client:
        client.connect()
        assert client.health() == {"status": "ok"}
    with dac.Client.connect_to(identity, "127.0.0.1", worker.port, pin=pin, verify_hostname=True) as client:
        assert client.status()["deployed"] is False


def test_wrong_pin_is_a_pin_mismatch(identity, worker, ecdsa_bundle):
    wrong = fingerprint_pem_file(ecdsa_bundle / "worker.crt")  # a real certificate of the same CA
    record = worker.host_record(pin=_colon(wrong).upper())
    with dac.Client.from_host(identity, record, verify_hostname=True) as client:
        with pytest.raises(dac.PinMismatchError) as caught:
            client.connect()
        error = caught.value
        assert (error.code, error.kind) == (7, "pin_mismatch")
        assert error.expected == wrong  # normalised: lowercase, no colons
        assert error.actual == worker.fingerprint
        assert f"127.0.0.1:{worker.port}" in error.message
        assert wrong[:16] in error.message and worker.fingerprint[:16] in error.message
        # Every call, every time: never treated as transient, and no request is ever sent.
        for call in (client.health, client.teardown, client.self_destruct):
            with pytest.raises(dac.PinMismatchError) as again:
                call()
            assert (again.value.expected, again.value.actual) == (wrong, worker.fingerprint)
    with dac.Client.connect_to(identity, "127.0.0.1", worker.port, pin=wrong.upper()) as client:
        with pytest.raises(dac.PinMismatchError):
            client.health()
    assert worker.ledger == []


def test_pin_checked_on_every_connection(identity, start_worker, rsa_bundle, ecdsa_bundle):
    """A worker that swaps its certificate between connections is caught on the new connection."""
    first = start_worker(rsa_bundle)
    record = first.host_record(pinned=True)
    with dac.Client.from_host(identity, record, verify_hostname=True) as client:
        assert client.health() == {"status": "ok"}
        port = first.port
        first.stop()
        # Another worker, with another certificate of the same CA, takes over the port.
        impostor = None
        for _ in range(50):
            try:
                impostor = start_worker(ecdsa_bundle, port=port)
                break
            except OSError:
                time.sleep(0.1)
        if impostor is None:
            pytest.skip("could not rebind the port")
        with pytest.raises(dac.PinMismatchError) as caught:
            client.health()
        assert caught.value.actual == impostor.fingerprint
        assert impostor.ledger == []


def test_pinned_but_untrusted_certificate_is_still_refused(identity, start_worker, foreign_ca_dir, ca_dir,
                                                           tmp_path):
    fingerprint = make_reference_leaf(foreign_ca_dir, "rogue", ["127.0.0.1"], tmp_path / "rogue")
    rogue = start_worker(tmp_path / "rogue", client_ca=ca_dir / "ca.crt")
    with dac.Client.from_host(identity, rogue.host_record(pin=fingerprint), verify_hostname=False) as client:
        with pytest.raises(dac.TLSError) as caught:
            client.health()
        assert "worker certificate rejected" in caught.value.message
    assert rogue.ledger == []


# ---------------------------------------------------------------------------
# Hostname verification
# ---------------------------------------------------------------------------


@pytest.fixture
def far_worker(start_worker, far_bundle):
    """A worker whose certificate is valid (same CA) but does not name 127.0.0.1."""
    return start_worker(far_bundle)


def test_hostname_on_rejects_a_certificate_without_the_address(identity, far_worker):
    with dac.Client.from_host(identity, far_worker.host_record(), verify_hostname=True) as client:
        with pytest.raises(dac.TLSError) as caught:
            client.connect()
        assert "NotValidForName" in caught.value.message
        with pytest.raises(dac.TLSError):
            client.health()
    assert far_worker.ledger == []


def test_hostname_off_accepts_it_and_still_pins(identity, far_worker, worker):
    with dac.Client.from_host(identity, far_worker.host_record(), verify_hostname=False) as client:
        assert client.health() == {"status": "ok"}
    wrong = far_worker.host_record(pin=worker.fingerprint)
    with dac.Client.from_host(identity, wrong, verify_hostname=False) as client:
        with pytest.raises(dac.PinMismatchError):
            client.health()


@pytest.mark.parametrize("value,accepted", [
    ("false", True), ("FALSE", True), ("0", True), ("true", False), ("True", False), ("1", False), (None, False),
])
def test_hostname_from_the_environment(identity, far_worker, monkeypatch, value, accepted):
    if value is None:
        monkeypatch.delenv("DECNET_VERIFY_HOSTNAME", raising=False)  # unset: on
    else:
        monkeypatch.setenv("DECNET_VERIFY_HOSTNAME", value)
    with dac.Client.from_host(identity, far_worker.host_record(), verify_hostname=None) as client:
        if accepted:
            assert client.health() == {"status": "ok"}
        else:
            with pytest.raises(dac.TLSError):
                client.health()


def test_hostname_environment_is_read_when_the_client_is_made(identity, far_worker, monkeypatch):
    monkeypatch.setenv("DECNET_VERIFY_HOSTNAME", "false")
    client = dac.Client.connect_to(identity, "127.0.0.1", far_worker.port, None)
    monkeypatch.setenv("DECNET_VERIFY_HOSTNAME", "true")
    with client:
        assert client.health() == {"status": "ok"}
    with dac.Client.connect_to(identity, "127.0.0.1", far_worker.port, None) as strict:
        with pytest.raises(dac.TLSError):
            strict.health()
    monkeypatch.setenv("DECNET_VERIFY_HOSTNAME", "maybe")
    with pytest.raises(dac.InvalidArgumentError, match="DECNET_VERIFY_HOSTNAME"):
        dac.Client.connect_to(identity, "127.0.0.1", far_worker.port, None)
    # an explicit choice ignores the environment
    assert dac.Client.connect_to(identity, "127.0.0.1", far_worker.port, None, verify_hostname=False).health()


def test_ipv6_worker(identity, start_worker, ca_dir, tmp_path):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    dac.issue_worker_bundle("worker-v6", ["::1"], tmp_path / "v6", ca_dir=ca_dir)
    worker = start_worker(tmp_path / "v6", host="::1")
    record = worker.host_record(pinned=True)
    for address in ("::1", "[::1]"):
        record["address"] = address
        with dac.Client.from_host(identity, record, verify_hostname=True) as client:
            assert client.health() == {"status": "ok"}
            assert client.describe().endswith(f"address='::1', port={worker.port})")


# ---------------------------------------------------------------------------
# Trust in both directions
# ---------------------------------------------------------------------------


def test_worker_from_another_ca_is_refused(identity, start_worker, foreign_ca_dir, ca_dir, tmp_path):
    make_reference_leaf(foreign_ca_dir, "stranger", ["127.0.0.1"], tmp_path / "stranger")
    stranger = start_worker(tmp_path / "stranger", client_ca=ca_dir / "ca.crt")
    with dac.Client.from_host(identity, stranger.host_record(pinned=False), verify_hostname=True,
                              allow_unpinned=True) as client:
        with pytest.raises(dac.TLSError) as caught:
            client.connect()
        # Every reference CA has the same subject, so a foreign CA's leaf names "our" issuer
        # and fails on its signature rather than as an unknown issuer.
        assert "worker certificate rejected" in caught.value.message


def _picky_worker(start_worker, bundle, tmp_path, maximum, same_subject):
    """An OpenSSL worker that trusts another CA for clients, so it refuses the master."""
    other = tmp_path / "client-ca"
    if same_subject:
        make_reference_ca(other, key_kind="p256")
    else:
        from cryptography.x509.oid import NameOID
        make_reference_ca(other, key_kind="p256", subject=x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else CA")]))
    return start_worker(bundle, client_ca=other / "ca.crt", maximum_version=maximum)


@pytest.mark.parametrize("maximum", [None, ssl.TLSVersion.TLSv1_2], ids=["tls13", "tls12"])
@pytest.mark.parametrize("same_subject", [True, False], ids=["same-subject-ca", "other-subject-ca"])
def test_worker_rejecting_our_certificate(identity, start_worker, rsa_bundle, tmp_path, maximum, same_subject):
    """TLS 1.2: the handshake fails. TLS 1.3: the client's side of the handshake completes
    first and the worker's alert arrives on the first call; either way a TLSError that says
    the worker rejected our certificate. (GETs only here: see the next test for POSTs.)"""
    picky = _picky_worker(start_worker, rsa_bundle, tmp_path, maximum, same_subject)
    with dac.Client.from_host(identity, picky.host_record(), verify_hostname=True) as client:
        if maximum == ssl.TLSVersion.TLSv1_2:
            with pytest.raises(dac.TLSError) as caught:
                client.connect()
        else:
            client.connect()  # TLS 1.3: our side of the handshake succeeds
            with pytest.raises(dac.TLSError) as caught:
                client.health()
        assert "client certificate rejected by the worker" in caught.value.message
        for call in (client.health, client.status, client.topology_state) * 3:
            with pytest.raises(dac.TLSError, match="client certificate rejected"):
                call()
    assert picky.ledger == []
    assert any("CERTIFICATE_VERIFY_FAILED" in e for e in picky.errors), picky.errors


def test_worker_rejecting_our_certificate_on_post_tls13(identity, start_worker, rsa_bundle, tmp_path):
    picky = _picky_worker(start_worker, rsa_bundle, tmp_path, None, False)
    outcomes = []
    for _ in range(40):
        with dac.Client.from_host(identity, picky.host_record(), verify_hostname=True) as client:
            try:
                client.teardown("decky-01")
                outcomes.append("ok")
            except dac.DecnetError as error:
                outcomes.append(type(error).__name__)
    assert picky.ledger == []
    assert set(outcomes) == {"TLSError"}, outcomes


# ---------------------------------------------------------------------------
# PKI made the reference way
# ---------------------------------------------------------------------------


def test_identity_ensure_under_a_reference_ca(ca_dir, identity):
    """The session's identity came from Identity.ensure(<CA made by Python cryptography>)."""
    master = ca_dir / "master"
    for name, mode in (("worker.key", 0o600), ("worker.crt", None), ("ca.crt", None)):
        assert (master / name).is_file(), name
        if mode is not None:
            assert stat.S_IMODE(os.stat(master / name).st_mode) == mode
    assert stat.S_IMODE(os.stat(master).st_mode) == 0o700
    assert (master / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey) and ca_key.key_size == 4096  # untouched reference CA
    cert = x509.load_pem_x509_certificate((master / "worker.crt").read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "decnet-master"
    der = cert.public_bytes(serialization.Encoding.DER)
    assert identity.fingerprint == hashlib.sha256(der).hexdigest()
    assert identity.fingerprint == dac.fingerprint_file(master / "worker.crt")
    assert dac.ensure_ca(ca_dir) == fingerprint_pem_file(ca_dir / "ca.crt")
    # Ensuring again changes nothing.
    before = {p.name: p.read_bytes() for p in master.iterdir()}
    with dac.Identity.ensure(ca_dir) as again:
        assert again.fingerprint == identity.fingerprint
    assert {p.name: p.read_bytes() for p in master.iterdir()} == before


def test_identity_load_from_files(ca_dir, worker):
    master = ca_dir / "master"
    with dac.Identity.load(master / "ca.crt", master / "worker.crt", master / "worker.key") as loaded:
        with dac.Client.from_host(loaded, worker.host_record(), verify_hostname=True) as client:
            assert client.health() == {"status": "ok"}
    with pytest.raises(dac.FileSystemError):
        dac.Identity.load(master / "ca.crt", master / "nope.crt", master / "worker.key")
    with pytest.raises(dac.PKIError):
        dac.Identity.load(master / "ca.crt", master / "worker.crt", master / "ca.crt")  # no key


def test_identity_load_dir(ca_dir, identity, worker, tmp_path):
    with dac.Identity.load_dir(ca_dir / "master") as loaded:
        assert loaded.fingerprint == identity.fingerprint
        with dac.Client.from_host(loaded, worker.host_record(), verify_hostname=True) as client:
            assert client.health() == {"status": "ok"}
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("ca.crt", "worker.crt"):
        (partial / name).write_bytes((ca_dir / "master" / name).read_bytes())
    with pytest.raises(dac.NotEnrolledError) as caught:
        dac.Identity.load_dir(partial)
    assert caught.value.kind == "not_enrolled" and "worker.key" in caught.value.message
    assert sorted(p.name for p in partial.iterdir()) == ["ca.crt", "worker.crt"]  # nothing created


def test_library_issued_ecdsa_bundle(ca_dir, ecdsa_bundle):
    cert = x509.load_pem_x509_certificate((ecdsa_bundle / "worker.crt").read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert "worker-ec" in sans.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(os.stat(ecdsa_bundle / "worker.key").st_mode) == 0o600
    # Python's ssl (OpenSSL) loads the bundle as a server identity
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ecdsa_bundle / "worker.crt", ecdsa_bundle / "worker.key")


def test_issue_worker_bundle_returns_the_pin(ca_dir, tmp_path, identity, start_worker):
    pin = dac.issue_worker_bundle("worker-7", ["127.0.0.1", "worker-7.lan"], tmp_path / "w7",
                                  ca_dir=ca_dir, validity_days=30)
    assert pin == fingerprint_pem_file(tmp_path / "w7" / "worker.crt")
    cert = x509.load_pem_x509_certificate((tmp_path / "w7" / "worker.crt").read_bytes())
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    worker = start_worker(tmp_path / "w7")
    with dac.Client.from_host(identity, worker.host_record(pin=pin.upper())) as client:
        assert client.health() == {"status": "ok"}


def test_pki_errors(tmp_path, ca_dir):
    with pytest.raises(dac.FileSystemError) as caught:
        dac.fingerprint_file(tmp_path / "missing.crt")
    assert caught.value.kind == "io" and "missing.crt" in caught.value.message
    (tmp_path / "junk.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(dac.PKIError) as caught:
        dac.fingerprint_file(tmp_path / "junk.crt")
    assert caught.value.kind == "pki" and "junk.crt" in caught.value.message
    # half a CA: refused, nothing touched
    half = tmp_path / "half"
    half.mkdir(mode=0o700)
    (half / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    with pytest.raises(dac.PKIError, match="ca.key"):
        dac.ensure_ca(half)
    with pytest.raises(dac.PKIError):
        dac.Identity.ensure(half)
    assert sorted(p.name for p in half.iterdir() if not p.name.startswith(".")) == ["ca.crt"]
    for bad_name in ("", "w\u00f6rker", "x" * 65):
        with pytest.raises(dac.InvalidArgumentError, match="name"):
            dac.issue_worker_bundle(bad_name, [], tmp_path / "x", ca_dir=ca_dir)
    with pytest.raises(dac.InvalidArgumentError, match="sans"):
        dac.issue_worker_bundle("w", [""], tmp_path / "x", ca_dir=ca_dir)
    with pytest.raises(dac.InvalidArgumentError, match="validity_days"):
        dac.issue_worker_bundle("w", [], tmp_path / "x", ca_dir=ca_dir, validity_days=10**6)
    assert not (tmp_path / "x").exists()
    with pytest.raises(dac.NotEnrolledError, match="run identity-ensure"):
        dac.issue_worker_bundle("w", [], tmp_path / "x", ca_dir=tmp_path / "no-ca")


def test_fresh_ca_and_default_home(tmp_path, monkeypatch):
    fingerprint = dac.ensure_ca(tmp_path / "new")
    assert fingerprint == fingerprint_pem_file(tmp_path / "new" / "ca.crt")
    assert dac.ensure_ca(tmp_path / "new") == fingerprint  # never regenerated
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with dac.Identity.ensure() as ident:
        assert (tmp_path / "home" / ".decnet" / "ca" / "master" / "worker.crt").is_file()
        assert dac.ensure_ca() == fingerprint_pem_file(tmp_path / "home" / ".decnet" / "ca" / "ca.crt")
        assert len(ident.fingerprint) == 64


# ---------------------------------------------------------------------------
# More interop: reference-made master, certificate validity, names, HTTP/1.0
# ---------------------------------------------------------------------------


def test_reference_master_loaded_and_used(ca_dir, tmp_path, start_worker, rsa_bundle):
    master = tmp_path / "ref-ca" / "master"
    pin = make_reference_leaf(ca_dir, "decnet-master", ["127.0.0.1", "decnet-master"], master)
    for maximum in (None, ssl.TLSVersion.TLSv1_2):
        worker = start_worker(rsa_bundle, maximum_version=maximum)
        with dac.Identity.load(master / "ca.crt", master / "worker.crt", master / "worker.key") as ident, \
                dac.Identity.load_dir(master) as same:
            assert ident.fingerprint == same.fingerprint == pin
            with dac.Client.from_host(ident, worker.host_record(), verify_hostname=True) as client:
                assert client.health() == {"status": "ok"}
                assert client.deploy({"deckies": [{"name": "d", "services": ["ssh"]}]})["status"] == "accepted"
        assert worker.tls_versions == ["TLSv1.3" if maximum is None else "TLSv1.2"]


def test_identity_ensure_keeps_a_reference_master(ca_dir, tmp_path, worker):
    """ensure() on a CA dir whose master bundle the reference made uses it as it is."""
    ref = tmp_path / "ca"
    ref.mkdir(mode=0o700)
    for name in ("ca.key", "ca.crt"):
        (ref / name).write_bytes((ca_dir / name).read_bytes())
        os.chmod(ref / name, 0o600 if name == "ca.key" else 0o644)
    pin = make_reference_leaf(ref, "decnet-master", ["127.0.0.1", "decnet-master"], ref / "master")
    before = {p.name: p.read_bytes() for p in (ref / "master").iterdir()}
    with dac.Identity.ensure(ref) as ident:
        assert ident.fingerprint == pin
        key = serialization.load_pem_private_key((ref / "master" / "worker.key").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        with dac.Client.from_host(ident, worker.host_record(), verify_hostname=True) as client:
            assert client.status()["deployed"] is False
    assert {p.name: p.read_bytes() for p in (ref / "master").iterdir()} == before
    subject = dict(item[0] for item in worker.peer_certs[0]["subject"])
    assert subject == {"commonName": "decnet-master", "organizationName": "DECNET",
                       "organizationalUnitName": "swarm-worker"}


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
def test_worker_certificate_outside_its_validity(identity, ca_dir, tmp_path, start_worker, when):
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(days=10) if when == "expired" else now + datetime.timedelta(days=2)
    make_reference_leaf(ca_dir, "worker-old", ["127.0.0.1"], tmp_path / "w", days=1, not_before=start)
    stale = start_worker(tmp_path / "w")
    with dac.Client.from_host(identity, stale.host_record(), verify_hostname=False) as client:
        with pytest.raises(dac.TLSError) as caught:
            client.connect()
        assert ("Expired" if when == "expired" else "NotValidYet") in caught.value.message
    assert stale.ledger == []


def test_dns_named_worker(identity, ca_dir, tmp_path, start_worker):
    """A worker addressed by a DNS name (localhost, from /etc/hosts) and certified for it."""
    try:
        socket.getaddrinfo("localhost", 1, socket.AF_INET)
    except OSError:
        pytest.skip("localhost does not resolve")
    pin = dac.issue_worker_bundle("worker-dns", ["localhost"], tmp_path / "dns", ca_dir=ca_dir)
    worker = start_worker(tmp_path / "dns")
    record = dict(worker.host_record(pin=pin), address="localhost")
    with dac.Client.from_host(identity, record, verify_hostname=True) as client:
        assert client.health() == {"status": "ok"}
    # the same certificate does not name 127.0.0.1
    with dac.Client.from_host(identity, worker.host_record(pin=pin), verify_hostname=True) as client:
        with pytest.raises(dac.TLSError, match="NotValidForName"):
            client.health()


def test_http10_worker_closing_after_every_answer(identity, start_worker, rsa_bundle):
    worker = start_worker(rsa_bundle, keep_alive=False)
    with dac.Client.from_host(identity, worker.host_record(), verify_hostname=True) as client:
        for _ in range(5):
            assert client.health() == {"status": "ok"}
            assert client.teardown()["status"] == "torn_down"
    assert len(worker.ledger) == 10
    assert worker.handshakes == 10  # a new, verified connection for every call
    assert worker.errors == []


def test_reconnects_resume_against_openssl_and_the_switch_turns_it_off(identity, start_worker, rsa_bundle):
    """OpenSSL issues TLS 1.3 tickets; a reconnect after its close resumes, as both ends count."""
    worker = start_worker(rsa_bundle, keep_alive=False)
    with dac.Client.from_host(identity, worker.host_record(), verify_hostname=True) as client:
        for _ in range(5):
            assert client.health() == {"status": "ok"}
        assert client.handshake_counts() == dac.HandshakeCounts(full=1, resumed=4)
        assert worker.resumed == 4
        client.set_session_resumption(False)
        for _ in range(3):
            assert client.health() == {"status": "ok"}
        assert client.handshake_counts() == (4, 4)
        with pytest.raises(dac.InvalidArgumentError):
            client.set_session_resumption(1)
    assert worker.resumed == 4
    assert worker.handshakes == 8
    assert worker.errors == []


def test_tls12_sessions_are_never_resumed_against_openssl(identity, start_worker, rsa_bundle):
    """OpenSSL offers TLS 1.2 session ids and tickets; the library resumes TLS 1.3 only."""
    worker = start_worker(rsa_bundle, keep_alive=False, maximum_version=ssl.TLSVersion.TLSv1_2)
    with dac.Client.from_host(identity, worker.host_record(), verify_hostname=True) as client:
        for _ in range(3):
            assert client.health() == {"status": "ok"}
        assert client.handshake_counts() == (3, 0)
    assert worker.resumed == 0 and worker.tls_versions == ["TLSv1.2"] * 3


def test_large_answer(client, worker):
    worker.health_padding = 4 * 1024 * 1024
    assert len(client.health()["padding"]) == 4 * 1024 * 1024


def test_a_missing_pin_fails_closed_and_opting_out_is_explicit(identity, worker):
    pinless = {"address": "127.0.0.1", "agent_port": worker.port}
    with pytest.raises(dac.InvalidArgumentError, match="client_cert_fingerprint"):
        dac.Client.from_host(identity, pinless)
    misspelt = dict(pinless, client_cert_fingerprnt="00" * 32)
    with pytest.raises(dac.InvalidArgumentError, match="client_cert_fingerprnt"):
        dac.Client.from_host(identity, misspelt, allow_unpinned=True)
    with pytest.raises(TypeError):
        dac.Client.connect_to(identity, "127.0.0.1", worker.port)  # type: ignore[call-arg]
    with dac.Client.from_host(identity, pinless, allow_unpinned=True) as client:
        assert client.health() == {"status": "ok"}
    with dac.Client.connect_to(identity, "127.0.0.1", worker.port, None) as client:
        assert client.health() == {"status": "ok"}
