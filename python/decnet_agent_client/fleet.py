"""Many workers driven as one sweep."""

from __future__ import annotations

import json
import threading
from ctypes import byref, c_size_t
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Union

from ._convert import _c_json, _c_path, _c_text, _hostname_choice, _invalid, _profile_code, _to_ms
from ._handles import _Handle, _HandleOwner
from ._native import (
    DECNET_OK,
    _CConnectionBudget,
    _CSweepOptions,
    _CTimeouts,
    _FleetCallback,
    _FleetPtr,
    _OwnedStr,
    _UpdaterFleetPtr,
    lib,
)
from .client import HandshakeCounts, _handshake_counts, _set_resumption
from .errors import DecnetError, _check, _error_from_json, _take_string, last_error
from .identity import Identity


#: The RPC names a fleet accepts.
FLEET_RPCS = ("health", "status", "topology-state", "self-destruct", "deploy", "mutate",
              "teardown", "apply-topology", "teardown-topology")

#: The RPC names an :class:`UpdaterFleet` sweep accepts.
UPDATER_FLEET_RPCS = ("health", "releases", "update", "update-self", "rollback")


def _deadline_ms(seconds: float) -> int:
    """A deadline in milliseconds: greater than zero, as the C library requires
    (0 there means "none"), so ``0`` is refused rather than read as 1 ms."""
    ms = _to_ms(seconds, "deadline")
    if ms == 0:
        raise _invalid("deadline", "must be greater than zero")
    return ms


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

    def set_sweep_niceness(self, increment: int) -> None:
        """Makes the worker threads of the next sweeps run ``increment`` nice levels (0 to 19;
        default 0) below the calling thread, so their TLS work yields the CPU to its other
        threads (an event loop); ``on_result`` stays on the calling thread, at its priority.
        Linux only; elsewhere no effect. Under other load a sweep then gets less CPU."""
        if isinstance(increment, bool) or not isinstance(increment, int) or increment < 0:
            raise _invalid("increment", f"must be an integer from 0 to 19, not {increment!r}")
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_sweep_niceness(pointer, min(increment, 2**32 - 1)))

    # -- calls ----------------------------------------------------------------

    def call(self, rpc: str, plan: _Plan = None, *, concurrency: Optional[int] = None,
             deadline: Optional[float] = None,
             on_result: Optional[Any] = None) -> List[HostResult]:
        """Runs ``rpc`` (one of :data:`FLEET_RPCS`) over the hosts of ``plan``.

        ``plan``: None for every host (RPCs without arguments); a list of host references
        (same); a dict mapping each host reference to its own arguments (a dict, e.g.
        ``{"config": {...}}`` for deploy); or a list of ``{"host": ref, "args": {...}}``.
        """
        options = _options(concurrency, deadline)
        plan_text = _plan_json(plan)
        with self._handle as pointer:
            text = _run_with_callback(
                lambda callback, out: lib.decnet_fleet_call(
                    pointer, _c_text(rpc, "rpc"), plan_text, byref(options), callback, None, out),
                on_result, HostResult)
        return [HostResult(item) for item in json.loads(text)]

    def deploy_sharded(self, config: Dict[str, Any], *, probe: bool = True,
                       concurrency: Optional[int] = None, deadline: Optional[float] = None,
                       on_result: Optional[Any] = None) -> "List[ShardResult]":
        """Deploys one configuration sharded by its deckies' ``host_uuid``: each host some
        decky names gets the configuration with its own deckies only (``ipvlan`` turned on
        when its record's ``use_ipvlan`` is true, never off); hosts no decky names get
        nothing. With ``probe``, a host whose deploy failed is then asked its status, so
        :attr:`ShardResult.running` says which of its deckies are up. A decky without
        ``host_uuid`` or naming no host of the fleet raises :class:`InvalidArgumentError`
        before any traffic. One :class:`ShardResult` per host that got a shard, in fleet
        order; ``on_result`` as in :meth:`call`."""
        options = _options(concurrency, deadline)
        text_config = _c_json(config, "config")
        with self._handle as pointer:
            text = _run_with_callback(
                lambda callback, out: lib.decnet_fleet_deploy_sharded(
                    pointer, text_config, bool(probe), byref(options), callback, None, out),
                on_result, ShardResult)
        return [ShardResult(item) for item in json.loads(text)]

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


class ShardResult(HostResult):
    """One host's part of :meth:`Fleet.deploy_sharded`: the deploy's :class:`HostResult`,
    plus ``deckies`` (the names it was sent) and, after a failed deploy with the probe,
    ``running`` and ``down`` (lists of decky names) or ``probe_error`` (the probe's
    exception); all None when there was no probe."""

    __slots__ = ("deckies", "running", "down", "probe_error")

    def __init__(self, raw: Dict[str, Any]):
        super().__init__(raw)
        self.deckies: List[str] = list(raw.get("deckies") or [])
        probe = raw.get("probe")
        self.running: Optional[List[str]] = None
        self.down: Optional[List[str]] = None
        self.probe_error: Optional[DecnetError] = None
        if isinstance(probe, dict) and "error" in probe:
            self.probe_error = _error_from_json(probe["error"])
        elif isinstance(probe, dict):
            self.running = list(probe.get("running") or [])
            self.down = list(probe.get("down") or [])


class RolloutHost:
    """One host's outcome in :meth:`UpdaterFleet.push` or :meth:`UpdaterFleet.rollback`.

    Attributes:
        index, uuid, name, address: who it is.
        wave: ``"canary"``, a batch number from 1, or None (no updater pin: never planned).
        status: ``updated``, ``rolled-back``, ``failed``, ``self-updated``, ``self-failed``,
            ``queued`` (update-self accepted, the new release not seen in time),
            ``not-attempted``, ``no-updater-pin`` or ``pin-mismatch``.
        http_status: of the call that decided the status (None: no answer).
        error, stderr, rolled_back: the updater's ``detail`` (or the error's message).
        update_time, self_update_time, verify_time: seconds, or None.
        raw: the JSON object the library returned.
    """

    __slots__ = ("index", "uuid", "name", "address", "wave", "status", "http_status", "error",
                 "stderr", "rolled_back", "update_time", "self_update_time", "verify_time", "raw")

    def __init__(self, raw: Dict[str, Any]):
        def seconds(key: str) -> Optional[float]:
            value = raw.get(key)
            return None if value is None else float(value) / 1000.0

        self.raw = raw
        self.index: int = raw["index"]
        self.uuid: Optional[str] = raw.get("uuid")
        self.name: Optional[str] = raw.get("name")
        self.address: str = raw["address"]
        self.wave: Union[None, str, int] = raw.get("wave")
        self.status: str = raw["status"]
        self.http_status: Optional[int] = raw.get("http_status")
        self.error: Optional[str] = raw.get("error")
        self.stderr: Optional[str] = raw.get("stderr")
        self.rolled_back: Optional[bool] = raw.get("rolled_back")
        self.update_time = seconds("update_ms")
        self.self_update_time = seconds("self_update_ms")
        self.verify_time = seconds("verify_ms")

    def __repr__(self) -> str:
        return f"<RolloutHost {self.index} {self.name or self.address} {self.status}>"


class Rollout:
    """What a push or rollback did: :attr:`hosts` (one :class:`RolloutHost` per host, in
    fleet order), :attr:`counts` (hosts per status) and :attr:`stop`, why it ended:
    ``completed``, ``canary-failed``, ``failure-budget`` or ``stopped``."""

    __slots__ = ("hosts", "counts", "stop", "raw")

    def __init__(self, raw: Dict[str, Any]):
        self.raw = raw
        self.hosts: List[RolloutHost] = [RolloutHost(item) for item in raw["hosts"]]
        summary = dict(raw["summary"])
        self.stop: str = summary.pop("stop")
        self.counts: Dict[str, int] = {key: int(value) for key, value in summary.items()}

    def __repr__(self) -> str:
        return f"<Rollout of {len(self.hosts)} hosts: {self.stop}>"


class UpdaterFleet(_HandleOwner):
    """Many workers' updaters driven as one, pinned always.

    ``hosts`` is a list of host records (or its JSON text): each host's updater at its
    ``address`` and ``updater_port`` (default 8766), pinned to its
    ``updater_cert_fingerprint``; a record without one is kept and reported
    (``no-updater-pin`` in a rollout, :class:`PinMismatchError` in a sweep) but never
    contacted. ``concurrency`` and ``deadline`` as in :class:`Fleet`; ``on_result`` gets
    each host's result as it ends, on the calling thread; returning True starts no new
    host. Thread-safe; a context manager.
    """

    def __init__(self, identity: Identity, hosts: Union[List[Dict[str, Any]], str],
                 verify_hostname: Optional[bool] = None):
        out = _UpdaterFleetPtr()
        text = hosts if isinstance(hosts, (str, bytes)) else _json_list(hosts, "hosts")
        with identity._handle as id_pointer:
            _check(lib.decnet_updater_fleet_new_from_json(
                id_pointer, _c_text(text, "hosts"), _hostname_choice(verify_hostname),
                byref(out)))
        self._handle = _Handle(out, lib.decnet_updater_fleet_free, "updater fleet")

    def __len__(self) -> int:
        size = c_size_t()
        with self._handle as pointer:
            _check(lib.decnet_updater_fleet_size(pointer, byref(size)))
        return size.value

    def __repr__(self) -> str:
        return "<UpdaterFleet closed>" if self.closed else f"<UpdaterFleet of {len(self)} hosts>"

    def set_concurrency(self, concurrency: int) -> None:
        """Sets the default number of hosts in flight at once (1 to 4096; default 64)."""
        with self._handle as pointer:
            _check(lib.decnet_updater_fleet_set_concurrency(
                pointer, _count(concurrency, "concurrency")))

    def set_deadline(self, seconds: Optional[float]) -> None:
        """Sets (or, with None, clears) the default deadline of a sweep or rollout, seconds."""
        ms = 0 if seconds is None else _deadline_ms(seconds)
        with self._handle as pointer:
            _check(lib.decnet_updater_fleet_set_deadline_ms(pointer, ms))

    def call(self, rpc: str, tarball: Any = None, sha: Optional[str] = None, *,
             concurrency: Optional[int] = None, deadline: Optional[float] = None,
             on_result: Optional[Any] = None) -> List[HostResult]:
        """Runs ``rpc`` (one of :data:`UPDATER_FLEET_RPCS`) on every host; ``tarball`` (a
        path, streamed from disk to each host) and ``sha`` only for ``update`` and
        ``update-self``. One :class:`HostResult` per host, in fleet order."""
        options = _options(concurrency, deadline)
        path = _c_path(tarball, "tarball", optional=True)
        sha_text = _c_text(sha, "sha", optional=True)
        with self._handle as pointer:
            text = _run_with_callback(
                lambda callback, out: lib.decnet_updater_fleet_call(
                    pointer, _c_text(rpc, "rpc"), path, sha_text, byref(options), callback,
                    None, out),
                on_result, HostResult)
        return [HostResult(item) for item in json.loads(text)]

    def health(self, **options: Any) -> List[HostResult]:
        """``GET /health`` on every host."""
        return self.call("health", **options)

    def releases(self, **options: Any) -> List[HostResult]:
        """``GET /releases`` on every host."""
        return self.call("releases", **options)

    def push(self, tarball: Any, sha: str, *, sha256: Optional[str] = None,
             policy: Optional[Dict[str, Any]] = None, concurrency: Optional[int] = None,
             deadline: Optional[float] = None, on_result: Optional[Any] = None) -> Rollout:
        """Pushes the release tarball at ``tarball`` (git SHA ``sha``) under ``policy``, a
        dict such as ``{"canary": 1, "batch": "10%", "max_failures": 5, "pause_between": 0,
        "self_update": True, "verify": 120}`` (seconds; None: the defaults; unknown keys
        raise). The canary goes first and any failure there stops the rollout; then
        batches; once failures reach ``max_failures`` no new host starts, hosts in flight
        finish, the rest are ``not-attempted``. Agent first, updater second (only after
        success), then ``verify``. ``sha256``, when given, must be the file's digest: it is
        checked once before any traffic. ``on_result`` gets each :class:`RolloutHost`.
        Read :attr:`Rollout.stop` for how it ended: a halted rollout is not raised."""
        options = _options(concurrency, deadline)
        path = _c_path(tarball, "tarball")
        sha_text = _c_text(sha, "sha")
        digest = _c_text(sha256, "sha256", optional=True)
        policy_text = None if policy is None else _c_json(policy, "policy")
        with self._handle as pointer:
            text = _run_with_callback(
                lambda callback, out: lib.decnet_updater_fleet_push(
                    pointer, path, sha_text, digest, policy_text, byref(options), callback,
                    None, out),
                on_result, RolloutHost)
        return Rollout(json.loads(text))

    def rollback(self, *, policy: Optional[Dict[str, Any]] = None,
                 concurrency: Optional[int] = None, deadline: Optional[float] = None,
                 on_result: Optional[Any] = None) -> Rollout:
        """Rolls every host back to its previous release under ``policy`` (canary, batches
        and failure budget as in :meth:`push`; ``self_update`` and ``verify`` refused)."""
        options = _options(concurrency, deadline)
        policy_text = None if policy is None else _c_json(policy, "policy")
        with self._handle as pointer:
            text = _run_with_callback(
                lambda callback, out: lib.decnet_updater_fleet_rollback(
                    pointer, policy_text, byref(options), callback, None, out),
                on_result, RolloutHost)
        return Rollout(json.loads(text))


def _options(concurrency: Optional[int], deadline: Optional[float]) -> _CSweepOptions:
    return _CSweepOptions(
        0 if concurrency is None else _count(concurrency, "concurrency"),
        0 if deadline is None else _deadline_ms(deadline))


def _run_with_callback(invoke: Callable[[Any, Any], int], on_result: Optional[Any],
                       wrap: Callable[[Dict[str, Any]], Any]) -> str:
    """Runs ``invoke(callback, out)`` (a C call taking a ``decnet_fleet_callback`` and an
    out-string), handing each host's object to ``on_result`` as ``wrap(object)``; returns
    the out-string. An exception in ``on_result`` stops the call and is raised after it."""
    failure: List[BaseException] = []

    def trampoline(text: bytes, _user_data: Any) -> int:
        if on_result is None or failure:
            return 1 if failure else 0
        try:
            return 1 if on_result(wrap(json.loads(text))) else 0
        except BaseException as error:  # re-raised once the call returns
            failure.append(error)
            return 1

    callback = _FleetCallback(trampoline)
    out = _OwnedStr()
    result = invoke(callback, byref(out))
    if result != DECNET_OK:
        raise last_error(result)
    text = _take_string(out)
    if failure:
        raise failure[0]
    return text


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
