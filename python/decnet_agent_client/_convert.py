"""Checking and converting Python arguments to the C types the library takes."""

from __future__ import annotations

import json
import math
import os
from ctypes import c_char_p
from typing import Any, Dict, Iterable, Optional, Union

from ._native import _HOSTNAME_FROM_ENV, _HOSTNAME_OFF, _HOSTNAME_ON, PROFILES
from .errors import InvalidArgumentError


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


def _port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise _invalid("port", f"must be an integer from 0 to 65535, not {port!r}")
    return port
