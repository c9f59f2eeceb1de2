"""Python bindings for decnet-agent-client: drive DECNET worker agents over mutual TLS.

This package is a thin ``ctypes`` layer (standard library only) over the
library's C ABI (``include/decnet_agent_client.h``). It adds:

* typed exceptions, one per result code, carrying the per-thread error detail
  (HTTP status and body, pinned and presented fingerprints, ...);
* :class:`Identity` and :class:`Client` objects that own their C handles,
  free them exactly once, and are safe to share between threads;
* JSON in and out: dicts are sent as ``json.dumps`` text and every answer is
  returned as a dict; every string the library hands over is freed at once.
* the library's events (connections opened, reused and retired, requests
  sent and answered, failures with their kind) as records of the
  ``logging.getLogger("decnet_agent_client")`` logger, on the calling thread,
  with the parsed event in ``record.decnet_event``; levels map error, warn,
  info, debug to ``ERROR``, ``WARNING``, ``INFO``, ``DEBUG``, and trace
  (bodies) to :data:`TRACE` (5). The C callback is installed only while a
  handler would emit something (see :func:`sync_logging`); it is
  process-wide, so do not also set one from C in the same process.

Finding the shared library, in this order:

1. the environment variable ``DECNET_AGENT_CLIENT_LIB`` (a file, or a folder
   holding ``libdecnet_agent_client.abi3.so`` or ``libdecnet_agent_client.so``);
   when it is set, nothing else is tried, so a wrong setting never silently
   loads another build;
2. ``libdecnet_agent_client.abi3.so`` (the name an installed wheel gives
   it), then ``libdecnet_agent_client.so``, inside this package;
3. the repository's cargo target folder: ``target/release``, then
   ``target/debug`` (for a checkout: ``python/`` on ``sys.path``).

Example::

    import decnet_agent_client as dac

    with dac.Identity.ensure("/var/lib/decnet/ca") as identity, \\
            dac.Client.from_host(identity, host_record) as client:
        print(client.health())

Modules: ``_native`` (loading the library, the C declarations),
``errors``, ``logging_bridge``, ``identity`` (identity, CA, bundles,
enrollment), ``client``, ``updater`` and ``fleet``; every public name is
re-exported here.
"""

from __future__ import annotations

from ._native import (
    _SIGNATURES,
    DECNET_OK,
    LIBRARY_ENV,
    PROFILES,
    _CConnectionBudget,
    _CHandshakeCounts,
    _ClientPtr,
    _CompletionsPtr,
    _CSweepOptions,
    _CTimeouts,
    _FleetCallback,
    _FleetPtr,
    _IdentityPtr,
    _LogCallback,
    _UpdaterFleetPtr,
    _UpdaterPtr,
    lib,
    library_path,
    version,
)
from .client import Client, HandshakeCounts, Timeouts, topology_hash
from .errors import (
    _ERROR_CLASSES,
    AgentTimeoutError,
    ClosedError,
    ConnectError,
    ConnectionLostError,
    DecnetError,
    FileSystemError,
    HTTPStatusError,
    InternalError,
    InvalidArgumentError,
    NotEnrolledError,
    NullArgumentError,
    PanicError,
    PinMismatchError,
    PKIError,
    ProtocolError,
    TLSError,
    _result_name,
    last_error,
)
from .fleet import (
    FLEET_RPCS,
    UPDATER_FLEET_RPCS,
    ConnectionBudget,
    Fleet,
    HostResult,
    Rollout,
    RolloutHost,
    ShardResult,
    UpdaterFleet,
)
from .identity import Identity, enroll, ensure_ca, fingerprint_file, issue_worker_bundle
from .logging_bridge import LOGGER_NAME, TRACE, sync_logging
from .updater import UPDATER_PROFILES, SelfUpdateResult, UpdaterClient

__all__ = [
    "DecnetError",
    "InvalidArgumentError",
    "FileSystemError",
    "PKIError",
    "NotEnrolledError",
    "ConnectError",
    "TLSError",
    "PinMismatchError",
    "AgentTimeoutError",
    "HTTPStatusError",
    "ProtocolError",
    "ConnectionLostError",
    "InternalError",
    "NullArgumentError",
    "PanicError",
    "ClosedError",
    "Identity",
    "Client",
    "Fleet",
    "HostResult",
    "ConnectionBudget",
    "FLEET_RPCS",
    "UpdaterFleet",
    "UPDATER_FLEET_RPCS",
    "Rollout",
    "RolloutHost",
    "ShardResult",
    "Timeouts",
    "HandshakeCounts",
    "PROFILES",
    "LIBRARY_ENV",
    "library_path",
    "lib",
    "last_error",
    "version",
    "topology_hash",
    "fingerprint_file",
    "ensure_ca",
    "issue_worker_bundle",
    "UpdaterClient",
    "SelfUpdateResult",
    "UPDATER_PROFILES",
    "enroll",
    "LOGGER_NAME",
    "TRACE",
    "sync_logging",
]
