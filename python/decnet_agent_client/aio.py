"""asyncio front with the reference master's names: switching is one import.

``AgentClient``, ``UpdaterClient``, ``MasterIdentity``,
``ensure_master_identity`` and ``FingerprintMismatchError`` have the
constructors, methods and return shapes of the reference's
``decnet.swarm.client`` and ``decnet.swarm.updater_client``::

    async with AgentClient(host=host) as agent:
        await agent.health()

The worker's pin is checked inside every TLS handshake (no probe
connection). An :class:`AgentClient` call and an :class:`AsyncFleet` sweep
run on the library's own threads and complete through a file descriptor the
loop watches (``add_reader``): no Python runs on another thread, so the loop
never waits for the GIL. (Except logging: when a handler of the
``decnet_agent_client`` logger, or of the root logger, wants INFO, the library's events
are logged on the threads doing the work, which take the GIL; in an asyncio service keep
that logger at WARNING.) Updater calls run on a bounded thread pool. Both
are bounded by :func:`set_max_workers` (default 4 threads per core, at most
64), and the library's threads run 10 nice levels below the loop's (Linux),
so their TLS work yields it the CPU.

Cancellation: cancelling the awaiting task returns at once with
``CancelledError``, but a call already started runs to its end on its
thread (its result is dropped). A cancelled GET therefore changes nothing;
a cancelled POST (deploy, mutate, teardown, self-destruct, topology,
update) may still reach the worker and run there: treat it like a
timed-out POST, not as "not sent". A call still queued for a thread when
it is cancelled is withdrawn and never sent.

Errors are those of :mod:`decnet_agent_client` and also what reference
callers catch: ``FingerprintMismatchError`` (a ``RuntimeError`` with
``host``, ``expected``, ``actual``) on a pin mismatch, and, when ``httpx``
is installed (it is not required), ``httpx.HTTPStatusError`` (with a
``response`` whose ``status_code`` is the worker's), ``httpx.ConnectError``,
``httpx.TimeoutException`` and ``httpx.RemoteProtocolError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import json
import os
import pathlib
import threading
import time
from dataclasses import dataclass
from typing import (Any, AsyncGenerator, AsyncIterator, Callable, Dict, List, Optional, Tuple,
                    TypeVar, Union, cast)

from . import _completions
from . import errors as _errors
from ._convert import _c_json, _c_text
from .client import Client
from .errors import _error_from_json
from .fleet import Fleet, HostResult, _Plan, _plan_json
from .fleet import _options as _sweep_options
from .identity import Identity
from .updater import UpdaterClient as _SyncUpdater

_httpx: Any
try:  # the classes reference callers catch; httpx itself is optional (and untyped here)
    _httpx = importlib.import_module("httpx")
except ImportError:  # pragma: no cover - exercised when httpx is absent
    _httpx = None

__all__ = [
    "AgentClient",
    "UpdaterClient",
    "MasterIdentity",
    "ensure_master_identity",
    "FingerprintMismatchError",
    "HTTPStatusError",
    "Response",
    "AsyncFleet",
    "set_max_workers",
]

_T = TypeVar("_T")

#: The reference's default CA folder.
DEFAULT_CA_DIR = pathlib.Path(os.path.expanduser("~")) / ".decnet" / "ca"

# -- the thread pool ----------------------------------------------------------

_pool_lock = threading.Lock()
_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
#: Threads in flight at once: a few per core. More threads than cores doing TLS and key
#: work starve the loop's own thread (measured: 64 threads on 2 cores stalled it 0.1-1.2 s
#: during a 256-host gather, 4 threads 50-65 ms, on a machine at load 13-22).
_max_workers = min(64, 4 * (os.cpu_count() or 1))


def set_max_workers(count: int) -> None:
    """Sets how many calls run at once (1 to 1024), on the pool and on each loop's
    completion threads; takes effect for new calls."""
    global _pool, _max_workers
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1024:
        raise _errors.InvalidArgumentError(
            f"invalid argument `count`: must be an integer from 1 to 1024, not {count!r}", code=1)
    with _pool_lock:
        old, _pool, _max_workers = _pool, None, count
    if old is not None:
        old.shutdown(wait=False)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_max_workers, thread_name_prefix="decnet-aio")
        return _pool


async def _off_loop(owner: Any, function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` on the pool; a library error becomes the aio class, named after
    ``owner``'s address."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_executor(), functools.partial(function, *args))
    except _errors.DecnetError as error:
        raise _translate(error, owner) from error


#: How many nice levels below the loop's thread the completion threads run (Linux).
_COMPLETION_NICENESS = 10


def _queue() -> _completions.CompletionQueue:
    """The running loop's completion queue."""
    return _completions.queue_for(asyncio.get_running_loop(), _max_workers,
                                  _COMPLETION_NICENESS)


async def _complete(owner: Any, client: Client, rpc: bytes, args_json: Optional[bytes]) -> Any:
    """``rpc`` of ``client`` on the running loop's completion queue; a library error becomes
    the aio class, named after ``owner``'s address."""
    queue = _queue()
    await queue.admit()
    try:
        return await queue.call(client, rpc, args_json)
    except _errors.DecnetError as error:
        raise _translate(error, owner) from error


async def _close_off_loop(owner: Any) -> None:
    """``owner.close()`` on the pool (an updater client or a fleet): closing connections is
    work, and the clients of a gather close together. Shielded: once handed to the pool it runs even if the awaiting
    task is cancelled (an unshielded executor future not yet started would be dropped).
    The handle is freed once a call still running on the pool returns."""
    closing = asyncio.get_running_loop().run_in_executor(_executor(), owner.close)
    await asyncio.shield(closing)


# -- errors ---------------------------------------------------------------------


class FingerprintMismatchError(_errors.PinMismatchError, RuntimeError):
    """The worker presented a certificate whose SHA-256 is not the pinned one (or no pin
    is recorded where one is required). ``host`` is ``address:port``."""

    def __init__(self, host: str, expected: str, actual: str, *, message: Optional[str] = None,
                 code: Optional[int] = 7):
        super().__init__(message or (f"agent {host}: cert fingerprint mismatch "
                                     f"(expected={expected[:16]}…, got={actual[:16]}…)"),
                         expected=expected, actual=actual, code=code, kind="pin_mismatch")
        self.host = host


def _combined(name: str, ours: "type[_errors.DecnetError]", httpx_name: str) -> Any:
    """``ours`` alone, or a class that is also ``httpx.<httpx_name>`` when httpx is installed."""
    bases: Tuple[type, ...] = (ours,)
    if _httpx is not None:
        bases += (getattr(_httpx, httpx_name),)
    return type(name, bases, {"__doc__": f"{ours.__name__}, also httpx.{httpx_name} when "
                                         "httpx is installed.", "__module__": __name__})


def _init_as(cls: type, error: _errors.DecnetError, request: Any) -> BaseException:
    """A new ``cls`` carrying ``error``'s attributes (and httpx's ``request``)."""
    made: Any = cls.__new__(cls, str(error))
    made.args = (str(error),)
    made.__dict__.update(error.__dict__)
    if _httpx is not None:
        made._request = request  # what httpx.RequestError.request reads
    result: BaseException = made
    return result


HTTPStatusError: Any = _combined("HTTPStatusError", _errors.HTTPStatusError, "HTTPStatusError")
_ConnectError: Any = _combined("ConnectError", _errors.ConnectError, "ConnectError")
_TLSError: Any = _combined("TLSError", _errors.TLSError, "ConnectError")
_TimeoutError: Any = _combined("AgentTimeoutError", _errors.AgentTimeoutError, "TimeoutException")
_LostError: Any = _combined("ConnectionLostError", _errors.ConnectionLostError,
                            "RemoteProtocolError")
_TRANSLATED: Dict[type, Any] = {
    _errors.ConnectError: _ConnectError,
    _errors.TLSError: _TLSError,
    _errors.AgentTimeoutError: _TimeoutError,
    _errors.ConnectionLostError: _LostError,
}


class Response:
    """The shape of the ``httpx.Response`` the reference's updater calls return:
    ``status_code`` (0: the updater closed the connection, as ``/update-self`` does),
    ``content``, ``text``, ``json()`` and ``raise_for_status()``."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    def raise_for_status(self) -> "Response":
        """Raises :data:`HTTPStatusError` for a 4xx or 5xx answer."""
        if self.status_code >= 400:
            error = _errors.HTTPStatusError(f"HTTP {self.status_code}", status=self.status_code,
                                            body=self.text, code=9, kind="http_status")
            raise _translate(error, None)
        return self

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


def _translate(error: _errors.DecnetError, owner: Any) -> BaseException:
    """The aio exception for a library error raised by a call of ``owner``."""
    where = getattr(owner, "_where", "") if owner is not None else ""
    if isinstance(error, _errors.PinMismatchError):
        return FingerprintMismatchError(where, error.expected or "", error.actual or "",
                                        message=str(error), code=error.code)
    request = None
    if _httpx is not None:
        request = _httpx.Request("GET", f"https://{where or 'worker'}/")
    if isinstance(error, _errors.HTTPStatusError):
        made = _init_as(HTTPStatusError, error, request)
        if _httpx is not None:
            setattr(made, "request", request)
            setattr(made, "response", _httpx.Response(
                error.status, content=(error.body or "").encode("utf-8"), request=request))
        return made
    cls = _TRANSLATED.get(type(error))
    return error if cls is None else _init_as(cls, error, request)


# -- identity -------------------------------------------------------------------


@dataclass(frozen=True)
class MasterIdentity:
    """Paths to the master's client bundle (``<ca_dir>/master/``)."""

    key_path: pathlib.Path
    cert_path: pathlib.Path
    ca_cert_path: pathlib.Path


def ensure_master_identity(ca_dir: Union[str, "os.PathLike[str]"] = DEFAULT_CA_DIR) -> MasterIdentity:
    """Creates (or loads) the CA and the master's bundle under ``ca_dir``; idempotent."""
    Identity.ensure(ca_dir).close()
    master = pathlib.Path(ca_dir) / "master"
    return MasterIdentity(key_path=master / "worker.key", cert_path=master / "worker.crt",
                          ca_cert_path=master / "ca.crt")


def _load(identity: MasterIdentity) -> Identity:
    return Identity.load(identity.ca_cert_path, identity.cert_path, identity.key_path)


_identities_lock = threading.Lock()
#: How often a loaded bundle's files are looked at again for a change (seconds).
_IDENTITY_RECHECK = 1.0
#: Each MasterIdentity's loaded bundle: (the files' stamps, when they were taken, bundle).
_identities: Dict[MasterIdentity, Tuple[Tuple[int, ...], float, Identity]] = {}


def _stamp(identity: MasterIdentity) -> Tuple[int, ...]:
    """Inode, size and modification time of the bundle's three files."""
    return tuple(value for path in (identity.ca_cert_path, identity.cert_path,
                                    identity.key_path)
                 for st in (os.stat(path),) for value in (st.st_ino, st.st_size, st.st_mtime_ns))


def _cached_identity(identity: MasterIdentity) -> Identity:
    """``identity`` loaded, and loaded again when one of its files changed (looked at once
    a second at most), for agent and updater clients alike: an agent client is made on the
    loop, and reading and parsing the bundle for each of a gather's clients is work the
    loop would wait for."""
    now = time.monotonic()
    with _identities_lock:
        known = _identities.get(identity)
        if known is not None and now - known[1] < _IDENTITY_RECHECK:
            return known[2]
        try:
            stamp = _stamp(identity)
        except OSError:
            return _load(identity)  # raises the library's error for the missing file
        if known is not None and known[0] == stamp:
            _identities[identity] = (stamp, now, known[2])
            return known[2]
        # The bundle it replaces is freed once no one holds it (clients made from it
        # keep what they need).
        loaded = _load(identity)
        _identities[identity] = (stamp, now, loaded)
    return loaded


# -- clients --------------------------------------------------------------------


class _AsyncOwner:
    """What the agent and updater clients share: the ``async with`` lifetime."""

    _sync: Any
    _where: str
    _kind: str

    def _require(self) -> Any:
        if self._sync is None:
            raise RuntimeError(f"{self._kind} used outside `async with` block")
        return self._sync

    async def _call(self, name: str, *args: Any) -> Any:
        return await _off_loop(self, getattr(self._require(), name), *args)

    async def __aexit__(self, *exc: Any) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            await _close_off_loop(sync)


class AgentClient(_AsyncOwner):
    """A worker agent's client, pinned inside every handshake.

    ``host`` is a host record (``address``, ``agent_port``, ``client_cert_fingerprint``,
    ...); or give ``address`` and ``agent_port``. ``identity`` defaults to
    :func:`ensure_master_identity`. ``verify_hostname`` None reads
    ``DECNET_VERIFY_HOSTNAME``.
    """

    _kind = "AgentClient"

    def __init__(self, host: Optional[Dict[str, Any]] = None, *, address: Optional[str] = None,
                 agent_port: Optional[int] = None, identity: Optional[MasterIdentity] = None,
                 verify_hostname: Optional[bool] = None):
        if host is not None:
            self._address = host["address"]
            self._port = int(host.get("agent_port") or 8765)
            self._host_name = host.get("name")
        elif address is None or agent_port is None:
            raise ValueError("AgentClient requires either a host dict or address+agent_port")
        else:
            self._address, self._port, self._host_name = address, int(agent_port), None
        self._host = host
        self._identity = identity or ensure_master_identity()
        self._verify_hostname = verify_hostname
        self._where = f"{self._address}:{self._port}"
        self._sync: Optional[Client] = None

    def _make(self, queue: _completions.CompletionQueue) -> Client:
        identity = _cached_identity(self._identity)
        if self._host is not None:
            client = Client.from_host(identity, dict(self._host, agent_port=self._port),
                                      verify_hostname=self._verify_hostname)
        else:
            # An address without a host record carries no pin, as the reference's
            # client: the explicit unpinned opt-out.
            client = Client.connect_to(identity, self._address, self._port, None,
                                       verify_hostname=self._verify_hostname)
        client._handle._free = queue.free_client
        return client

    async def __aexit__(self, *exc: Any) -> None:
        # The handle is freed here; its connections are dropped on the library's threads
        # (and a call still running keeps what it needs until it ends).
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def __aenter__(self) -> "AgentClient":
        queue = _queue()
        await queue.admit()
        try:
            client = self._make(queue)
        except _errors.DecnetError as error:
            raise _translate(error, self) from error
        try:
            # The handshake, pin checked inside it: a wrong worker fails at `async with`.
            await _complete(self, client, b"connect", None)
        except BaseException:
            client.close()
            raise
        self._sync = client
        return self

    async def _rpc(self, rpc: bytes, args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        args_json = None if args is None else _c_json(args, "args")
        answer: Dict[str, Any] = await _complete(self, self._require(), rpc, args_json)
        return answer

    async def health(self) -> Dict[str, Any]:
        """``GET /health``."""
        return await self._rpc(b"health")

    async def status(self) -> Dict[str, Any]:
        """``GET /status``."""
        return await self._rpc(b"status")

    async def deploy(self, config: Any, *, dry_run: bool = False,
                     no_cache: bool = False) -> Dict[str, Any]:
        """``POST /deploy`` of ``config`` (a dict, JSON text, or a pydantic model)."""
        if hasattr(config, "model_dump"):
            config = config.model_dump(mode="json")
        # JSON text goes in as written, as the synchronous client sends it.
        args_json = b"".join((b'{"config":', _c_json(config, "config"), b',"dry_run":',
                              b"true" if dry_run else b"false", b',"no_cache":',
                              b"true" if no_cache else b"false", b"}"))
        answer: Dict[str, Any] = await _complete(self, self._require(), b"deploy", args_json)
        return answer

    async def mutate(self, decky_id: str, services: List[str], *,
                     dry_run: bool = False) -> Dict[str, Any]:
        """``POST /mutate``."""
        return await self._rpc(b"mutate", {"decky_id": decky_id, "services": list(services),
                                           "dry_run": bool(dry_run)})

    async def teardown(self, decky_id: Optional[str] = None) -> Dict[str, Any]:
        """``POST /teardown`` (None: every decky)."""
        return await self._rpc(b"teardown", {"decky_id": decky_id})

    async def self_destruct(self) -> Dict[str, Any]:
        """``POST /self-destruct``."""
        return await self._rpc(b"self-destruct")

    async def apply_topology(self, hydrated: Dict[str, Any], version_hash: str) -> Dict[str, Any]:
        """``POST /topology/apply`` (the library checks ``version_hash`` against its own)."""
        # A string holding the JSON text: sent verbatim, as the synchronous client does.
        text = _c_json(hydrated, "hydrated").decode("utf-8")
        return await self._rpc(b"apply-topology", {"hydrated": text,
                                                   "version_hash": version_hash})

    async def teardown_topology(self, topology_id: str) -> Dict[str, Any]:
        """``POST /topology/teardown``."""
        return await self._rpc(b"teardown-topology", {"topology_id": topology_id})

    async def get_topology_state(self) -> Dict[str, Any]:
        """``GET /topology/state``."""
        return await self._rpc(b"topology-state")

    def __repr__(self) -> str:
        return (f"AgentClient(name={self._host_name!r}, address={self._address!r}, "
                f"port={self._port})")


class UpdaterClient(_AsyncOwner):
    """A worker updater's client; a host without ``updater_cert_fingerprint`` is refused
    (:class:`FingerprintMismatchError`) before any connection."""

    _kind = "UpdaterClient"

    def __init__(self, host: Optional[Dict[str, Any]] = None, *, address: Optional[str] = None,
                 updater_port: int = 8766, identity: Optional[MasterIdentity] = None,
                 verify_hostname: Optional[bool] = None):
        if host is not None:
            self._address = host["address"]
            pin = host.get("updater_cert_fingerprint")
        elif address is None:
            raise ValueError("UpdaterClient requires host dict or address")
        else:
            self._address, pin = address, None
        self._pin: Optional[str] = pin.lower() if isinstance(pin, str) else None
        self._port = updater_port
        self._identity = identity or ensure_master_identity()
        self._verify_hostname = verify_hostname
        self._where = f"{self._address}:{self._port}"
        self._sync: Optional[_SyncUpdater] = None

    def _open(self) -> _SyncUpdater:
        return _SyncUpdater.connect_to(_cached_identity(self._identity), self._address,
                                       self._port, self._pin or "",
                                       verify_hostname=self._verify_hostname)

    async def __aenter__(self) -> "UpdaterClient":
        if not self._pin:
            raise FingerprintMismatchError(
                self._where, "<no updater_cert_fingerprint recorded for host>", "")
        self._sync = await _off_loop(self, self._open)
        return self

    async def health(self) -> Dict[str, Any]:
        """``GET /health``."""
        answer: Dict[str, Any] = await self._call("health")
        return answer

    async def releases(self) -> Dict[str, Any]:
        """``GET /releases``."""
        answer: Dict[str, Any] = await self._call("releases")
        return answer

    async def _answer(self, name: str, *args: Any) -> Response:
        """A call whose HTTP error statuses are answers, not exceptions."""
        try:
            answer = await self._call(name, *args)
        except _errors.HTTPStatusError as error:
            return Response(error.status, (error.body or "").encode("utf-8"))
        return Response(200, json.dumps(answer).encode("utf-8"))

    async def update(self, tarball: bytes, sha: str = "") -> Response:
        """``POST /update``: the answer whatever its status (200, 409, 500 ...)."""
        return await self._answer("update", tarball, sha)

    async def update_self(self, tarball: bytes, sha: str = "") -> Response:
        """``POST /update-self``: status 0 and no content when the updater closed the
        connection (it re-executes itself); poll ``health()`` for the new release."""
        try:
            outcome = await self._call("update_self", tarball, sha)
        except _errors.HTTPStatusError as error:
            return Response(error.status, (error.body or "").encode("utf-8"))
        if outcome.connection_closed:
            return Response(0, b"")
        return Response(200, json.dumps(outcome.body).encode("utf-8"))

    async def rollback(self) -> Response:
        """``POST /rollback``: the answer whatever its status."""
        return await self._answer("rollback")


# -- fleets ---------------------------------------------------------------------


class AsyncFleet:
    """A :class:`~decnet_agent_client.Fleet` awaited from asyncio: ``await fleet.call(...)``
    and ``async for result in fleet.as_completed(...)``. A sweep runs on the loop's
    completion queue, like an :class:`AgentClient` call: each host's result comes back
    through the descriptor the loop watches, and no Python runs on another thread (but
    logging's, see the module's docstring).

    ``sweep_niceness`` (10 to 19, default 19) is how many nice levels below the loop's
    thread the sweep's worker threads run (Linux): the sweep starts on a completion thread
    already 10 levels below, and ``fleet``'s own sweep niceness is set to the rest
    (:meth:`Fleet.set_sweep_niceness`), so their TLS handshakes yield the loop the CPU.
    A sweep's 64 threads weigh together what their nice says times 64: at 10 they still
    outweighed the loop's thread several times over (a first sweep of 256 stand-ins stalled
    it 4.6-11 ms on 2 cores), at 19 they weigh about as much as it (1.3-4 ms, the same
    sweep time)."""

    def __init__(self, fleet: Fleet, *, sweep_niceness: int = 19):
        if (isinstance(sweep_niceness, bool) or not isinstance(sweep_niceness, int)
                or not _COMPLETION_NICENESS <= sweep_niceness <= 19):
            raise _errors.InvalidArgumentError(
                f"invalid argument `sweep_niceness`: must be an integer from "
                f"{_COMPLETION_NICENESS} to 19, not {sweep_niceness!r}", code=1)
        fleet.set_sweep_niceness(sweep_niceness - _COMPLETION_NICENESS)
        self.fleet = fleet

    @classmethod
    async def create(cls, identity: Identity, hosts: Any, *, sweep_niceness: int = 19,
                     **options: Any) -> "AsyncFleet":
        """A new :class:`~decnet_agent_client.Fleet` (same arguments), made off the loop:
        setting up 256 hosts' TLS on the loop stalled it 13-19 ms."""
        fleet = await _off_loop(None, functools.partial(Fleet, identity, hosts, **options))
        return cls(fleet, sweep_niceness=sweep_niceness)

    async def aclose(self) -> None:
        """Closes the fleet off the loop (closing every kept-alive connection is work)."""
        await _close_off_loop(self.fleet)

    async def __aenter__(self) -> "AsyncFleet":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _sweep(self, rpc: str, plan: _Plan, concurrency: Optional[int],
                     deadline: Optional[float]) -> AsyncGenerator[Dict[str, Any], None]:
        """The sweep's completions as JSON objects: a ``"progress"`` one per host as it
        completes, then the sweep's own (``"ok"``, with every host's result). Leaving early
        (or cancelling) stops the sweep."""
        queue = _queue()
        rpc_text = cast(bytes, _c_text(rpc, "rpc"))  # not optional: never None
        tag, items = queue.start_sweep(self.fleet, rpc_text, _plan_json(plan),
                                       _sweep_options(concurrency, deadline))
        ended = False
        try:
            while True:
                # Results that came together are handed on a slice per loop iteration, as
                # the calls of a gather start: `get` does not wait while some are queued.
                await queue.admit()
                item = await items.get()
                if isinstance(item, BaseException):
                    raise item
                if item["outcome"] == "error":
                    raise _error_from_json(item["error"])
                ended = item["outcome"] != "progress"
                yield item
                if ended:
                    return
        finally:
            if not ended:
                queue.stop(tag)

    async def call(self, rpc: str, plan: _Plan = None, *, concurrency: Optional[int] = None,
                   deadline: Optional[float] = None) -> List[HostResult]:
        """:meth:`Fleet.call`, awaited: every planned host's result, in plan order.
        Cancelling the task stops the sweep."""
        sweep = self._sweep(rpc, plan, concurrency, deadline)
        try:
            async for item in sweep:
                if item["outcome"] == "ok":
                    return [HostResult(raw) for raw in item["result"]]
        finally:
            await sweep.aclose()
        raise _errors.InternalError("the sweep ended without its results", code=12)

    async def as_completed(self, rpc: str, plan: _Plan = None, *,
                           concurrency: Optional[int] = None,
                           deadline: Optional[float] = None) -> AsyncIterator[HostResult]:
        """Yields each host's result as it completes; hosts cut short by the deadline, or
        never started, come last. Leaving the loop early (or cancelling the task) stops the
        sweep: hosts not yet started are not attempted; hosts in flight finish on the
        library's threads."""
        seen = set()
        sweep = self._sweep(rpc, plan, concurrency, deadline)
        try:
            async for item in sweep:
                if item["outcome"] == "progress":
                    result = HostResult(item["result"])
                    seen.add(result.index)
                    yield result
                    continue
                for raw in item["result"]:
                    if raw["index"] not in seen:
                        yield HostResult(raw)
        finally:
            await sweep.aclose()
