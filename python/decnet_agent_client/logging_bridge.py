"""The library's events bridged to the ``decnet_agent_client`` logger."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Optional

from ._native import _LogCallback, lib
from .errors import _check


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
