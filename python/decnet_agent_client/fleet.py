"""Many workers driven as one sweep."""

from __future__ import annotations

import json
import threading
from ctypes import byref, c_size_t
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Union

from ._convert import _c_text, _hostname_choice, _invalid, _profile_code, _to_ms
from ._handles import _Handle, _HandleOwner
from ._native import (DECNET_OK, _CConnectionBudget, _CSweepOptions, _CTimeouts, _FleetCallback,
                      _FleetPtr, _OwnedStr, lib)
from .client import HandshakeCounts, _handshake_counts, _set_resumption
from .errors import (
    _ERROR_CLASSES,
    AgentTimeoutError,
    ConnectionLostError,
    DecnetError,
    HTTPStatusError,
    PinMismatchError,
    _check,
    _result_name,
    _take_string,
    last_error,
)
from .identity import Identity


#: The RPC names a fleet accepts.
FLEET_RPCS = ("health", "status", "topology-state", "self-destruct", "deploy", "mutate",
              "teardown", "apply-topology", "teardown-topology")


def _deadline_ms(seconds: float) -> int:
    """A deadline in milliseconds: greater than zero, as the C library requires
    (0 there means "none"), so ``0`` is refused rather than read as 1 ms."""
    ms = _to_ms(seconds, "deadline")
    if ms == 0:
        raise _invalid("deadline", "must be greater than zero")
    return ms


def _error_from_json(error: Dict[str, Any]) -> DecnetError:
    """The typed exception for one host's error object (see :class:`HostResult`)."""
    code = int(error.get("code", 0))
    cls = _ERROR_CLASSES.get(code, DecnetError)
    kw: Dict[str, Any] = {"code": code, "kind": error.get("kind") or _result_name(code)}
    if cls is HTTPStatusError:
        kw["status"] = int(error.get("http_status") or 0)
        kw["body"] = error.get("body")
    elif cls is PinMismatchError:
        kw["expected"] = error.get("expected_fingerprint")
        kw["actual"] = error.get("actual_fingerprint")
    elif cls is ConnectionLostError:
        kw["may_have_reached_worker"] = bool(error.get("may_have_reached_worker"))
    elif cls is AgentTimeoutError:
        kw["phase"] = error.get("timeout_phase")
        kw["may_have_reached_worker"] = bool(error.get("may_have_reached_worker"))
    return cls(error.get("message") or kw["kind"], **kw)


class HostResult:
    """One host's outcome in a fleet call. A host's failure is not raised: it is :attr:`error`.

    Attributes:
        index: the host's position in the fleet.
        uuid, name: from its host record (None when absent).
        address: ``host:port`` dialled.
        elapsed: seconds from the start of its call to its end (0 when not attempted).
        outcome: ``"ok"``, ``"error"`` or ``"not_attempted"`` (the call was stopped first).
        result: the worker's answer (a dict) when ``outcome`` is ``"ok"``, else None.
        error: the typed exception (:class:`PinMismatchError`, :class:`AgentTimeoutError`, ...)
            when ``outcome`` is ``"error"``, else None.
        raw: the JSON object the library returned.
    """

    __slots__ = ("index", "uuid", "name", "address", "elapsed", "outcome", "result", "error", "raw")

    def __init__(self, raw: Dict[str, Any]):
        self.raw = raw
        self.index: int = raw["index"]
        self.uuid: Optional[str] = raw.get("uuid")
        self.name: Optional[str] = raw.get("name")
        self.address: str = raw["address"]
        self.elapsed: float = float(raw.get("elapsed_ms", 0.0)) / 1000.0
        self.outcome: str = raw["outcome"]
        self.result: Optional[Dict[str, Any]] = raw.get("result")
        self.error: Optional[DecnetError] = (
            _error_from_json(raw["error"]) if raw.get("error") is not None else None)

    @property
    def ok(self) -> bool:
        """True when the worker answered with success."""
        return self.outcome == "ok"

    @property
    def not_attempted(self) -> bool:
        """True when the call was stopped before this host was started."""
        return self.outcome == "not_attempted"

    def __repr__(self) -> str:
        detail = self.result if self.ok else (self.error if self.error is not None else "")
        return f"<HostResult {self.index} {self.name or self.address} {self.outcome} {detail!r}>"


class ConnectionBudget(NamedTuple):
    """A fleet's cap on open connections (``max_open_connections``), the connections its
    hosts hold now (``open_connections``), and how many times a host's idle connections
    were closed to stay within the cap (``evictions``)."""

    max_open_connections: int
    open_connections: int
    evictions: int


_Plan = Union[None, Iterable[Any], Dict[Any, Any]]


class Fleet(_HandleOwner):
    """Many workers driven as one: one client per host, kept for the fleet's life.

    ``hosts`` is a list of host records (dicts, as for :meth:`Client.from_host`) or its JSON
    text; duplicate uuids or names raise :class:`InvalidArgumentError` naming both positions.
    A second call within the workers' keep-alive window reuses the first one's connections.

    Every call returns one :class:`HostResult` per planned host, in plan order; a host's
    failure is its result's ``error``, never raised (only a bad plan or option raises).
    ``concurrency`` (hosts in flight at once, default 64) and ``deadline`` (seconds after
    which unfinished hosts report :class:`AgentTimeoutError`) apply per call, or fleet-wide
    through :meth:`set_concurrency` and :meth:`set_deadline`. ``on_result(host_result)`` is
    called as each host completes, on the calling thread; returning True stops the call
    (hosts not started become ``not_attempted``). Thread-safe; a context manager.

    Hosts in a plan are named by index (int) or by uuid or name (str).
    """

    def __init__(self, identity: Identity, hosts: Union[List[Dict[str, Any]], str],
                 verify_hostname: Optional[bool] = None):
        out = _FleetPtr()
        text = hosts if isinstance(hosts, (str, bytes)) else _json_list(hosts, "hosts")
        with identity._handle as id_pointer:
            _check(lib.decnet_fleet_new(id_pointer, _c_text(text, "hosts"),
                                        _hostname_choice(verify_hostname), byref(out)))
        self._handle = _Handle(out, lib.decnet_fleet_free, "fleet")

    def __len__(self) -> int:
        size = c_size_t()
        with self._handle as pointer:
            _check(lib.decnet_fleet_size(pointer, byref(size)))
        return size.value

    def __repr__(self) -> str:
        return "<Fleet closed>" if self.closed else f"<Fleet of {len(self)} hosts>"

    # -- settings -------------------------------------------------------------

    def set_timeouts(self, profile: Union[str, int], *, connect: float, read: float,
                     write: float, pool: float = 5.0) -> None:
        """Sets the timeouts of ``profile`` (seconds) on every host (all but ``pool`` above 0)."""
        value = _CTimeouts(_to_ms(connect, "connect"), _to_ms(read, "read"),
                           _to_ms(write, "write"), _to_ms(pool, "pool"))
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_timeouts(pointer, _profile_code(profile), byref(value)))

    def set_session_resumption(self, on: bool) -> None:
        """Turns TLS 1.3 session resumption on (the default) or off for every host's new
        connections, as :meth:`Client.set_session_resumption` does for one."""
        _set_resumption(self._handle, lib.decnet_fleet_set_session_resumption, on)

    def handshake_counts(self) -> HandshakeCounts:
        """The TLS handshakes of every host, summed: ``(full, resumed)``."""
        return _handshake_counts(self._handle, lib.decnet_fleet_handshake_counts)

    def set_max_open_connections(self, limit: int) -> None:
        """Caps the connections the fleet's calls hold open at once (at least 1; by default
        three quarters of the soft limit on open files when the fleet was made). Before a call
        would go over, the least recently used idle hosts' connections are closed; calling them
        again costs a new connection with a resumed TLS handshake. A call never runs more hosts
        at once than the cap."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit < 2**63:
            raise _invalid("max_open_connections", f"must be a positive integer, not {limit!r}")
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_max_open_connections(pointer, limit))

    def connection_budget(self) -> ConnectionBudget:
        """The cap on open connections, the connections open now, and the evictions so far."""
        out = _CConnectionBudget()
        with self._handle as pointer:
            _check(lib.decnet_fleet_connection_budget(pointer, byref(out)))
        return ConnectionBudget(out.max_open_connections, out.open_connections, out.evictions)

    def set_concurrency(self, concurrency: int) -> None:
        """Sets the default number of hosts in flight at once (1 to 4096; default 64)."""
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_concurrency(pointer, _count(concurrency, "concurrency")))

    def set_deadline(self, seconds: Optional[float]) -> None:
        """Sets (or, with None, clears) the default deadline of a call, in seconds."""
        ms = 0 if seconds is None else _deadline_ms(seconds)
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_deadline_ms(pointer, ms))

    # -- calls ----------------------------------------------------------------

    def call(self, rpc: str, plan: _Plan = None, *, concurrency: Optional[int] = None,
             deadline: Optional[float] = None,
             on_result: Optional[Any] = None) -> List[HostResult]:
        """Runs ``rpc`` (one of :data:`FLEET_RPCS`) over the hosts of ``plan``.

        ``plan``: None for every host (RPCs without arguments); a list of host references
        (same); a dict mapping each host reference to its own arguments (a dict, e.g.
        ``{"config": {...}}`` for deploy); or a list of ``{"host": ref, "args": {...}}``.
        """
        options = _CSweepOptions(
            0 if concurrency is None else _count(concurrency, "concurrency"),
            0 if deadline is None else _deadline_ms(deadline))
        plan_text = _plan_json(plan)
        failure: List[BaseException] = []

        def trampoline(text: bytes, _user_data: Any) -> int:
            if on_result is None or failure:
                return 1 if failure else 0
            try:
                return 1 if on_result(HostResult(json.loads(text))) else 0
            except BaseException as error:  # re-raised once the call returns
                failure.append(error)
                return 1

        callback = _FleetCallback(trampoline)
        out = _OwnedStr()
        with self._handle as pointer:
            result = lib.decnet_fleet_call(pointer, _c_text(rpc, "rpc"), plan_text, byref(options),
                                           callback, None, byref(out))
            if result != DECNET_OK:
                raise last_error(result)
        results = [HostResult(item) for item in json.loads(_take_string(out))]
        if failure:
            raise failure[0]
        return results

    def as_completed(self, rpc: str, plan: _Plan = None, *, concurrency: Optional[int] = None,
                     deadline: Optional[float] = None) -> Iterable[HostResult]:
        """Yields each host's :class:`HostResult` as it completes (the call runs on a helper
        thread); hosts cut short by the deadline, or never started, come last. Closing the
        iterator early stops the call: hosts not yet started are not attempted."""
        import queue

        pending: "queue.Queue[Any]" = queue.Queue()
        stop = threading.Event()
        done = object()

        def queue_result(result: HostResult) -> bool:
            pending.put(result)
            return stop.is_set()

        def run() -> None:
            try:
                results = self.call(rpc, plan, concurrency=concurrency, deadline=deadline,
                                    on_result=queue_result)
                pending.put((done, results, None))
            except BaseException as error:
                pending.put((done, None, error))

        worker = threading.Thread(target=run, name="decnet-fleet-as-completed", daemon=True)
        worker.start()
        seen = set()
        try:
            while True:
                item = pending.get()
                if isinstance(item, tuple) and item and item[0] is done:
                    _, results, error = item
                    if error is not None:
                        raise error
                    for r in results:
                        if r.index not in seen:
                            yield r
                    return
                seen.add(item.index)
                yield item
        finally:
            stop.set()
            worker.join()

    def health(self, hosts: _Plan = None, **options: Any) -> List[HostResult]:
        """``GET /health`` on ``hosts`` (references; None: every host)."""
        return self.call("health", hosts, **options)

    def status(self, hosts: _Plan = None, **options: Any) -> List[HostResult]:
        """``GET /status`` on ``hosts``."""
        return self.call("status", hosts, **options)

    def topology_state(self, hosts: _Plan = None, **options: Any) -> List[HostResult]:
        """``GET /topology/state`` on ``hosts``."""
        return self.call("topology-state", hosts, **options)

    def self_destruct(self, hosts: _Plan = None, **options: Any) -> List[HostResult]:
        """``POST /self-destruct`` on ``hosts``: those workers wipe themselves."""
        return self.call("self-destruct", hosts, **options)

    def deploy(self, configs: Dict[Any, Dict[str, Any]], dry_run: bool = False,
               no_cache: bool = False, **options: Any) -> List[HostResult]:
        """``POST /deploy`` of each host's own config: ``configs`` maps host reference → config."""
        return self.call("deploy", {host: {"config": config, "dry_run": bool(dry_run),
                                           "no_cache": bool(no_cache)}
                                    for host, config in configs.items()}, **options)

    def mutate(self, changes: Dict[Any, "tuple[str, Iterable[str]]"], dry_run: bool = False,
               **options: Any) -> List[HostResult]:
        """``POST /mutate``: ``changes`` maps host reference → ``(decky_id, services)``."""
        return self.call("mutate", {host: {"decky_id": decky, "services": list(services),
                                           "dry_run": bool(dry_run)}
                                    for host, (decky, services) in changes.items()}, **options)

    def teardown(self, deckies: Dict[Any, Optional[str]], **options: Any) -> List[HostResult]:
        """``POST /teardown``: ``deckies`` maps host reference → decky id (None: everything)."""
        return self.call("teardown", {host: {"decky_id": decky} for host, decky in deckies.items()},
                         **options)

    def apply_topology(self, topologies: Dict[Any, Union[Dict[str, Any], str]],
                       **options: Any) -> List[HostResult]:
        """``POST /topology/apply``: ``topologies`` maps host reference → hydrated topology
        (dict or JSON text, sent verbatim; its canonical hash is computed)."""
        return self.call("apply-topology", {host: {"hydrated": hydrated}
                                            for host, hydrated in topologies.items()}, **options)

    def teardown_topology(self, topology_ids: Dict[Any, str], **options: Any) -> List[HostResult]:
        """``POST /topology/teardown``: ``topology_ids`` maps host reference → topology id."""
        return self.call("teardown-topology", {host: {"topology_id": tid}
                                               for host, tid in topology_ids.items()}, **options)


def _count(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise _invalid(argument, f"must be an integer from 1 to 4096, not {value!r}")
    return value


def _json_list(value: Any, argument: str) -> str:
    try:
        return json.dumps(list(value))
    except (TypeError, ValueError) as error:
        raise _invalid(argument, f"cannot be serialised as JSON: {error}") from None


def _plan_json(plan: _Plan) -> Optional[bytes]:
    if plan is None:
        return None
    if isinstance(plan, dict):
        items: List[Any] = [{"host": host, "args": args} for host, args in plan.items()]
    elif isinstance(plan, (str, bytes)):
        raise _invalid("plan", "must be a list or a dict, not a single string")
    else:
        items = list(plan)
    return _c_text(_json_list(items, "plan"), "plan")
