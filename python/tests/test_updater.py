"""The updater client and enrollment from Python, against an updater stand-in whose TLS is
Python's ``ssl`` (OpenSSL) and whose multipart parsing is Python's own ``email`` parser.

The stand-in is served with the bundles ``enroll`` wrote, so these tests also check that the
enrollment output is usable by an independent TLS stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import stat
import threading
import time
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

import decnet_agent_client as dac


def parse_multipart(content_type: str, body: bytes) -> Dict[str, Tuple[Optional[str], Optional[str], bytes]]:
    """name -> (filename, content type, payload bytes), parsed by the standard library."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n" + body)
    assert message.is_multipart()
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename(), part.get("Content-Type"), part.get_payload(decode=True))
    return parts


class _UpdaterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.request.settimeout(30)
        self.request.do_handshake()
        cert = self.request.getpeercert()
        subject = dict(item for rdn in cert.get("subject", ()) for item in rdn)
        self.client_cn = subject.get("commonName", "")
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        server: PyUpdater = self.server.updater  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server.requests.append((self.command, self.path, self.client_cn,
                                self.headers.get("Content-Type", ""), body))
        if self.path != "/health" and self.client_cn != "decnet-master":
            return self._send(403, {"detail": "master certificate required"})
        if self.command == "GET" and self.path in ("/health", "/releases"):
            answer = {"releases": server.releases()}
            if self.path == "/health":
                answer.update(status="ok", role="updater")
            return self._send(200, answer)
        if self.command == "POST" and self.path in ("/update", "/update-self"):
            parts = parse_multipart(self.headers["Content-Type"], body)
            tarball = parts["tarball"][2]
            if parts["sha256"][2].decode() != hashlib.sha256(tarball).hexdigest():
                return self._send(400, {"detail": "sha256 mismatch"})
            sha = parts["sha"][2].decode()
            if server.mode == "probe":
                return self._send(409, {"detail": {"error": "probe failed", "stderr": "boom\n",
                                                   "rolled_back": True}})
            if self.path == "/update-self" and server.mode == "drop":
                server.active = sha
                self.close_connection = True
                self.request.shutdown(socket.SHUT_RDWR)
                return None
            server.active = sha
            status = "self_update_queued" if self.path == "/update-self" else "updated"
            return self._send(200, {"status": status, "release": server.releases()[0], "probe": "ok"})
        return self._send(404, {"detail": "Not Found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, updater: "PyUpdater"):
        self.context = context
        self.updater = updater
        super().__init__(("127.0.0.1", 0), _UpdaterHandler)

    def get_request(self):
        sock, address = self.socket.accept()
        self.updater.connections += 1
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address) -> None:
        pass


class PyUpdater:
    """A stand-in updater on 127.0.0.1 presenting ``cert``/``key``, trusting ``ca``."""

    def __init__(self, ca: Path, cert: Path, key: Path):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        self.requests: List[Tuple[str, str, str, str, bytes]] = []
        self.connections = 0
        self.mode: Optional[str] = None
        self.active: Optional[str] = None
        self._server = _Server(context, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def releases(self) -> List[Dict[str, Any]]:
        return [{"slot": "active", "sha": self.active, "installed_at": None},
                {"slot": "prev", "sha": None, "installed_at": None}]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def enrolled(tmp_path, identity, ca_dir):
    """A worker enrolled (with an updater identity) in a copy-free scratch CA: the session's
    reference CA, so the session's master identity is trusted by it."""
    name = f"w{os.getpid()}-{time.monotonic_ns()}"
    record = dac.enroll(name, "127.0.0.1", ["10.9.8.7", "py.example"], ca_dir=ca_dir)
    return record, Path(ca_dir) / "workers" / name


@pytest.fixture
def updater(enrolled, ca_dir):
    record, dir = enrolled
    server = PyUpdater(Path(ca_dir) / "ca.crt", dir / "updater" / "updater.crt", dir / "updater" / "updater.key")
    yield server
    server.stop()


def test_enroll_writes_what_the_spec_says(enrolled, ca_dir):
    record, dir = enrolled
    assert set(record) == {"uuid", "name", "address", "agent_port", "client_cert_fingerprint",
                           "updater_cert_fingerprint"}
    assert record["agent_port"] == 8765 and record["address"] == "127.0.0.1"
    for path, mode in [(dir, 0o700), (dir / "updater", 0o700), (dir / "worker.key", 0o600),
                       (dir / "updater" / "updater.key", 0o600), (dir / "updater" / "updater.crt", 0o600)]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    worker = x509.load_pem_x509_certificate((dir / "worker.crt").read_bytes())
    updater = x509.load_pem_x509_certificate((dir / "updater" / "updater.crt").read_bytes())
    assert worker.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == record["name"]
    assert updater.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "updater@" + record["name"]
    san = updater.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {record["name"], "py.example", "updater@" + record["name"]}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.9.8.7"}
    ku = updater.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert worker.fingerprint(hashes.SHA256()).hex() == record["client_cert_fingerprint"]
    assert updater.fingerprint(hashes.SHA256()).hex() == record["updater_cert_fingerprint"]
    with pytest.raises(dac.InvalidArgumentError, match="already enrolled"):
        dac.enroll(record["name"], "127.0.0.1", ca_dir=ca_dir)
    again = dac.enroll(record["name"], "127.0.0.1", with_updater=False, reissue=True, ca_dir=ca_dir)
    assert again["updater_cert_fingerprint"] is None
    assert not (dir / "updater").exists()


def test_every_call_and_the_exact_multipart_body(identity, enrolled, updater, tmp_path):
    record, _ = enrolled
    with dac.UpdaterClient.from_host(identity, record, port=updater.port, verify_hostname=True) as client:
        assert client.health()["role"] == "updater"
        assert client.get_timeouts("update") == dac.Timeouts(10.0, 180.0, 120.0, 5.0)
        assert client.get_timeouts("control")[:3] == (5.0, 30.0, 10.0)
        for wide in (2**32 + 1, -1):  # never truncated to a valid code by ctypes
            with pytest.raises(dac.InvalidArgumentError, match="profile"):
                client.get_timeouts(wide)
        payload = bytes(range(256)) * 64 + b"\r\n--\r\n\r\n" + os.urandom(5000)
        answer = client.update(payload, "deadbeef")
        assert answer["status"] == "updated" and answer["release"]["sha"] == "deadbeef"
        file = tmp_path / "tree.tar.gz"
        file.write_bytes(payload[::-1])
        client.update(file, "")
        result = client.update_self(str(file), "cafe")
        assert result.connection_closed is False and result.body["status"] == "self_update_queued"
        assert client.releases()["releases"][0]["sha"] == "cafe"
    uploads = [r for r in updater.requests if r[1] in ("/update", "/update-self")]
    assert [u[1] for u in uploads] == ["/update", "/update", "/update-self"]
    for (_, path, cn, ctype, body), sent, sha in zip(
            uploads, [payload, payload[::-1], payload[::-1]], ["deadbeef", "", "cafe"]):
        assert cn == "decnet-master"
        assert ctype.startswith("multipart/form-data; boundary=")
        parts = parse_multipart(ctype, body)
        filename, part_type, data = parts["tarball"]
        assert (filename, part_type) == ("tree.tgz", "application/gzip")
        assert data == sent, "the exact tarball bytes"
        assert parts["sha"][2].decode() == sha
        assert parts["sha256"][2].decode() == hashlib.sha256(sent).hexdigest()
        assert ("confirm_self" in parts) == (path == "/update-self")
        if path == "/update-self":
            assert parts["confirm_self"][2] == b"true"


def test_a_409_detail_is_read_from_the_error(identity, enrolled, updater):
    record, _ = enrolled
    updater.mode = "probe"
    with dac.UpdaterClient.from_host(identity, json.dumps(record), port=updater.port) as client:
        with pytest.raises(dac.HTTPStatusError) as caught:
            client.update(b"bad release", "bad")
    error = caught.value
    assert error.status == 409
    assert (error.update_error, error.update_stderr, error.rolled_back) == ("probe failed", "boom\n", True)
    assert error.detail == {"error": "probe failed", "stderr": "boom\n", "rolled_back": True}


def test_update_self_closed_after_the_request_is_queued(identity, enrolled, updater):
    record, _ = enrolled
    updater.mode = "drop"
    with dac.UpdaterClient.from_host(identity, record, port=updater.port) as client:
        result = client.update_self(b"new updater", "5e1f")
        assert result == dac.SelfUpdateResult(True, None)
        health = client.wait_for_release("5e1f", deadline=20, interval=0.05)
        assert health["releases"][0]["sha"] == "5e1f"
        with pytest.raises(dac.AgentTimeoutError):
            client.wait_for_release("never", deadline=0.3, interval=0.05)


def test_fail_closed_and_master_only(identity, enrolled, updater, ca_dir, tmp_path):
    record, _ = enrolled
    unpinned = dict(record, updater_cert_fingerprint=None)
    with pytest.raises(dac.PinMismatchError, match="no updater pin is recorded"):
        dac.UpdaterClient.from_host(identity, unpinned, port=updater.port)
    assert updater.connections == 0, "the fail-closed path opened no connection"
    # Another CA-signed identity than the master: 403 everywhere but /health.
    other = dac.enroll(f"intruder-{time.monotonic_ns()}", "127.0.0.1", with_updater=False, ca_dir=ca_dir)
    with dac.Identity.load_dir(Path(ca_dir) / "workers" / other["name"]) as intruder, \
            dac.UpdaterClient.connect_to(intruder, "127.0.0.1", updater.port,
                                         record["updater_cert_fingerprint"]) as client:
        assert client.health()["status"] == "ok"
        with pytest.raises(dac.HTTPStatusError) as caught:
            client.releases()
        assert caught.value.status == 403 and caught.value.detail == "master certificate required"
        assert caught.value.rolled_back is None
