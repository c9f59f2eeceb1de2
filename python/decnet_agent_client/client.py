"""A pinned client for one worker's agent."""

from __future__ import annotations

from ctypes import byref
from typing import Any, Dict, Iterable, NamedTuple, Optional, Union

from ._convert import (
    _c_json,
    _c_str_array,
    _c_text,
    _hostname_choice,
    _invalid,
    _profile_code,
    _to_ms,
)
from ._handles import _Handle, _HandleOwner
from ._native import _CHandshakeCounts, _ClientPtr, _CTimeouts, lib
from .errors import ClosedError, DecnetError, _call_for_string, _check
from .identity import Identity


class Timeouts(NamedTuple):
    """One profile's timeouts, in seconds. ``pool`` is kept for the contract's table and has no effect."""

    connect: float
    read: float
    write: float
    pool: float


class HandshakeCounts(NamedTuple):
    """A client's TLS handshakes: ``full`` ones ran the certificate verifier; ``resumed``
    TLS 1.3 ones continued a pinned session and had the pin checked again."""

    full: int
    resumed: int


def _set_resumption(handle: "_Handle", function: Any, on: bool) -> None:
    """``function(pointer, on)``: a client's or a fleet's resumption switch."""
    if not isinstance(on, bool):
        raise _invalid("on", f"must be True or False, not {on!r}")
    with handle as pointer:
        _check(function(pointer, on))


def _handshake_counts(handle: "_Handle", function: Any) -> HandshakeCounts:
    """``function(pointer, &counts)``: a client's or a fleet's handshake counters."""
    out = _CHandshakeCounts()
    with handle as pointer:
        _check(function(pointer, byref(out)))
    return HandshakeCounts(full=out.full, resumed=out.resumed)


class Client(_HandleOwner):
    """A client for one worker agent.

    Make one with :meth:`from_host` or :meth:`connect_to`; no traffic happens
    until the first call (or :meth:`connect`). Every RPC returns the worker's
    JSON answer as a dict (2xx, including the 202 of deploy and mutate) and
    raises a :class:`DecnetError` subclass otherwise.

    Thread-safe: any number of threads may call one client at once; they
    share one keep-alive connection pool. :meth:`close` (or leaving the
    ``with`` block) refuses new calls at once and frees the handle when the
    last call in flight returns.
    """

    def __init__(self, _pointer: Any):
        """Internal: use :meth:`from_host` or :meth:`connect_to`."""
        if not isinstance(_pointer, _ClientPtr) or not _pointer:
            raise TypeError("use Client.from_host() or Client.connect_to()")
        self._handle = _Handle(_pointer, lib.decnet_client_free, "client")

    # -- construction -------------------------------------------------------

    @classmethod
    def from_host(cls, identity: Identity, host_record: Union[Dict[str, Any], str],
                  verify_hostname: Optional[bool] = None) -> "Client":
        """A client for the worker in ``host_record`` (a dict or its JSON text).

        The record's fields: ``address`` (required), ``agent_port`` (missing,
        null or 0: 8765), ``uuid``, ``name`` and ``client_cert_fingerprint``
        (the pin: hex SHA-256 of the worker's certificate, any case, ``:``
        separators allowed; null: no pin). Other fields are ignored.

        ``verify_hostname``: True or False, or None to read the environment
        variable ``DECNET_VERIFY_HOSTNAME`` (``true``/``false``, on when unset)
        now, when the client is made.
        """
        out = _ClientPtr()
        record = _c_json(host_record, "host_record")
        with identity._handle as id_pointer:
            _check(lib.decnet_client_new_from_host_json(
                id_pointer, record, _hostname_choice(verify_hostname), byref(out)))
        return cls(out)

    @classmethod
    def connect_to(cls, identity: Identity, address: str, port: int, pin: Optional[str] = None,
                   verify_hostname: Optional[bool] = None) -> "Client":
        """A client for ``address`` (IPv4, IPv6 or DNS name) and ``port`` (0: 8765).

        ``pin`` is the worker certificate's SHA-256 fingerprint (any case,
        ``:`` separators allowed) or None. ``verify_hostname`` as in
        :meth:`from_host`.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise _invalid("port", f"must be an integer from 0 to 65535, not {port!r}")
        out = _ClientPtr()
        with identity._handle as id_pointer:
            _check(lib.decnet_client_new(
                id_pointer, _c_text(address, "address"), port,
                _c_text(pin, "pin", optional=True), _hostname_choice(verify_hostname), byref(out)))
        return cls(out)

    # -- lifetime -----------------------------------------------------------

    # -- connection and settings --------------------------------------------

    def connect(self) -> None:
        """Opens and verifies one connection now (chain, hostname, pin); the next call reuses it.

        A wrong worker therefore fails here (:class:`PinMismatchError`,
        :class:`TLSError`, :class:`ConnectError`, :class:`AgentTimeoutError`)
        before any request is sent. With TLS 1.3 a worker that rejects our
        client certificate says so only on the first call.
        """
        with self._handle as pointer:
            _check(lib.decnet_client_connect(pointer))

    def describe(self) -> str:
        """``AgentClient(name='…', address='…', port=…)``."""
        with self._handle as pointer:
            return _call_for_string(lib.decnet_client_describe, pointer)

    def __repr__(self) -> str:
        if self.closed:
            return "<Client closed>"
        try:
            return self.describe()
        except (DecnetError, ClosedError):
            return "<Client>"

    def get_timeouts(self, profile: Union[str, int]) -> Timeouts:
        """The timeouts of ``profile`` (``"control"``, ``"deploy"``, ``"topology-apply"``,
        ``"topology-teardown"``), in seconds."""
        out = _CTimeouts()
        with self._handle as pointer:
            _check(lib.decnet_client_get_timeouts(pointer, _profile_code(profile), byref(out)))
        return Timeouts(out.connect_ms / 1000.0, out.read_ms / 1000.0,
                        out.write_ms / 1000.0, out.pool_ms / 1000.0)

    def set_timeouts(self, profile: Union[str, int], *, connect: Optional[float] = None,
                     read: Optional[float] = None, write: Optional[float] = None,
                     pool: Optional[float] = None) -> Timeouts:
        """Changes the timeouts of ``profile`` (seconds) for later calls; omitted ones are kept.

        ``connect``, ``read`` and ``write`` must be greater than zero. Returns
        the profile's new timeouts. ``connect`` bounds the TCP connect plus
        the TLS handshake; ``read`` the wait for the response headers and,
        separately, the whole body; ``write`` sending the request.
        """
        current = self.get_timeouts(profile)
        wanted = Timeouts(
            current.connect if connect is None else connect,
            current.read if read is None else read,
            current.write if write is None else write,
            current.pool if pool is None else pool,
        )
        value = _CTimeouts(
            _to_ms(wanted.connect, "connect"), _to_ms(wanted.read, "read"),
            _to_ms(wanted.write, "write"), _to_ms(wanted.pool, "pool"))
        with self._handle as pointer:
            _check(lib.decnet_client_set_timeouts(pointer, _profile_code(profile), byref(value)))
        return self.get_timeouts(profile)

    def set_max_response_bytes(self, max_bytes: int) -> None:
        """Caps a response body at ``max_bytes`` (default 16 MiB, at least 1); a larger one
        raises :class:`ProtocolError` without being read into memory."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 <= max_bytes <= 0xFFFFFFFFFFFFFFFF:
            raise _invalid("max_bytes", f"must be an integer from 1 to 2**64-1, not {max_bytes!r}")
        with self._handle as pointer:
            _check(lib.decnet_client_set_max_response_bytes(pointer, max_bytes))

    def set_session_resumption(self, on: bool) -> None:
        """Turns TLS 1.3 session resumption on (the default) or off for the connections
        opened from now on. A resumed connection continues a session a full, verified and
        pinned handshake of this same client established, and its pin is checked again;
        off, every new connection pays a full handshake."""
        _set_resumption(self._handle, lib.decnet_client_set_session_resumption, on)

    def handshake_counts(self) -> HandshakeCounts:
        """The TLS handshakes this client has completed: ``(full, resumed)``."""
        return _handshake_counts(self._handle, lib.decnet_client_handshake_counts)

    # -- RPCs ---------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health``: ``{"status": "ok"}``."""
        return self._handle.call_json(lib.decnet_client_health)

    def status(self) -> Dict[str, Any]:
        """``GET /status``: the deployment snapshot (has ``deployed``)."""
        return self._handle.call_json(lib.decnet_client_status)

    def deploy(self, config: Union[Dict[str, Any], str], dry_run: bool = False,
               no_cache: bool = False) -> Dict[str, Any]:
        """``POST /deploy`` of a deployment config (dict or JSON text); success is the worker's 202.

        The config is checked locally first (an object with a non-empty
        ``deckies`` list of objects with a string ``name``), raising
        :class:`InvalidArgumentError` with no traffic otherwise.
        """
        body = _c_json(config, "config")
        return self._handle.call_json(lib.decnet_client_deploy, body, bool(dry_run), bool(no_cache))

    def mutate(self, decky_id: str, services: Iterable[str], dry_run: bool = False) -> Dict[str, Any]:
        """``POST /mutate``: give decky ``decky_id`` the ``services`` (202; 200 with ``dry_run``)."""
        decky = _c_text(decky_id, "decky_id")
        array, count = _c_str_array(services, "services")
        return self._handle.call_json(lib.decnet_client_mutate, decky, array, count, bool(dry_run))

    def teardown(self, decky_id: Optional[str] = None) -> Dict[str, Any]:
        """``POST /teardown`` of decky ``decky_id``, or of everything when it is None."""
        decky = _c_text(decky_id, "decky_id", optional=True)
        return self._handle.call_json(lib.decnet_client_teardown, decky)

    def self_destruct(self) -> Dict[str, Any]:
        """``POST /self-destruct``: the worker wipes itself."""
        return self._handle.call_json(lib.decnet_client_self_destruct)

    def apply_topology(self, hydrated: Union[Dict[str, Any], str],
                       version_hash: Optional[str] = None) -> Dict[str, Any]:
        """``POST /topology/apply`` of ``hydrated`` (dict or JSON text) with ``version_hash``;
        None computes the canonical hash (see :func:`topology_hash`). Uses the topology-apply profile."""
        body = _c_json(hydrated, "hydrated")
        digest = _c_text(version_hash, "version_hash", optional=True)
        return self._handle.call_json(lib.decnet_client_apply_topology, body, digest)

    def teardown_topology(self, topology_id: str) -> Dict[str, Any]:
        """``POST /topology/teardown`` of ``topology_id``. Uses the topology-teardown profile."""
        topology = _c_text(topology_id, "topology_id")
        return self._handle.call_json(lib.decnet_client_teardown_topology, topology)

    def topology_state(self) -> Dict[str, Any]:
        """``GET /topology/state``."""
        return self._handle.call_json(lib.decnet_client_topology_state)


def topology_hash(hydrated: Union[Dict[str, Any], str]) -> str:
    """The canonical topology hash of ``hydrated`` (dict or JSON text), exactly as the worker
    computes it: 64 lowercase hex characters."""
    return _call_for_string(lib.decnet_topology_hash, _c_json(hydrated, "hydrated"))
