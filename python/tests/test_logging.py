"""The library's events through ``logging.getLogger("decnet_agent_client")``.

Each test starts from a logger with no handlers that does not propagate, so
pytest's own capture handlers (which it attaches as each test phase starts,
to the root logger and to loggers that do not propagate) never decide what
is installed.
"""

from __future__ import annotations

import logging
import threading

import pytest

import decnet_agent_client as dac

CONFIG = {"mode": "unihost", "deckies": [{"name": "d1", "services": ["ssh"]}]}


def isolate(log: logging.Logger) -> None:
    """No handlers, no propagation (run inside the test, after pytest added its own)."""
    log.handlers[:] = []
    log.propagate = False
    log.setLevel(logging.NOTSET)


class Collect(logging.Handler):
    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def names(self):
        return [r.decnet_event["event"] for r in self.records]


@pytest.fixture
def logger():
    """The library's logger, restored afterwards; each test calls :func:`isolate` first."""
    log = logging.getLogger(dac.LOGGER_NAME)
    saved = (log.handlers[:], log.level, log.propagate)
    yield log
    log.handlers[:], level, log.propagate = saved
    log.setLevel(level)
    dac.sync_logging()


def test_no_callback_is_installed_while_no_handler_wants_the_events(logger, client):
    isolate(logger)
    assert client.health() == {"status": "ok"}
    assert dac.lib.decnet_get_log_level() == 0, "no handler: no callback"

    handler = Collect(logging.ERROR)
    logger.addHandler(handler)
    logger.setLevel(dac.TRACE)
    client.health()
    assert dac.lib.decnet_get_log_level() == 1, "a handler for errors only: level error"
    assert handler.records == []

    handler.setLevel(logging.DEBUG)
    client.health()
    assert dac.lib.decnet_get_log_level() == 4
    logger.setLevel(logging.INFO)
    client.health()
    assert dac.lib.decnet_get_log_level() == 3, "the logger's own level counts too"
    handler.setLevel(dac.TRACE)
    logger.setLevel(dac.TRACE)
    client.health()
    assert dac.lib.decnet_get_log_level() == 5

    logger.removeHandler(handler)
    client.health()
    assert dac.lib.decnet_get_log_level() == 0, "the last handler gone: removed again"
    # A propagating logger counts its ancestors' handlers.
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [Collect(logging.WARNING)]  # instead of pytest's own
    try:
        logger.propagate = True
        logger.setLevel(logging.DEBUG)
        client.health()
        assert dac.lib.decnet_get_log_level() == 2, "the root handler wants warnings"
    finally:
        root.handlers[:] = saved
        logger.propagate = False


def test_one_call_logs_its_events_in_order(logger, identity, worker):
    isolate(logger)
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(dac.TRACE)
    with dac.Client.from_host(identity, worker.host_record(pinned=True), verify_hostname=True) as c:
        assert c.health() == {"status": "ok"}
    assert handler.names() == ["request.sent", "connection.opened", "request.answered", "response.body"]
    assert [r.levelno for r in handler.records] == [logging.DEBUG, logging.INFO, logging.INFO, dac.TRACE]
    opened = handler.records[1].decnet_event
    assert opened["handshake"] == "full"
    assert opened["peer_fingerprint"] == worker.fingerprint
    assert opened["address"] == f"127.0.0.1:{worker.port}"
    answered = handler.records[2].decnet_event
    assert (answered["method"], answered["path"], answered["status"]) == ("GET", "/health", 200)
    assert answered["duration_ms"] > 0
    # The message is the event's JSON line; it runs on the calling thread.
    assert handler.records[2].getMessage().startswith('{"level":"info","event":"request.answered"')
    assert {r.thread for r in handler.records} == {threading.get_ident()}


def test_levels_filter_what_is_formatted(logger, client):
    isolate(logger)
    handler = Collect(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    client.deploy(CONFIG, dry_run=True)
    assert "request.body" not in handler.names() and "response.body" not in handler.names()
    assert "request.answered" in handler.names()
    assert all(r.levelno >= logging.INFO for r in handler.records)


def test_failures_are_logged_with_their_kind(logger, identity, free_port):
    isolate(logger)
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    with dac.Client.connect_to(identity, "127.0.0.1", free_port, None) as c:
        with pytest.raises(dac.ConnectError):
            c.connect()
        with pytest.raises(dac.ConnectError):
            c.status()
    assert handler.names() == ["connection.failed", "request.failed"]
    assert [r.decnet_event["kind"] for r in handler.records] == ["connect", "connect"]
    assert all(r.levelno == logging.ERROR for r in handler.records)


def test_a_raising_handler_does_not_break_the_call(logger, client):
    isolate(logger)
    calls = []

    class Raising(logging.Handler):
        def emit(self, record):
            calls.append(record)
            raise RuntimeError("handler failure")

        def handle(self, record):  # no handleError safety net: the exception escapes
            self.emit(record)

    logger.addHandler(Raising())
    logger.setLevel(dac.TRACE)
    for _ in range(3):
        assert client.health() == {"status": "ok"}
    assert client.deploy(CONFIG, dry_run=True)
    assert len(calls) >= 9


def test_no_event_carries_key_material(logger, identity, worker, ca_dir):
    isolate(logger)
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(dac.TRACE)
    with dac.Client.from_host(identity, worker.host_record(pinned=True), verify_hostname=True) as c:
        c.connect()
        c.health()
        c.deploy(CONFIG, dry_run=True)
        c.mutate("d1", ["ssh"])
    text = "\n".join(r.getMessage() for r in handler.records)
    assert len(handler.records) >= 8
    assert "PRIVATE KEY" not in text
    for key in (ca_dir / "master" / "worker.key", ca_dir / "ca.key"):
        lines = [line for line in key.read_text().splitlines() if not line.startswith("-----")]
        assert lines
        for line in lines:
            for start in range(0, max(len(line) - 24, 0), 8):
                assert line[start:start + 24] not in text, f"{key.name} leaked"
