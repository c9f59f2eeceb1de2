"""The master's identity, the CA, worker bundles and enrollment."""

from __future__ import annotations

import os
from ctypes import byref
from typing import Any, Dict, Iterable, Optional, Union

from ._convert import _c_path, _c_str_array, _c_text, _invalid, _port
from ._handles import _Handle, _HandleOwner
from ._native import _IdentityPtr, lib
from .errors import _call_for_json, _call_for_string, _check


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
