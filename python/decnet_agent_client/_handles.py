"""Ownership of C handles: calls counted in flight, freed exactly once."""

from __future__ import annotations

import ctypes
import threading
from ctypes import byref
from typing import Any, Dict

from ._native import DECNET_OK, _OwnedStr, lib
from .errors import ClosedError, InternalError, _decode_json, last_error
from .logging_bridge import sync_logging

#: Bound once: the RPC hot path reads every answer with it.
_string_at = ctypes.string_at


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
