"""A pinned client for one worker's updater."""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import POINTER, byref, c_bool, c_char_p
from typing import Any, Dict, NamedTuple, Optional, Union

from ._convert import _c_json, _c_path, _c_text, _hostname_choice, _port, _profile_code, _to_ms
from ._handles import _Handle, _HandleOwner
from ._native import DECNET_OK, _CTimeouts, _OwnedStr, _UpdaterPtr, lib
from .client import Timeouts
from .errors import _check, _take_string, last_error
from .identity import Identity


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
