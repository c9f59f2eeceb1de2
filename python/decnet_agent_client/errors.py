"""The exceptions, one per result code, and reading the library's per-thread
error detail; the helpers that call a function answering an owned string."""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_char
from typing import Any, Dict, Optional

from ._native import DECNET_OK, _OwnedStr, _text, lib


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


#: Timeout phases by their ``decnet_timeout_phase`` number, as
#: :attr:`AgentTimeoutError.phase` names them.
TIMEOUT_PHASES = {1: "connect", 2: "handshake", 3: "write", 4: "read", 5: "pool", 6: "deadline"}


class AgentTimeoutError(DecnetError, TimeoutError):
    """A timeout of the call's profile, or a deadline set over many calls,
    expired. Also a builtin :class:`TimeoutError`.

    Attributes:
        phase: which phase ran out of time: ``"connect"``, ``"handshake"``,
            ``"write"``, ``"read"``, ``"pool"`` or ``"deadline"`` (a fleet
            sweep's or a release wait's).
        may_have_reached_worker: True once any byte of the request had left,
            so a POST may have taken effect; False means nothing was sent.
    """

    code = 8

    def __init__(self, message: str, *, phase: Optional[str] = None,
                 may_have_reached_worker: bool = False, **kw: Any):
        super().__init__(message, **kw)
        self.phase = phase
        self.may_have_reached_worker = may_have_reached_worker


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
    elif cls is AgentTimeoutError:
        kw["phase"] = TIMEOUT_PHASES.get(int(lib.decnet_last_error_timeout_phase()))
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
