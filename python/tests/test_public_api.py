"""The package's public names are those of the single module it was split from."""

from __future__ import annotations

import types

import decnet_agent_client as dac

#: Every public name of ``decnet_agent_client/__init__.py`` before the split into
#: modules (taken from that file with ``dir()``, modules left out).
PUBLIC_NAMES = {
    "AgentTimeoutError", "Client", "ClosedError", "ConnectError", "ConnectionLostError",
    "DECNET_OK", "DecnetError", "FLEET_RPCS", "FileSystemError", "Fleet", "HTTPStatusError",
    "HandshakeCounts", "HostResult", "Identity", "InternalError", "InvalidArgumentError",
    "LIBRARY_ENV", "LOGGER_NAME", "NotEnrolledError", "NullArgumentError", "PKIError",
    "PROFILES", "PanicError", "PinMismatchError", "ProtocolError", "SelfUpdateResult",
    "TLSError", "TRACE", "Timeouts", "UPDATER_PROFILES", "UpdaterClient", "enroll",
    "ensure_ca", "fingerprint_file", "issue_worker_bundle", "last_error", "lib",
    "library_path", "sync_logging", "topology_hash", "version",
}
#: Names added since the split, each with the feature that brought it.
ADDED = {
    "ConnectionBudget",  # a fleet's cap on open connections
}
#: ``__all__`` of that file (the names above but ``DECNET_OK``) and the additions.
ALL = (PUBLIC_NAMES - {"DECNET_OK"}) | ADDED


def _public(module: types.ModuleType) -> set:
    return {name for name in dir(module)
            if not name.startswith("_") and name != "annotations"
            and not isinstance(getattr(module, name), types.ModuleType)}


def test_the_package_exports_the_names_of_the_old_module():
    assert _public(dac) == PUBLIC_NAMES | ADDED


def test_all_lists_the_same_names_as_before():
    assert sorted(dac.__all__) == sorted(ALL)
    assert len(dac.__all__) == len(set(dac.__all__))


def test_each_name_is_the_object_its_module_defines():
    from decnet_agent_client import client, errors, fleet, identity, updater

    assert dac.Client is client.Client and dac.Fleet is fleet.Fleet
    assert dac.UpdaterClient is updater.UpdaterClient and dac.Identity is identity.Identity
    assert dac.PinMismatchError is errors.PinMismatchError
