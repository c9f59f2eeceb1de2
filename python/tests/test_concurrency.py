"""One Client shared by many threads, and close() racing calls in flight."""

from __future__ import annotations

import threading
import time

import pytest

import decnet_agent_client as dac

THREADS = 8
CALLS = 200


def test_eight_threads_two_hundred_calls_each(client, worker):
    barrier = threading.Barrier(THREADS)
    failures = []
    results = [0] * THREADS

    def run(index):
        try:
            barrier.wait()
            for i in range(CALLS):
                kind = (index + i) % 4
                if kind == 0:
                    assert client.health() == {"status": "ok"}
                elif kind == 1:
                    assert "deployed" in client.status()
                elif kind == 2:
                    answer = client.mutate(f"decky-{index}", [f"svc-{i}"])
                    assert answer == {"status": "accepted", "decky_id": f"decky-{index}",
                                      "services": [f"svc-{i}"]}
                else:
                    assert client.topology_state() == {"applied": False}
                results[index] += 1
        except BaseException as error:  # noqa: BLE001 - report everything
            failures.append((index, repr(error)))

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    assert failures == []
    assert results == [CALLS] * THREADS
    assert len(worker.ledger) == THREADS * CALLS
    mutations = [body for (_m, path, body) in worker.ledger if path == "/mutate"]
    assert len(mutations) == THREADS * CALLS // 4
    # keep-alive pooling: at most one connection per concurrent caller, not one per call
    assert worker.handshakes <= THREADS, worker.handshakes
    print(f"\n{THREADS}x{CALLS} calls in {elapsed:.2f}s over {worker.handshakes} connections")


def test_errors_stay_on_their_own_thread(identity, worker, free_port):
    """Each thread's exception carries its own detail although all fail at once."""
    good = dac.Client.from_host(identity, worker.host_record(), verify_hostname=True)
    refused = dac.Client.connect_to(identity, "127.0.0.1", free_port, None)
    worker.set_fault(None)
    failures = []
    barrier = threading.Barrier(6)

    def http_404(n):
        barrier.wait()
        for _ in range(30):
            try:
                good.mutate(f"ghost-{n}", ["ssh"], dry_run=True)
            except dac.HTTPStatusError as error:
                if error.status != 404 or error.detail != "no active deployment":
                    failures.append(repr(error))
            else:
                failures.append("no error")

    def connect_refused(n):
        barrier.wait()
        for _ in range(30):
            try:
                refused.health()
            except dac.ConnectError as error:
                if str(free_port) not in error.message:
                    failures.append(repr(error))
            else:
                failures.append("no error")

    def bad_argument(n):
        barrier.wait()
        for _ in range(30):
            try:
                dac.topology_hash("[]")
            except dac.InvalidArgumentError as error:
                if "hydrated" not in error.message:
                    failures.append(repr(error))
            else:
                failures.append("no error")

    threads = [threading.Thread(target=f, args=(n,)) for n in range(2)
               for f in (http_404, connect_refused, bad_argument)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    good.close()
    refused.close()
    assert failures == []


def test_close_while_calls_are_in_flight(identity, worker):
    """close() never frees the handle under a running call: the call finishes, later ones
    raise ClosedError, and the handle is freed once the last call returns."""
    client = dac.Client.from_host(identity, worker.host_record(), verify_hostname=True)
    worker.set_fault("stall", 0.5)
    outcome = {}

    def slow_call():
        outcome["answer"] = client.status()

    thread = threading.Thread(target=slow_call)
    thread.start()
    deadline = time.monotonic() + 5
    while not worker.ledger and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.ledger, "the call never reached the worker"
    started = time.monotonic()
    client.close()  # returns at once, without waiting for the call
    assert time.monotonic() - started < 0.2
    assert client._handle._pointer is not None  # still alive: a call is in flight
    with pytest.raises(dac.ClosedError):
        client.health()
    thread.join(10)
    assert outcome["answer"]["deployed"] is False
    assert client._handle._pointer is None  # freed by the last call out


def test_close_racing_many_threads(identity, worker):
    for _round in range(5):
        client = dac.Client.from_host(identity, worker.host_record(), verify_hostname=True)
        stop_reasons = []
        errors = []

        def hammer():
            while True:
                try:
                    client.health()
                    repr(client)
                    client.get_timeouts("control")
                except dac.ClosedError:
                    stop_reasons.append("closed")
                    return
                except BaseException as error:  # noqa: BLE001
                    errors.append(repr(error))
                    return

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        client.close()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert stop_reasons == ["closed"] * 6
        assert client._handle._pointer is None
