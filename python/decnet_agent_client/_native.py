"""Finding and loading the shared library, and the ctypes declaration of every
function, structure and callback type of ``include/decnet_agent_client.h``."""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
)
from typing import Any, Dict, List, Optional


#: The environment variable naming the shared library to load.
LIBRARY_ENV = "DECNET_AGENT_CLIENT_LIB"

# ---------------------------------------------------------------------------
# Finding and loading the shared library
# ---------------------------------------------------------------------------


def _library_file_name() -> str:
    if sys.platform == "darwin":
        return "libdecnet_agent_client.dylib"
    if sys.platform == "win32":
        return "decnet_agent_client.dll"
    return "libdecnet_agent_client.so"


def _names_in_folder() -> List[str]:
    """A folder's possible file names for the library: the one a wheel gives
    it (setuptools-rust, abi3), then the one cargo gives it."""
    name = _library_file_name()
    if name.endswith(".so"):
        return [name[: -len(".so")] + ".abi3.so", name]
    return [name]


def _candidates() -> List[str]:
    """Where the library is looked for, in order (see the module docstring)."""
    name = _library_file_name()
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        if os.path.isdir(explicit):
            return [os.path.join(explicit, n) for n in _names_in_folder()]
        return [explicit]
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))  # python/decnet_agent_client -> the checkout
    return [os.path.join(here, n) for n in _names_in_folder()] + [
        os.path.join(repo, "target", "release", name),
        os.path.join(repo, "target", "debug", name),
    ]


def _load_library() -> "tuple[ctypes.CDLL, str]":
    tried = []
    for path in _candidates():
        if not os.path.isfile(path):
            tried.append(f"  {path} (not found)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as error:  # wrong architecture, missing symbol, ...
            tried.append(f"  {path} (cannot load: {error})")
    how = (
        f"{LIBRARY_ENV} is set, so only that path was tried"
        if os.environ.get(LIBRARY_ENV)
        else f"install the package with `pip install ./python`, set {LIBRARY_ENV} to the "
        "library's path, or build it with `cargo build --release --lib`"
    )
    raise ImportError(
        "decnet_agent_client: cannot find the shared library "
        f"{_library_file_name()}; looked in:\n" + "\n".join(tried) + f"\n({how})"
    )


lib, _LIBRARY_PATH = _load_library()
lib.__doc__ = "The raw ctypes library, with argtypes and restype declared for every function."


def library_path() -> str:
    """The path of the shared library this module loaded."""
    return _LIBRARY_PATH


class _Opaque(Structure):
    """Base of the opaque handle types (never instantiated)."""


class _ClientStruct(_Opaque):
    """`struct decnet_client` (opaque)."""


class _IdentityStruct(_Opaque):
    """`struct decnet_identity` (opaque)."""


class _UpdaterStruct(_Opaque):
    """`struct decnet_updater` (opaque)."""


class _CTimeouts(Structure):
    """`struct decnet_timeouts`: one profile's timeouts, in milliseconds."""

    _fields_ = [
        ("connect_ms", c_uint64),
        ("read_ms", c_uint64),
        ("write_ms", c_uint64),
        ("pool_ms", c_uint64),
    ]


class _CHandshakeCounts(Structure):
    """`struct decnet_handshake_counts`: a client's handshakes by kind."""

    _fields_ = [
        ("full", c_uint64),
        ("resumed", c_uint64),
    ]


class _CConnectionBudget(Structure):
    """`struct decnet_connection_budget`: a fleet's cap on open connections."""

    _fields_ = [
        ("max_open_connections", c_size_t),
        ("open_connections", c_size_t),
        ("evictions", c_uint64),
    ]


class _FleetStruct(_Opaque):
    """`struct decnet_fleet` (opaque)."""


class _UpdaterFleetStruct(_Opaque):
    """`struct decnet_updater_fleet` (opaque)."""


class _CompletionsStruct(_Opaque):
    """`struct decnet_completions` (opaque)."""


class _CSweepOptions(Structure):
    """`struct decnet_sweep_options`: 0 in a field means the fleet's setting."""

    _fields_ = [("concurrency", c_size_t), ("deadline_ms", c_uint64)]


_ClientPtr = POINTER(_ClientStruct)
_IdentityPtr = POINTER(_IdentityStruct)
_UpdaterPtr = POINTER(_UpdaterStruct)
_FleetPtr = POINTER(_FleetStruct)
_UpdaterFleetPtr = POINTER(_UpdaterFleetStruct)
_CompletionsPtr = POINTER(_CompletionsStruct)
_OwnedStr = POINTER(c_char)  # a `char *` we must free: keep the pointer
_Result = c_int  # `enum decnet_result`
# `decnet_log_callback`: (level, event_json, user_data)
_LogCallback = ctypes.CFUNCTYPE(None, c_uint32, c_char_p, ctypes.c_void_p)
#: `decnet_fleet_callback`: ``int (*)(const char *host_result_json, void *user_data)``.
_FleetCallback = ctypes.CFUNCTYPE(c_int, c_char_p, ctypes.c_void_p)

# name: (restype, argtypes)
_SIGNATURES: Dict[str, "tuple[Any, List[Any]]"] = {
    "decnet_version": (c_char_p, []),
    "decnet_string_free": (None, [_OwnedStr]),
    "decnet_client_new_from_host_json": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint32, POINTER(_ClientPtr)],
    ),
    "decnet_client_new": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint16, c_char_p, c_uint32, POINTER(_ClientPtr)],
    ),
    "decnet_client_new_from_host_json_unpinned": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint32, POINTER(_ClientPtr)],
    ),
    "decnet_client_new_unpinned": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint16, c_uint32, POINTER(_ClientPtr)],
    ),
    "decnet_client_connect": (_Result, [_ClientPtr]),
    "decnet_completions_new": (_Result, [c_uint32, c_uint32, POINTER(_CompletionsPtr)]),
    "decnet_completions_fd": (_Result, [_CompletionsPtr, POINTER(c_int)]),
    "decnet_client_submit": (_Result, [_ClientPtr, _CompletionsPtr, c_char_p, c_char_p, c_uint64]),
    "decnet_completions_withdraw": (_Result, [_CompletionsPtr, c_uint64, POINTER(c_bool)]),
    "decnet_completions_pop": (_Result, [_CompletionsPtr, POINTER(c_uint64), POINTER(_OwnedStr)]),
    "decnet_completions_free": (None, [_CompletionsPtr]),
    "decnet_completions_free_client": (None, [_CompletionsPtr, _ClientPtr]),
    "decnet_fleet_submit": (
        _Result,
        [_FleetPtr, _CompletionsPtr, c_char_p, c_char_p, POINTER(_CSweepOptions), c_uint64],
    ),
    "decnet_client_describe": (_Result, [_ClientPtr, POINTER(_OwnedStr)]),
    "decnet_client_free": (None, [_ClientPtr]),
    "decnet_client_get_timeouts": (_Result, [_ClientPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_client_set_timeouts": (_Result, [_ClientPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_client_set_max_response_bytes": (_Result, [_ClientPtr, c_uint64]),
    "decnet_client_set_session_resumption": (_Result, [_ClientPtr, c_bool]),
    "decnet_client_handshake_counts": (_Result, [_ClientPtr, POINTER(_CHandshakeCounts)]),
    "decnet_client_health": (_Result, [_ClientPtr, POINTER(_OwnedStr)]),
    "decnet_client_status": (_Result, [_ClientPtr, POINTER(_OwnedStr)]),
    "decnet_client_deploy": (
        _Result,
        [_ClientPtr, c_char_p, c_bool, c_bool, POINTER(_OwnedStr)],
    ),
    "decnet_client_mutate": (
        _Result,
        [_ClientPtr, c_char_p, POINTER(c_char_p), c_size_t, c_bool, POINTER(_OwnedStr)],
    ),
    "decnet_client_teardown": (_Result, [_ClientPtr, c_char_p, POINTER(_OwnedStr)]),
    "decnet_client_self_destruct": (_Result, [_ClientPtr, POINTER(_OwnedStr)]),
    "decnet_client_apply_topology": (
        _Result,
        [_ClientPtr, c_char_p, c_char_p, POINTER(_OwnedStr)],
    ),
    "decnet_client_teardown_topology": (_Result, [_ClientPtr, c_char_p, POINTER(_OwnedStr)]),
    "decnet_client_topology_state": (_Result, [_ClientPtr, POINTER(_OwnedStr)]),
    "decnet_identity_ensure": (_Result, [c_char_p, POINTER(_IdentityPtr)]),
    "decnet_identity_load": (
        _Result,
        [c_char_p, c_char_p, c_char_p, POINTER(_IdentityPtr)],
    ),
    "decnet_identity_load_dir": (_Result, [c_char_p, POINTER(_IdentityPtr)]),
    "decnet_identity_fingerprint": (_Result, [_IdentityPtr, POINTER(_OwnedStr)]),
    "decnet_identity_free": (None, [_IdentityPtr]),
    "decnet_last_error_result": (_Result, []),
    "decnet_last_error_message": (c_char_p, []),
    "decnet_last_error_http_status": (c_uint16, []),
    "decnet_last_error_http_body": (c_char_p, []),
    "decnet_last_error_expected_fingerprint": (c_char_p, []),
    "decnet_last_error_actual_fingerprint": (c_char_p, []),
    "decnet_last_error_may_have_reached_worker": (c_bool, []),
    "decnet_last_error_timeout_phase": (c_uint32, []),
    "decnet_pki_ensure_ca": (_Result, [c_char_p, POINTER(_OwnedStr)]),
    "decnet_pki_issue_worker_bundle": (
        _Result,
        [c_char_p, c_char_p, POINTER(c_char_p), c_size_t, c_uint32, c_char_p, POINTER(_OwnedStr)],
    ),
    "decnet_fingerprint_file": (_Result, [c_char_p, POINTER(_OwnedStr)]),
    "decnet_topology_hash": (_Result, [c_char_p, POINTER(_OwnedStr)]),
    "decnet_result_name": (c_char_p, [c_uint32]),
    # the updater channel and enrollment
    "decnet_last_error_update_error": (c_char_p, []),
    "decnet_last_error_update_stderr": (c_char_p, []),
    "decnet_last_error_rolled_back": (ctypes.c_int32, []),
    "decnet_updater_new_from_host_json": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint16, c_uint32, POINTER(_UpdaterPtr)],
    ),
    "decnet_updater_new": (
        _Result,
        [_IdentityPtr, c_char_p, c_uint16, c_char_p, c_uint32, POINTER(_UpdaterPtr)],
    ),
    "decnet_updater_free": (None, [_UpdaterPtr]),
    "decnet_updater_get_timeouts": (_Result, [_UpdaterPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_updater_set_timeouts": (_Result, [_UpdaterPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_updater_health": (_Result, [_UpdaterPtr, POINTER(_OwnedStr)]),
    "decnet_updater_releases": (_Result, [_UpdaterPtr, POINTER(_OwnedStr)]),
    "decnet_updater_rollback": (_Result, [_UpdaterPtr, POINTER(_OwnedStr)]),
    "decnet_updater_update": (
        _Result,
        [_UpdaterPtr, c_char_p, POINTER(ctypes.c_uint8), c_size_t, c_char_p, POINTER(_OwnedStr)],
    ),
    "decnet_updater_update_self": (
        _Result,
        [_UpdaterPtr, c_char_p, POINTER(ctypes.c_uint8), c_size_t, c_char_p, POINTER(c_bool),
         POINTER(_OwnedStr)],
    ),
    "decnet_updater_wait_for_release": (
        _Result,
        [_UpdaterPtr, c_char_p, c_uint64, c_uint64, POINTER(_OwnedStr)],
    ),
    "decnet_set_log_callback": (_Result, [c_uint32, _LogCallback, ctypes.c_void_p]),
    "decnet_get_log_level": (c_uint32, []),
    "decnet_enroll": (
        _Result,
        [c_char_p, c_char_p, c_char_p, POINTER(c_char_p), c_size_t, c_uint16, c_bool, c_bool,
         POINTER(_OwnedStr)],
    ),
    # fleets
    "decnet_fleet_new": (_Result, [_IdentityPtr, c_char_p, c_uint32, POINTER(_FleetPtr)]),
    "decnet_fleet_free": (None, [_FleetPtr]),
    "decnet_fleet_size": (_Result, [_FleetPtr, POINTER(c_size_t)]),
    "decnet_fleet_set_timeouts": (_Result, [_FleetPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_fleet_set_concurrency": (_Result, [_FleetPtr, c_size_t]),
    "decnet_fleet_set_sweep_niceness": (_Result, [_FleetPtr, c_uint32]),
    "decnet_fleet_set_session_resumption": (_Result, [_FleetPtr, c_bool]),
    "decnet_fleet_handshake_counts": (_Result, [_FleetPtr, POINTER(_CHandshakeCounts)]),
    "decnet_fleet_set_max_open_connections": (_Result, [_FleetPtr, c_size_t]),
    "decnet_fleet_connection_budget": (_Result, [_FleetPtr, POINTER(_CConnectionBudget)]),
    "decnet_fleet_set_deadline_ms": (_Result, [_FleetPtr, c_uint64]),
    "decnet_fleet_call": (
        _Result,
        [_FleetPtr, c_char_p, c_char_p, POINTER(_CSweepOptions), _FleetCallback, ctypes.c_void_p,
         POINTER(_OwnedStr)],
    ),
    "decnet_fleet_deploy_sharded": (
        _Result,
        [_FleetPtr, c_char_p, c_bool, POINTER(_CSweepOptions), _FleetCallback, ctypes.c_void_p,
         POINTER(_OwnedStr)],
    ),
    # updater fleets
    "decnet_updater_fleet_new_from_json": (
        _Result, [_IdentityPtr, c_char_p, c_uint32, POINTER(_UpdaterFleetPtr)]),
    "decnet_updater_fleet_free": (None, [_UpdaterFleetPtr]),
    "decnet_updater_fleet_size": (_Result, [_UpdaterFleetPtr, POINTER(c_size_t)]),
    "decnet_updater_fleet_set_concurrency": (_Result, [_UpdaterFleetPtr, c_size_t]),
    "decnet_updater_fleet_set_deadline_ms": (_Result, [_UpdaterFleetPtr, c_uint64]),
    "decnet_updater_fleet_call": (
        _Result,
        [_UpdaterFleetPtr, c_char_p, c_char_p, c_char_p, POINTER(_CSweepOptions), _FleetCallback,
         ctypes.c_void_p, POINTER(_OwnedStr)],
    ),
    "decnet_updater_fleet_push": (
        _Result,
        [_UpdaterFleetPtr, c_char_p, c_char_p, c_char_p, c_char_p, POINTER(_CSweepOptions),
         _FleetCallback, ctypes.c_void_p, POINTER(_OwnedStr)],
    ),
    "decnet_updater_fleet_rollback": (
        _Result,
        [_UpdaterFleetPtr, c_char_p, POINTER(_CSweepOptions), _FleetCallback, ctypes.c_void_p,
         POINTER(_OwnedStr)],
    ),
}

_missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
if _missing:
    raise ImportError(
        f"decnet_agent_client: the library at {_LIBRARY_PATH} lacks {', '.join(_missing)}: "
        "it is older than this module; rebuild it (cargo build --release --lib)")
for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes
del _name, _restype, _argtypes, _function, _missing

# decnet_result values
DECNET_OK = 0
_HOSTNAME_OFF, _HOSTNAME_ON, _HOSTNAME_FROM_ENV = 0, 1, 2

#: Timeout profile names and their `decnet_profile` codes.
PROFILES: Dict[str, int] = {
    "control": 0,
    "deploy": 1,
    "topology-apply": 2,
    "topology-teardown": 3,
}


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", "replace")


def version() -> str:
    """The library's version, e.g. ``"0.1.0"``."""
    return _text(lib.decnet_version()) or ""
