"""A stand-in DECNET worker agent whose TLS is Python's ``ssl`` module (OpenSSL).

The reference worker is a Python HTTPS server on OpenSSL, so this is the
interop partner for the library's rustls client. It is an
``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive,
demanding a client certificate signed by the CA (``ssl.CERT_REQUIRED``, the
CA as the only trust anchor), implementing every endpoint of the worker
contract with its status codes, and recording a ledger of
``(method, path, json body)``. Faults can be switched on to provoke errors.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from reference_pki import fingerprint_pem_file

VOLATILE_KEYS = frozenset({
    "created_at", "status_changed_at", "updated_at", "last_seen", "status",
    "version", "last_error", "x", "y", "w", "h",
})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def canonical_hash(hydrated: Any) -> str:
    """The spec's canonical topology hash, ported to Python the way the reference computes it:
    drop the volatile keys everywhere, ``json.dumps(sort_keys=True, separators=(",", ":"))``
    (ASCII-only escapes), SHA-256 of the UTF-8 bytes."""
    text = json.dumps(_strip(hydrated), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "decnet-openssl-standin/1"
    timeout = 30  # idle keep-alive connections are dropped after this long
    # Without TCP_NODELAY, a response written as headers + body meets the client's delayed
    # ACK: ~40 ms per keep-alive request (Nagle). Real workers (asyncio) set TCP_NODELAY.
    disable_nagle_algorithm = True

    # -- connection ---------------------------------------------------------

    def setup(self) -> None:
        worker: OpenSSLWorker = self.server.worker  # type: ignore[attr-defined]
        conn: ssl.SSLSocket = self.request
        conn.settimeout(10)
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError) as error:
            worker._note_handshake_failure(error)
            raise
        worker._note_connection(conn)
        self.timeout = worker.idle_timeout
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.worker._forget_connection(self.request)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass

    # -- requests -----------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        worker: OpenSSLWorker = self.server.worker  # type: ignore[attr-defined]
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        fault, argument = worker.fault
        worker._record(self.command, self.path, body, dict(self.headers.items()))
        if fault == "stall":
            worker._release.wait(argument)
        elif fault == "close":
            # Hang up without answering and without a TLS close_notify.
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        elif fault == "server_error":
            return self._send(500, {"detail": "simulated worker failure"})
        elif fault == "non_json":
            return self._send_raw(200, b"<html>not json</html>", "text/html")
        elif fault == "raw":
            return self._send_raw(200, argument)
        elif fault == "oversized":
            return self._send_raw(200, b'{"pad":"' + b"x" * int(argument) + b'"}')
        if bad_json:
            return self._send(422, {"detail": [{"loc": ["body"], "msg": "JSON decode error",
                                                "type": "value_error"}]})
        status, answer = worker._route(self.command, self.path, body)
        self._send(status, answer)

    def _send(self, status: int, obj: Dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(obj).encode("utf-8"))

    def _send_raw(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        # end_headers() + write(), as one write: one TLS record for the whole answer
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, context: ssl.SSLContext, worker: "OpenSSLWorker", handler=None):
        self.context = context
        self.worker = worker
        super().__init__(address, handler or _Handler)

    def get_request(self):
        sock, address = self.socket.accept()
        # The handshake runs on the connection's own thread (see _Handler.setup),
        # so a client stuck in its handshake never blocks the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address) -> None:
        import sys
        self.worker.errors.append(repr(sys.exc_info()[1]))


class _Server6(_Server):
    address_family = socket.AF_INET6


class OpenSSLWorker:
    """A running OpenSSL worker on 127.0.0.1 with an ephemeral port.

    ``keep_alive=False`` makes it an HTTP/1.0 server that closes the connection after
    every answer.

    Attributes:
        ledger: ``[(method, path, json body or None), ...]`` in arrival order.
        headers: the request headers, parallel to ``ledger``.
        errors: handshake and connection failures seen by the server.
        fault: ``(name, argument)``; name is None (behave), "stall" (wait
            ``argument`` seconds, released by :meth:`stop`), "close" (hang up
            without answering), "server_error" (500), "non_json" (200 with
            HTML), "oversized" (200 with an ``argument``-byte JSON body).
        health_padding: extra bytes of padding in the /health answer.
        idle_timeout: seconds a kept-alive connection may wait for its next
            request before the worker closes it (no close_notify, like
            ``ssl.SSLSocket.close``).
        record: when False, requests are not recorded (memory tests).
    """

    def __init__(self, bundle_dir: Path, *, client_ca: Optional[Path] = None,
                 host: str = "127.0.0.1", port: int = 0, minimum_version: Optional[ssl.TLSVersion] = None,
                 maximum_version: Optional[ssl.TLSVersion] = None, keep_alive: bool = True):
        bundle_dir = Path(bundle_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_REQUIRED
        # The CA as the only trust anchor: no load_default_certs().
        context.load_verify_locations(cafile=str(client_ca or bundle_dir / "ca.crt"))
        context.load_cert_chain(str(bundle_dir / "worker.crt"), str(bundle_dir / "worker.key"))
        if minimum_version is not None:
            context.minimum_version = minimum_version
        if maximum_version is not None:
            context.maximum_version = maximum_version
        self.context = context
        self.bundle_dir = bundle_dir
        self.fingerprint = fingerprint_pem_file(bundle_dir / "worker.crt")
        self.ledger: List[Tuple[str, str, Any]] = []
        self.headers: List[Dict[str, str]] = []
        self.errors: List[str] = []
        self.fault: Tuple[Optional[str], Any] = (None, None)
        self.health_padding = 0
        self.record = True
        self.idle_timeout: float = 30.0
        self.handshakes = 0
        self.resumed = 0  # handshakes that resumed a TLS session (OpenSSL's own count)
        self.peer_certs: List[Optional[dict]] = []
        self.tls_versions: List[Optional[str]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._connections: set = set()
        self._deckies: Optional[List[str]] = None
        self._topology: Optional[Tuple[str, str]] = None
        server_class = _Server6 if ":" in host else _Server
        handler = _Handler if keep_alive else type("_Http10Handler", (_Handler,), {"protocol_version": "HTTP/1.0"})
        self._server = server_class((host, port), context, self, handler)
        self.address = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"openssl-worker-{self.port}", daemon=True)
        self._thread.start()

    # -- test helpers ---------------------------------------------------------

    def host_record(self, *, pinned: bool = True, name: str = "worker-1",
                    pin: Optional[str] = None) -> Dict[str, Any]:
        """The master's host record for this worker (extra fields as the reference has them)."""
        return {
            "uuid": f"uuid-{name}",
            "name": name,
            "address": self.address,
            "agent_port": self.port,
            "client_cert_fingerprint": pin if pin is not None else (self.fingerprint if pinned else None),
            "status": "enrolled",
            "last_heartbeat": None,
        }

    def set_fault(self, name: Optional[str], argument: Any = None) -> None:
        self.fault = (name, argument)

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    # -- server side ------------------------------------------------------------

    def _note_connection(self, conn: ssl.SSLSocket) -> None:
        with self._lock:
            self.handshakes += 1
            self.resumed += conn.session_reused
            self._connections.add(conn)
            self.peer_certs.append(conn.getpeercert())
            self.tls_versions.append(conn.version())

    def _forget_connection(self, conn: ssl.SSLSocket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _note_handshake_failure(self, error: Exception) -> None:
        with self._lock:
            self.errors.append(f"handshake: {error!r}")

    def _record(self, method: str, path: str, body: Any, headers: Dict[str, str]) -> None:
        if self.record:
            with self._lock:
                self.ledger.append((method, path, body))
                self.headers.append(headers)

    def _route(self, method: str, path: str, body: Any) -> Tuple[int, Dict[str, Any]]:
        with self._lock:
            return self._route_locked(method, path, body)

    def _route_locked(self, method: str, path: str, body: Any) -> Tuple[int, Dict[str, Any]]:
        if method == "GET" and path == "/health":
            answer: Dict[str, Any] = {"status": "ok"}
            if self.health_padding:
                answer["padding"] = "x" * self.health_padding
            return 200, answer
        if method == "GET" and path == "/status":
            return 200, {"deployed": self._deckies is not None, "deckies": list(self._deckies or [])}
        if method == "GET" and path == "/topology/state":
            if self._topology is None:
                return 200, {"applied": False}
            topology_id, digest = self._topology
            return 200, {"applied": True, "topology_id": topology_id, "version_hash": digest}
        if method == "POST" and path == "/self-destruct":
            return 200, {"status": "self_destruct_scheduled"}
        if method != "POST" or path not in ("/deploy", "/mutate", "/teardown",
                                            "/topology/apply", "/topology/teardown"):
            return 404, {"detail": "Not Found"}
        if not isinstance(body, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]}
        if path == "/deploy":
            return self._deploy(body)
        if path == "/mutate":
            return self._mutate(body)
        if path == "/teardown":
            target = body.get("decky_id")
            if target is None:
                self._deckies = None
            elif self._deckies is not None:
                self._deckies = [d for d in self._deckies if d != target]
            return 200, {"status": "torn_down", "decky_id": target}
        if path == "/topology/apply":
            return self._apply_topology(body)
        topology_id = body.get("topology_id")
        if not isinstance(topology_id, str):
            return 422, {"detail": [{"loc": ["body", "topology_id"], "msg": "field required",
                                     "type": "value_error.missing"}]}
        if self._topology is not None and self._topology[0] == topology_id:
            self._topology = None
        return 200, {"status": "torn_down", "topology_id": topology_id}

    @staticmethod
    def _invalid(loc: List[Any], msg: str) -> Tuple[int, Dict[str, Any]]:
        return 422, {"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}

    def _deploy(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        config = body.get("config")
        deckies = config.get("deckies") if isinstance(config, dict) else None
        if not isinstance(deckies, list) or not deckies:
            return self._invalid(["body", "config", "deckies"], "at least one decky")
        names = []
        for index, decky in enumerate(deckies):
            name = decky.get("name") if isinstance(decky, dict) else None
            if not isinstance(name, str):
                return self._invalid(["body", "config", "deckies", index, "name"], "field required")
            services = decky.get("services")
            if not (isinstance(services, list) and services and all(isinstance(s, str) for s in services)):
                return self._invalid(["body", "config", "deckies", index, "services"],
                                     "at least one service name")
            names.append(name)
        if body.get("dry_run") is not True:
            self._deckies = names
        return 202, {"status": "accepted", "deckies": names}

    def _mutate(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        decky, services = body.get("decky_id"), body.get("services")
        if not isinstance(decky, str) or not isinstance(services, list):
            return self._invalid(["body"], "decky_id and services are required")
        if body.get("dry_run") is True:
            if self._deckies is None:
                return 404, {"detail": "no active deployment"}
            if decky not in self._deckies:
                return 404, {"detail": f"decky '{decky}' not found"}
            return 200, {"status": "dry_run", "decky_id": decky, "services": services}
        return 202, {"status": "accepted", "decky_id": decky, "services": services}

    def _apply_topology(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        hydrated, claimed = body.get("hydrated"), body.get("version_hash")
        if not isinstance(hydrated, dict) or not isinstance(claimed, str):
            return self._invalid(["body"], "hydrated object and version_hash are required")
        actual = canonical_hash(hydrated)
        if actual != claimed:
            return 400, {"detail": f"version_hash mismatch: computed {actual}, got {claimed}"}
        inner = hydrated.get("topology")
        topology_id = (inner.get("id") if isinstance(inner, dict) else None) or hydrated.get("id") or actual
        if self._topology is not None and self._topology[0] != topology_id:
            return 409, {"detail": f"topology '{self._topology[0]}' is already applied"}
        self._topology = (topology_id, actual)
        return 200, {"status": "applied", "topology_id": topology_id, "version_hash": actual}
