"""Python bindings for decnet-agent-client: drive DECNET worker agents over mutual TLS.

This module is a thin ``ctypes`` layer (standard library only) over the
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
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import sys
import threading
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
)
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Union

_string_at = ctypes.string_at

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
    "FLEET_RPCS",
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


# ---------------------------------------------------------------------------
# C declarations: every function of include/decnet_agent_client.h
# ---------------------------------------------------------------------------


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


_ClientPtr = POINTER(_ClientStruct)
_IdentityPtr = POINTER(_IdentityStruct)
_UpdaterPtr = POINTER(_UpdaterStruct)
_OwnedStr = POINTER(c_char)  # a `char *` we must free: keep the pointer
_Result = c_int  # `enum decnet_result`
# `decnet_log_callback`: (level, event_json, user_data)
_LogCallback = ctypes.CFUNCTYPE(None, c_uint32, c_char_p, ctypes.c_void_p)

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
    "decnet_client_connect": (_Result, [_ClientPtr]),
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

# ---------------------------------------------------------------------------
# Events: the library's log, bridged to `logging`
# ---------------------------------------------------------------------------

#: The logger that receives the library's events.
LOGGER_NAME = "decnet_agent_client"
#: The ``logging`` level of the library's trace events (request and response
#: bodies): below ``DEBUG``, so only a logger and a handler set to it or lower
#: see them.
TRACE = 5

_logger = logging.getLogger(LOGGER_NAME)
# library level (decnet_log_level) -> logging level, most verbose first
_LEVELS = ((5, TRACE), (4, logging.DEBUG), (3, logging.INFO), (2, logging.WARNING), (1, logging.ERROR))
_LEVEL_OF = dict(_LEVELS)
_log_lock = threading.Lock()
_log_installed = 0  # the library level installed by this module, 0: none


def _deliver(level: int, event_json: bytes, _user_data: Any) -> None:
    """The C callback: one event, logged on the thread doing the work."""
    try:
        text = event_json.decode("utf-8")
        _logger.log(_LEVEL_OF.get(level, logging.DEBUG), "%s", text,
                    extra={"decnet_event": json.loads(text)})
    except Exception:  # a raising handler must not reach the library's call
        pass


# Kept alive for as long as the library may call it. (`_LogCallback()` is NULL.)
_deliver_c = _LogCallback(_deliver)


def _wanted_level() -> int:
    """The most verbose library level some handler of the logger would emit, or 0.

    Handlers are those of the logger and of its ancestors up to the first
    that does not propagate; ``logging.lastResort`` (used when none is
    configured) does not count.
    """
    lowest = None
    current: Optional[logging.Logger] = _logger
    while current is not None:
        for handler in current.handlers:
            lowest = handler.level if lowest is None else min(lowest, handler.level)
        current = current.parent if current.propagate else None
    if lowest is None:
        return 0
    for code, level in _LEVELS:
        if level >= lowest and _logger.isEnabledFor(level):
            return code
    return 0


def sync_logging() -> int:
    """Installs, changes or removes the library's log callback to match ``logging`` now.

    Every call into the library does this first, so there is rarely a need
    to call it: the callback is installed only while some handler of the
    ``decnet_agent_client`` logger (or of an ancestor it propagates to) and
    the logger's effective level both let an event through, at the most
    verbose library level they let through; otherwise none is installed and
    the library formats nothing. Returns that level (5 trace … 1 error, 0 none).
    """
    global _log_installed
    wanted = _wanted_level()
    if wanted != _log_installed:
        with _log_lock:
            if wanted != _log_installed:
                _check(lib.decnet_set_log_callback(wanted, _deliver_c if wanted else _LogCallback(), None))
                _log_installed = wanted
    return wanted


# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------


class DecnetError(Exception):
    """A call into the library failed.

    Attributes:
        code: the ``decnet_result`` code (1-14).
        kind: its short stable name from ``decnet_result_name`` (``"tls"``,
            ``"pin_mismatch"``, ...).
        message: the library's one-line description.
    """

    code: int = 0

    def __init__(self, message: str, *, code: Optional[int] = None, kind: Optional[str] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.kind = kind if kind is not None else _result_name(self.code)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code}, kind={self.kind!r})"


class InvalidArgumentError(DecnetError, ValueError):
    """An argument was rejected (not UTF-8, malformed JSON, out of range, bad host-record field)."""

    code = 1


class FileSystemError(DecnetError):
    """A file-system operation failed; the message names the path (``DECNET_ERR_IO``)."""

    code = 2


class PKIError(DecnetError):
    """Certificate or key material is unreadable, corrupt or inconsistent."""

    code = 3


class NotEnrolledError(DecnetError):
    """A bundle directory lacks one of its three files."""

    code = 4


class ConnectError(DecnetError):
    """The TCP connection could not be opened (refused, unreachable, DNS)."""

    code = 5


class TLSError(DecnetError):
    """The TLS handshake failed: untrusted certificate, hostname mismatch, client certificate rejected."""

    code = 6


class PinMismatchError(DecnetError):
    """The worker's certificate does not match the pinned fingerprint: a security event, never retry.

    Attributes:
        expected: the pinned fingerprint (64 lowercase hex characters).
        actual: the fingerprint the worker presented.
    """

    code = 7

    def __init__(self, message: str, *, expected: Optional[str] = None,
                 actual: Optional[str] = None, **kw: Any):
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class AgentTimeoutError(DecnetError, TimeoutError):
    """A timeout of the call's profile expired. Also a builtin :class:`TimeoutError`."""

    code = 8


class HTTPStatusError(DecnetError):
    """The worker answered with a non-2xx status.

    Attributes:
        status: the HTTP status code.
        body: the raw response body (text).
        detail: the ``detail`` member of a JSON error body (a string, or a
            list of validation problems for 422); None when absent.
        update_error, update_stderr, rolled_back: ``detail.error``,
            ``detail.stderr`` and ``detail.rolled_back`` when ``detail`` is an
            object (the updater's 409 and 500), read from the library's
            last-error record; None otherwise.
    """

    code = 9

    def __init__(self, message: str, *, status: int = 0, body: Optional[str] = None,
                 update_error: Optional[str] = None, update_stderr: Optional[str] = None,
                 rolled_back: Optional[bool] = None, **kw: Any):
        super().__init__(message, **kw)
        self.status = status
        self.body = body
        self.update_error = update_error
        self.update_stderr = update_stderr
        self.rolled_back = rolled_back
        self.detail: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                self.detail = parsed.get("detail")


class ProtocolError(DecnetError):
    """The worker's answer broke the protocol (not a JSON object, too large, malformed HTTP)."""

    code = 10


class ConnectionLostError(DecnetError):
    """The connection died mid-exchange.

    Attributes:
        may_have_reached_worker: True when the request may have reached the
            worker, so a POST may have taken effect.
    """

    code = 11

    def __init__(self, message: str, *, may_have_reached_worker: bool = False, **kw: Any):
        super().__init__(message, **kw)
        self.may_have_reached_worker = may_have_reached_worker


class InternalError(DecnetError):
    """A bug inside the library."""

    code = 12


class NullArgumentError(DecnetError):
    """A required pointer argument was NULL (only reachable through the raw :data:`lib`)."""

    code = 13


class PanicError(DecnetError):
    """The library panicked; the call was abandoned."""

    code = 14


class ClosedError(ValueError):
    """The :class:`Client` or :class:`Identity` was closed (a Python-side condition, no result code)."""


_ERROR_CLASSES: Dict[int, "type[DecnetError]"] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        FileSystemError,
        PKIError,
        NotEnrolledError,
        ConnectError,
        TLSError,
        PinMismatchError,
        AgentTimeoutError,
        HTTPStatusError,
        ProtocolError,
        ConnectionLostError,
        InternalError,
        NullArgumentError,
        PanicError,
    )
}


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", "replace")


def _result_name(code: int) -> str:
    if not 0 <= code <= 0xFFFFFFFF:
        return "unknown"
    return _text(lib.decnet_result_name(code)) or "unknown"


def last_error(result: int) -> DecnetError:
    """The exception for ``result``, built from this thread's last-error detail.

    Call it on the same OS thread, right after the failing call (the library
    keeps the detail per thread, and the next failure replaces it). Useful
    with the raw :data:`lib`.
    """
    message = _text(lib.decnet_last_error_message()) or ""
    cls = _ERROR_CLASSES.get(result, DecnetError)
    kw: Dict[str, Any] = {"code": result, "kind": _result_name(result)}
    if cls is HTTPStatusError:
        kw["status"] = int(lib.decnet_last_error_http_status())
        kw["body"] = _text(lib.decnet_last_error_http_body())
        kw["update_error"] = _text(lib.decnet_last_error_update_error())
        kw["update_stderr"] = _text(lib.decnet_last_error_update_stderr())
        rolled_back = int(lib.decnet_last_error_rolled_back())
        kw["rolled_back"] = None if rolled_back < 0 else bool(rolled_back)
    elif cls is PinMismatchError:
        kw["expected"] = _text(lib.decnet_last_error_expected_fingerprint())
        kw["actual"] = _text(lib.decnet_last_error_actual_fingerprint())
    elif cls is ConnectionLostError:
        kw["may_have_reached_worker"] = bool(lib.decnet_last_error_may_have_reached_worker())
    return cls(message or _result_name(result), **kw)


def _check(result: int) -> None:
    if result != DECNET_OK:
        raise last_error(result)


def _take_string(pointer: "ctypes._Pointer[c_char]") -> str:
    """Reads an owned ``char *`` and frees it with ``decnet_string_free``."""
    if not pointer:
        raise InternalError("the library returned NULL for a string", code=12)
    try:
        return ctypes.string_at(pointer).decode("utf-8")
    finally:
        lib.decnet_string_free(pointer)


def _call_for_string(function: Any, *args: Any) -> str:
    """Calls ``function(*args, &out)``, raises on failure, returns (and frees) ``out``."""
    out = _OwnedStr()
    result = function(*args, byref(out))
    if result != DECNET_OK:
        error = last_error(result)  # read the detail before anything else runs
        if out:  # the library leaves it NULL on failure; free it should that change
            lib.decnet_string_free(out)
        raise error
    return _take_string(out)


def _call_for_json(function: Any, *args: Any) -> Dict[str, Any]:
    answer: Dict[str, Any] = json.loads(_call_for_string(function, *args))
    return answer


#: ``json.loads`` without its keyword handling, for every answer.
_decode_json = json.JSONDecoder().decode


# ---------------------------------------------------------------------------
# Argument conversion
# ---------------------------------------------------------------------------


def _invalid(argument: str, reason: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid argument `{argument}`: {reason}", code=1)


def _c_text(value: Optional[Union[str, bytes]], argument: str, *,
            optional: bool = False) -> Optional[bytes]:
    """UTF-8 bytes for a ``const char *`` argument (None passes NULL when allowed)."""
    if value is None:
        if optional:
            return None
        raise _invalid(argument, "must not be None")
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _invalid(argument, f"is not valid UTF-8 text: {error}") from None
    else:
        raise _invalid(argument, f"must be a str, not {type(value).__name__}")
    if b"\0" in data:
        # ctypes would silently cut the string at the NUL.
        raise _invalid(argument, "must not contain a NUL character")
    return data


def _c_path(value: Any, argument: str, *, optional: bool = False) -> Optional[bytes]:
    if value is None:
        if optional:
            return None
        raise _invalid(argument, "must not be None")
    try:
        data = os.fsencode(value)
    except TypeError:
        raise _invalid(argument, f"must be a path, not {type(value).__name__}") from None
    if b"\0" in data:
        raise _invalid(argument, "must not contain a NUL character")
    return data


def _c_json(value: Union[str, bytes, Dict[str, Any]], argument: str) -> bytes:
    """JSON text for a ``const char *`` JSON argument: dicts go through ``json.dumps``."""
    if isinstance(value, (str, bytes)):
        return _c_text(value, argument)  # type: ignore[return-value]
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as error:
        raise _invalid(argument, f"cannot be serialised as JSON: {error}") from None
    return _c_text(text, argument)  # type: ignore[return-value]


def _c_str_array(values: Iterable[str], argument: str) -> "tuple[Any, int]":
    if isinstance(values, (str, bytes)):
        raise _invalid(argument, "must be a list of strings, not a single string")
    items = [_c_text(v, argument) for v in values]
    array = (c_char_p * max(len(items), 1))(*items)
    return array, len(items)


def _hostname_choice(verify_hostname: Optional[bool]) -> int:
    if verify_hostname is None:
        return _HOSTNAME_FROM_ENV
    return _HOSTNAME_ON if verify_hostname else _HOSTNAME_OFF


def _profile_code(profile: Union[str, int], names: Dict[str, int] = PROFILES) -> int:
    """The code of ``profile``, a name in ``names`` or a code the library checks."""
    if isinstance(profile, int) and not isinstance(profile, bool):
        # ctypes would silently keep the low 32 bits (2**32 + 2 would
        # select topology-apply); the library checks the rest of the range.
        if not 0 <= profile < 2**32:
            raise _invalid("profile", f"{profile} is not a profile code")
        return profile
    code = names.get(profile) if isinstance(profile, str) else None
    if code is None:
        raise _invalid("profile", f"{profile!r} is not one of {sorted(names)}")
    return code


def _to_ms(seconds: float, argument: str) -> int:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise _invalid(argument, f"must be a number of seconds, not {seconds!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _invalid(argument, f"must be a finite, non-negative number of seconds, not {seconds!r}")
    ms = math.ceil(value * 1000 - 1e-9)  # never round a positive timeout down to zero
    if ms > 0xFFFFFFFFFFFFFFFF:
        raise _invalid(argument, "is too large")
    return ms


# ---------------------------------------------------------------------------
# Handles
# ---------------------------------------------------------------------------


class _Handle:
    """Owns one C handle: counts calls in flight and frees it exactly once.

    ``close()`` never frees a handle under a running call: it marks the
    handle closed (new calls raise :class:`ClosedError`) and the handle is
    freed as soon as the last call in flight returns.
    """

    __slots__ = ("_pointer", "_free", "_lock", "_in_flight", "_closed", "_what")

    def __init__(self, pointer: Any, free: Any, what: str):
        self._pointer = pointer
        self._free = free
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._what = what

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Any:
        sync_logging()
        with self._lock:
            if self._closed:
                raise ClosedError(f"the {self._what} is closed")
            self._in_flight += 1
            return self._pointer

    def __exit__(self, *exc: Any) -> None:
        release = None
        with self._lock:
            self._in_flight -= 1
            if self._closed and self._in_flight == 0:
                release, self._pointer = self._pointer, None
        if release is not None:
            self._free(release)

    def call_json(self, function: Any, *args: Any) -> Dict[str, Any]:
        """``function(pointer, *args, &out)`` under this handle, for the calls that
        answer JSON: raises the call's error, else returns ``out`` parsed (and frees it).

        The hot path of every RPC, so one Python frame does what
        ``with handle``, :func:`_call_for_string` and :func:`_take_string`
        do, with the same checks: the handle is counted in flight, the
        error detail is read before anything else runs, a NULL string is an
        :class:`InternalError`, and every string is freed.
        """
        sync_logging()
        lock = self._lock
        with lock:
            if self._closed:
                raise ClosedError(f"the {self._what} is closed")
            self._in_flight += 1
            pointer = self._pointer
        try:
            out = _OwnedStr()
            result = function(pointer, *args, byref(out))
            if result != DECNET_OK:
                error = last_error(result)
                if out:
                    lib.decnet_string_free(out)
                raise error
            if not out:
                raise InternalError("the library returned NULL for a string", code=12)
            try:
                text = _string_at(out)
            finally:
                lib.decnet_string_free(out)
        finally:
            release = None
            with lock:
                self._in_flight -= 1
                if self._closed and self._in_flight == 0:
                    release, self._pointer = self._pointer, None
            if release is not None:
                self._free(release)
        answer: Dict[str, Any] = _decode_json(text.decode("utf-8"))
        return answer

    def close(self) -> None:
        release = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._in_flight == 0:
                release, self._pointer = self._pointer, None
        if release is not None:
            self._free(release)


class _HandleOwner:
    """The lifetime :class:`Identity` and :class:`Client` share: ``close()``
    is idempotent and never frees the handle under a call in flight (later
    calls raise :class:`ClosedError`); both are context managers and are
    freed when garbage-collected."""

    _handle: _Handle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._handle.closed

    def close(self) -> None:
        """Frees the handle once no call is in flight (idempotent)."""
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: never raise from __del__
            pass


class Identity(_HandleOwner):
    """The master's identity: client certificate, private key and the CA it trusts.

    Make one with :meth:`ensure`, :meth:`load` or :meth:`load_dir`. Thread-safe. Clients made
    from it keep their own copy of the material, so closing the identity
    does not affect them. Use it as a context manager, or call
    :meth:`close`; it is also freed when garbage-collected.
    """

    def __init__(self, _pointer: Any):
        """Internal: use :meth:`ensure` or :meth:`load`."""
        if not isinstance(_pointer, _IdentityPtr) or not _pointer:
            raise TypeError("use Identity.ensure() or Identity.load()")
        self._handle = _Handle(_pointer, lib.decnet_identity_free, "identity")
        self._fingerprint: Optional[str] = None

    @classmethod
    def ensure(cls, ca_dir: Optional[Union[str, os.PathLike[str]]] = None) -> "Identity":
        """Ensures the CA and the master bundle under ``ca_dir`` and loads the master identity.

        ``ca_dir`` defaults to ``$HOME/.decnet/ca``. Whatever is missing is
        created in the reference layout (``ca.key``, ``ca.crt``,
        ``master/{ca.crt,worker.crt,worker.key}``); an existing CA is never
        regenerated (half a CA raises :class:`PKIError`).
        """
        out = _IdentityPtr()
        _check(lib.decnet_identity_ensure(_c_path(ca_dir, "ca_dir", optional=True), byref(out)))
        return cls(out)

    @classmethod
    def load(cls, ca_cert: Union[str, os.PathLike[str]], cert: Union[str, os.PathLike[str]],
             key: Union[str, os.PathLike[str]]) -> "Identity":
        """Loads an identity from three PEM files: the CA certificate (the only trust anchor),
        the client certificate and its private key."""
        out = _IdentityPtr()
        _check(lib.decnet_identity_load(
            _c_path(ca_cert, "ca_cert"), _c_path(cert, "cert"), _c_path(key, "key"), byref(out)))
        return cls(out)

    @classmethod
    def load_dir(cls, bundle_dir: Union[str, os.PathLike[str]]) -> "Identity":
        """Loads the identity of a bundle directory holding ``ca.crt``, ``worker.crt`` and
        ``worker.key`` (the master's ``<ca_dir>/master``, or any enrolled bundle), creating
        nothing. A missing file raises :class:`NotEnrolledError` naming it."""
        out = _IdentityPtr()
        _check(lib.decnet_identity_load_dir(_c_path(bundle_dir, "dir"), byref(out)))
        return cls(out)

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of the identity's certificate (64 lowercase hex characters)."""
        if self._fingerprint is None:
            with self._handle as pointer:
                self._fingerprint = _call_for_string(lib.decnet_identity_fingerprint, pointer)
        return self._fingerprint

    def __repr__(self) -> str:
        if self.closed:
            return "<Identity closed>"
        return f"<Identity fingerprint={self.fingerprint[:16]}…>"


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


# ---------------------------------------------------------------------------
# Module functions
# ---------------------------------------------------------------------------


def version() -> str:
    """The library's version, e.g. ``"0.1.0"``."""
    return _text(lib.decnet_version()) or ""


def topology_hash(hydrated: Union[Dict[str, Any], str]) -> str:
    """The canonical topology hash of ``hydrated`` (dict or JSON text), exactly as the worker
    computes it: 64 lowercase hex characters."""
    return _call_for_string(lib.decnet_topology_hash, _c_json(hydrated, "hydrated"))


def fingerprint_file(path: Union[str, os.PathLike[str]]) -> str:
    """The fingerprint (lowercase hex SHA-256 of the DER) of the certificate in ``path`` (PEM or DER)."""
    return _call_for_string(lib.decnet_fingerprint_file, _c_path(path, "path"))


def ensure_ca(ca_dir: Optional[Union[str, os.PathLike[str]]] = None) -> str:
    """Loads the CA in ``ca_dir`` (default ``$HOME/.decnet/ca``), creating it when neither
    ``ca.key`` nor ``ca.crt`` exists; returns its certificate's fingerprint."""
    return _call_for_string(lib.decnet_pki_ensure_ca, _c_path(ca_dir, "ca_dir", optional=True))


def issue_worker_bundle(name: str, sans: Iterable[str], out_dir: Union[str, os.PathLike[str]],
                        ca_dir: Optional[Union[str, os.PathLike[str]]] = None,
                        validity_days: int = 0) -> str:
    """Issues a worker bundle (``ca.crt``, ``worker.crt``, ``worker.key``) into ``out_dir``,
    signed by the CA in ``ca_dir`` (which must exist; default ``$HOME/.decnet/ca``).

    ``sans`` are names or IP addresses; ``name`` is added as a DNS name when
    not listed. ``validity_days`` 0 means 825. Returns the new certificate's
    fingerprint: the pin for the worker's host record.
    """
    if isinstance(validity_days, bool) or not isinstance(validity_days, int) \
            or not 0 <= validity_days <= 0xFFFFFFFF:
        raise _invalid("validity_days", f"must be an integer from 0 to 2**32-1, not {validity_days!r}")
    array, count = _c_str_array(sans, "sans")
    return _call_for_string(
        lib.decnet_pki_issue_worker_bundle,
        _c_path(ca_dir, "ca_dir", optional=True), _c_text(name, "name"), array, count,
        validity_days, _c_path(out_dir, "out_dir"))


# ---------------------------------------------------------------------------
# The updater channel and enrollment
# ---------------------------------------------------------------------------

#: Updater timeout profile names and their `decnet_updater_profile` codes.
UPDATER_PROFILES: Dict[str, int] = {"control": 0, "update": 1}


class SelfUpdateResult(NamedTuple):
    """How :meth:`UpdaterClient.update_self` succeeded.

    ``connection_closed`` True: the whole request was sent and the updater
    closed the connection before or while answering (it re-executes itself);
    ``body`` is None; confirm with :meth:`UpdaterClient.wait_for_release`.
    Otherwise ``body`` is the updater's 200 answer.
    """

    connection_closed: bool
    body: Optional[Dict[str, Any]]


def _port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise _invalid("port", f"must be an integer from 0 to 65535, not {port!r}")
    return port


def _tarball(tarball: Any) -> "tuple[Optional[bytes], Any, int, Any]":
    """(path, data pointer, length, owner) for a tarball given as bytes or as a path; keep
    ``owner`` alive for the call (the pointer points into it, no copy of ``bytes``)."""
    if isinstance(tarball, (bytes, bytearray, memoryview)):
        data = tarball if isinstance(tarball, bytes) else bytes(tarball)
        owner = c_char_p(data)
        return None, ctypes.cast(owner, POINTER(ctypes.c_uint8)), len(data), owner
    return _c_path(tarball, "tarball"), None, 0, None


def _updater_profile(profile: Union[str, int]) -> int:
    return _profile_code(profile, UPDATER_PROFILES)


class UpdaterClient(_HandleOwner):
    """A client for one worker's updater (port 8766 by default), pinned always.

    Make one with :meth:`from_host` (the pin is the record's
    ``updater_cert_fingerprint``; a record without one is refused with
    :class:`PinMismatchError` before any connection) or :meth:`connect_to`.
    Thread-safe, closed like :class:`Client`.
    """

    def __init__(self, _pointer: Any):
        """Internal: use :meth:`from_host` or :meth:`connect_to`."""
        if not isinstance(_pointer, _UpdaterPtr) or not _pointer:
            raise TypeError("use UpdaterClient.from_host() or UpdaterClient.connect_to()")
        self._handle = _Handle(_pointer, lib.decnet_updater_free, "updater client")

    @classmethod
    def from_host(cls, identity: Identity, host_record: Union[Dict[str, Any], str], port: int = 0,
                  verify_hostname: Optional[bool] = None) -> "UpdaterClient":
        """A client for the updater of the worker in ``host_record`` (dict or JSON text):
        its ``address``, ``name`` and ``updater_cert_fingerprint``; ``port`` 0 means 8766."""
        out = _UpdaterPtr()
        record = _c_json(host_record, "host_record")
        with identity._handle as id_pointer:
            _check(lib.decnet_updater_new_from_host_json(
                id_pointer, record, _port(port), _hostname_choice(verify_hostname), byref(out)))
        return cls(out)

    @classmethod
    def connect_to(cls, identity: Identity, address: str, port: int, pin: str,
                   verify_hostname: Optional[bool] = None) -> "UpdaterClient":
        """A client for the updater at ``address``:``port`` (0: 8766) whose certificate has
        fingerprint ``pin`` (required)."""
        out = _UpdaterPtr()
        with identity._handle as id_pointer:
            _check(lib.decnet_updater_new(
                id_pointer, _c_text(address, "address"), _port(port), _c_text(pin, "pin"),
                _hostname_choice(verify_hostname), byref(out)))
        return cls(out)

    def get_timeouts(self, profile: Union[str, int]) -> Timeouts:
        """The timeouts of ``profile`` (``"control"`` or ``"update"``), in seconds."""
        out = _CTimeouts()
        with self._handle as pointer:
            _check(lib.decnet_updater_get_timeouts(pointer, _updater_profile(profile), byref(out)))
        return Timeouts(out.connect_ms / 1000.0, out.read_ms / 1000.0,
                        out.write_ms / 1000.0, out.pool_ms / 1000.0)

    def set_timeouts(self, profile: Union[str, int], *, connect: Optional[float] = None,
                     read: Optional[float] = None, write: Optional[float] = None) -> Timeouts:
        """Changes the timeouts of ``profile`` (seconds); omitted ones are kept."""
        current = self.get_timeouts(profile)
        value = _CTimeouts(
            _to_ms(current.connect if connect is None else connect, "connect"),
            _to_ms(current.read if read is None else read, "read"),
            _to_ms(current.write if write is None else write, "write"),
            _to_ms(current.pool, "pool"))
        with self._handle as pointer:
            _check(lib.decnet_updater_set_timeouts(pointer, _updater_profile(profile), byref(value)))
        return self.get_timeouts(profile)

    def health(self) -> Dict[str, Any]:
        """``GET /health``: ``{"status": "ok", "role": "updater", "releases": [...]}``."""
        return self._handle.call_json(lib.decnet_updater_health)

    def releases(self) -> Dict[str, Any]:
        """``GET /releases``: ``{"releases": [...]}``."""
        return self._handle.call_json(lib.decnet_updater_releases)

    def rollback(self) -> Dict[str, Any]:
        """``POST /rollback`` to the previous release (404 when there is none)."""
        return self._handle.call_json(lib.decnet_updater_rollback)

    def update(self, tarball: Union[bytes, str, os.PathLike[str]], sha: str = "") -> Dict[str, Any]:
        """``POST /update`` of ``tarball`` (bytes, or a file path streamed from disk) with the
        git ``sha``; the SHA-256 is computed by the library. A 409 (rolled back) or 500 raises
        :class:`HTTPStatusError` with ``update_error``, ``update_stderr`` and ``rolled_back``."""
        path, data, length, _owner = _tarball(tarball)
        return self._handle.call_json(lib.decnet_updater_update, path, data, length,
                                      _c_text(sha, "sha"))

    def update_self(self, tarball: Union[bytes, str, os.PathLike[str]], sha: str = "") -> SelfUpdateResult:
        """``POST /update-self``: see :class:`SelfUpdateResult`. A connection lost during the
        upload raises :class:`ConnectionLostError`."""
        path, data, length, _owner = _tarball(tarball)
        closed = c_bool(False)
        out = _OwnedStr()
        with self._handle as pointer:
            result = lib.decnet_updater_update_self(
                pointer, path, data, length, _c_text(sha, "sha"), byref(closed), byref(out))
            if result != DECNET_OK:
                raise last_error(result)
        if closed.value:
            return SelfUpdateResult(True, None)
        return SelfUpdateResult(False, json.loads(_take_string(out)))

    def wait_for_release(self, sha: str, deadline: float = 120.0, interval: float = 1.0) -> Dict[str, Any]:
        """Polls ``GET /health`` every ``interval`` seconds until the active release is ``sha``,
        for at most ``deadline`` seconds (then :class:`AgentTimeoutError`); returns that health."""
        return self._handle.call_json(lib.decnet_updater_wait_for_release, _c_text(sha, "sha"),
                                      _to_ms(deadline, "deadline"), _to_ms(interval, "interval"))

    def __repr__(self) -> str:
        return "<UpdaterClient closed>" if self.closed else "<UpdaterClient>"


def enroll(name: str, address: str, sans: Iterable[str] = (), agent_port: int = 0,
           with_updater: bool = True, reissue: bool = False,
           ca_dir: Union[str, os.PathLike[str], None] = None) -> Dict[str, Any]:
    """Enrolls worker ``name`` at ``address`` with the CA in ``ca_dir`` (default
    ``$HOME/.decnet/ca``; it must exist) and returns its host record.

    Writes ``<ca_dir>/workers/<name>/{ca.crt,worker.crt,worker.key}`` and, with
    ``with_updater``, ``<ca_dir>/workers/<name>/updater/{updater.crt,updater.key}``.
    A name already enrolled raises :class:`InvalidArgumentError` unless ``reissue``.
    """
    array, count = _c_str_array(sans, "sans")
    return _call_for_json(
        lib.decnet_enroll, _c_path(ca_dir, "ca_dir", optional=True), _c_text(name, "name"),
        _c_text(address, "address"), array, count, _port(agent_port), bool(with_updater),
        bool(reissue))
# Fleets
# ---------------------------------------------------------------------------


class _FleetStruct(_Opaque):
    """`struct decnet_fleet` (opaque)."""


class _CSweepOptions(Structure):
    """`struct decnet_sweep_options`: 0 in a field means the fleet's setting."""

    _fields_ = [("concurrency", c_size_t), ("deadline_ms", c_uint64)]


_FleetPtr = POINTER(_FleetStruct)
#: `decnet_fleet_callback`: ``int (*)(const char *host_result_json, void *user_data)``.
_FleetCallback = ctypes.CFUNCTYPE(c_int, c_char_p, ctypes.c_void_p)

_FLEET_SIGNATURES: Dict[str, "tuple[Any, List[Any]]"] = {
    "decnet_fleet_new": (_Result, [_IdentityPtr, c_char_p, c_uint32, POINTER(_FleetPtr)]),
    "decnet_fleet_free": (None, [_FleetPtr]),
    "decnet_fleet_size": (_Result, [_FleetPtr, POINTER(c_size_t)]),
    "decnet_fleet_set_timeouts": (_Result, [_FleetPtr, c_uint32, POINTER(_CTimeouts)]),
    "decnet_fleet_set_concurrency": (_Result, [_FleetPtr, c_size_t]),
    "decnet_fleet_set_session_resumption": (_Result, [_FleetPtr, c_bool]),
    "decnet_fleet_handshake_counts": (_Result, [_FleetPtr, POINTER(_CHandshakeCounts)]),
    "decnet_fleet_set_deadline_ms": (_Result, [_FleetPtr, c_uint64]),
    "decnet_fleet_call": (
        _Result,
        [_FleetPtr, c_char_p, c_char_p, POINTER(_CSweepOptions), _FleetCallback, ctypes.c_void_p,
         POINTER(_OwnedStr)],
    ),
}
for _name, (_restype, _argtypes) in _FLEET_SIGNATURES.items():
    if not hasattr(lib, _name):
        raise ImportError(
            f"decnet_agent_client: the library at {_LIBRARY_PATH} lacks {_name}: "
            "it is older than this module; rebuild it (cargo build --release --lib)")
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes
_SIGNATURES.update(_FLEET_SIGNATURES)
del _name, _restype, _argtypes, _function

#: The RPC names a fleet accepts.
FLEET_RPCS = ("health", "status", "topology-state", "self-destruct", "deploy", "mutate",
              "teardown", "apply-topology", "teardown-topology")


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

    def set_concurrency(self, concurrency: int) -> None:
        """Sets the default number of hosts in flight at once (1 to 4096; default 64)."""
        with self._handle as pointer:
            _check(lib.decnet_fleet_set_concurrency(pointer, _count(concurrency, "concurrency")))

    def set_deadline(self, seconds: Optional[float]) -> None:
        """Sets (or, with None, clears) the default deadline of a call, in seconds."""
        ms = 0 if seconds is None else _to_ms(seconds, "deadline")
        if seconds is not None and ms == 0:
            raise _invalid("deadline", "must be greater than zero")
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
            0 if deadline is None else max(_to_ms(deadline, "deadline"), 1))
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
