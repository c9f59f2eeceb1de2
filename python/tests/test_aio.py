"""decnet_agent_client.aio against OpenSSL stand-in workers: the loop keeps running,
pins fail at ``async with``, cancellation returns at once, fleets stream results."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time

import pytest

import decnet_agent_client as dac
from decnet_agent_client import aio


@pytest.fixture
def master(ca_dir, identity):
    """The reference-shaped identity (paths) of the conftest's master bundle."""
    return aio.ensure_master_identity(ca_dir)


async def _ticks_during(awaitable, period=0.01):
    """(result or exception, ticks of a ``period`` ticker while ``awaitable`` ran)."""
    ticks = 0
    running = True

    async def ticker():
        nonlocal ticks
        while running:
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        return await awaitable, ticks
    finally:
        running = False
        await task


def test_a_slow_worker_does_not_block_the_loop(worker, master):
    worker.set_fault("stall", 1.0)

    async def main():
        async with aio.AgentClient(worker.host_record(), identity=master,
                                   verify_hostname=True) as agent:
            return await _ticks_during(agent.health())

    answer, ticks = asyncio.run(main())
    assert answer["status"] == "ok"
    assert ticks >= 30, f"the loop ticked {ticks} times in a 1 s call"  # 100 when idle


def test_a_wrong_pin_fails_at_async_with_before_any_request(worker, master):
    async def main():
        async with aio.AgentClient(worker.host_record(pin="0" * 64), identity=master):
            pass

    with pytest.raises(aio.FingerprintMismatchError) as caught:
        asyncio.run(main())
    error = caught.value
    assert isinstance(error, RuntimeError) and isinstance(error, dac.PinMismatchError)
    assert error.host == f"127.0.0.1:{worker.port}"
    assert error.expected == "0" * 64 and error.actual == worker.fingerprint
    assert worker.ledger == []


def test_a_cancelled_call_returns_at_once(worker, master):
    worker.set_fault("stall", 3.0)

    async def main():
        async with aio.AgentClient(worker.host_record(), identity=master) as agent:
            task = asyncio.ensure_future(agent.health())
            await asyncio.sleep(0.3)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started

    assert asyncio.run(main()) < 0.5


def test_http_errors_carry_the_status(worker, master):
    worker.set_fault("server_error")

    async def main():
        async with aio.AgentClient(worker.host_record(), identity=master) as agent:
            await agent.status()

    with pytest.raises(dac.HTTPStatusError) as caught:
        asyncio.run(main())
    assert isinstance(caught.value, aio.HTTPStatusError) and caught.value.status == 500


def test_an_updater_host_without_a_pin_is_refused_before_connecting(free_port, master):
    async def main():
        async with aio.UpdaterClient({"address": "127.0.0.1"}, updater_port=free_port,
                                     identity=master):
            pass

    with pytest.raises(aio.FingerprintMismatchError) as caught:
        asyncio.run(main())
    assert "no updater_cert_fingerprint" in caught.value.expected


def test_a_fleet_streams_results_with_async_for(start_worker, rsa_bundle, identity):
    workers = [start_worker(rsa_bundle) for _ in range(3)]
    workers[0].set_fault("stall", 1.0)
    hosts = [w.host_record(name=f"w{i}") for i, w in enumerate(workers)]

    async def main():
        with dac.Fleet(identity, hosts, verify_hostname=True) as fleet:
            swept = aio.AsyncFleet(fleet)

            async def collect():
                return [r async for r in swept.as_completed("health")]
            streamed = await _ticks_during(collect())
            return streamed, await swept.call("health", [1, 2])

    (results, ticks), called = asyncio.run(main())
    assert [r.index for r in called] == [1, 2] and all(r.ok for r in called)
    assert [r.index for r in results][-1] == 0  # the stalled host completes last
    assert sorted(r.index for r in results) == [0, 1, 2] and all(r.ok for r in results)
    assert ticks >= 30, f"the loop ticked {ticks} times during a 1 s sweep"


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread")
def test_an_async_fleet_sweeps_below_the_loops_priority(start_worker, rsa_bundle, identity):
    hosts = [start_worker(rsa_bundle).host_record(name=f"w{i}") for i in range(3)]
    answered_at = []  # the nice values of the threads that got the answers

    class Answered(logging.Handler):  # the bridge logs on the thread doing the work
        def emit(self, record: logging.LogRecord) -> None:
            if record.decnet_event["event"] == "request.answered":
                answered_at.append(_thread_nice())

    log = logging.getLogger(dac.LOGGER_NAME)
    saved = (log.handlers[:], log.level, log.propagate)

    async def main():
        async with (await aio.AsyncFleet.create(identity, hosts, sweep_niceness=13,
                                                verify_hostname=True)) as swept:
            streamed = [r async for r in swept.as_completed("health")]
            called = await swept.call("health")
            return _thread_nice(), streamed, called, swept.fleet

    try:
        log.handlers[:], log.propagate = [Answered()], False
        log.setLevel(logging.INFO)
        dac.sync_logging()
        on_loop, streamed, called, fleet = asyncio.run(main())
    finally:
        log.handlers[:], level, log.propagate = saved
        log.setLevel(level)
        dac.sync_logging()
    assert all(r.ok for r in streamed + called)
    assert answered_at == [min(19, on_loop + 13)] * 6, (answered_at, on_loop)
    assert _thread_nice() == on_loop, "the loop's own thread keeps its priority"
    assert fleet.closed, "leaving async with closes the fleet"
    with dac.Fleet(identity, hosts) as other:
        for outside in (9, 20, True):  # below the completion threads' 10; above 19
            with pytest.raises(dac.InvalidArgumentError):
                aio.AsyncFleet(other, sweep_niceness=outside)


def test_leaving_async_for_early_stops_the_sweep(start_worker, rsa_bundle, identity):
    workers = [start_worker(rsa_bundle) for _ in range(3)]
    workers[1].set_fault("stall", 0.5)  # in flight when the loop leaves
    hosts = [w.host_record(name=f"w{i}") for i, w in enumerate(workers)]

    async def main():
        with dac.Fleet(identity, hosts, verify_hostname=True) as fleet:
            results = aio.AsyncFleet(fleet).as_completed("health", concurrency=1)
            async for first in results:
                break
            await results.aclose()
            # The loop keeps running while the stalled host's call ends on the sweep's thread.
            await asyncio.sleep(1.0)
            return first

    first = asyncio.run(main())
    assert first.ok and first.index == 0 and first.result == {"status": "ok"}
    assert workers[2].ledger == [], "a host after the stop was contacted"


def _completion_threads() -> list:
    """The nice values of this process's completion threads (named by the library)."""
    values = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().strip() != "decnet-completi":
                    continue
            values.append(os.getpriority(os.PRIO_PROCESS, int(task)))
        except OSError:  # the thread ended meanwhile
            continue
    return values


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and per-thread nice")
def test_agent_calls_and_sweeps_complete_on_the_librarys_threads(start_worker, rsa_bundle,
                                                                 master, identity, monkeypatch):
    workers = [start_worker(rsa_bundle) for _ in range(4)]
    for w in workers:
        w.set_fault("stall", 0.3)

    def no_pool():
        raise AssertionError("an agent call or a sweep used the thread pool")

    monkeypatch.setattr(aio, "_executor", no_pool)
    seen = []

    async def one(worker):
        async with aio.AgentClient(worker.host_record(), identity=master) as agent:
            return await agent.health()

    python_threads = []

    async def main():
        gathered = asyncio.gather(*(one(w) for w in workers))
        await asyncio.sleep(0.2)  # the calls are running
        seen.extend(_completion_threads())
        answers = await gathered
        with dac.Fleet(identity, [w.host_record(name=f"w{i}") for i, w in enumerate(workers)],
                       verify_hostname=True) as fleet:
            swept = aio.AsyncFleet(fleet)
            streamed = []
            before = set(threading.enumerate())  # earlier tests' pool threads may linger
            async for result in swept.as_completed("status"):
                python_threads.extend(t.name for t in set(threading.enumerate()) - before)
                streamed.append(result)
            called = await swept.call("health", [0, 1])
        return _thread_nice(), answers, streamed, called

    on_loop, answers, streamed, called = asyncio.run(main())
    assert answers == [{"status": "ok"}] * 4
    assert seen, "no completion thread ran the calls"  # (their bound: tests/completions.rs)
    assert set(seen) == {min(19, on_loop + 10)}, (seen, on_loop)
    assert sorted(r.index for r in streamed) == [0, 1, 2, 3] and all(r.ok for r in streamed)
    assert [r.index for r in called] == [0, 1] and all(r.ok for r in called)
    assert not [name for name in python_threads if name.startswith("decnet")], python_threads
    assert [[path for _, path, _ in w.ledger] for w in workers] == [
        ["/health", "/status", "/health"]] * 2 + [["/health", "/status"]] * 2


def test_a_cancelled_call_still_queued_is_never_sent(worker, master):
    worker.set_fault("stall", 0.8)
    aio.set_max_workers(1)  # the second call waits for the first one's thread

    async def main():
        async with aio.AgentClient(worker.host_record(), identity=master) as agent:
            first = asyncio.ensure_future(agent.health())
            queued = asyncio.ensure_future(agent.self_destruct())
            await asyncio.sleep(0.3)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            answer = await first
            await asyncio.sleep(0.5)  # time for a wrongly started call to arrive
            return answer

    try:
        assert asyncio.run(main()) == {"status": "ok"}
    finally:
        aio.set_max_workers(min(64, 4 * (os.cpu_count() or 1)))
    assert [path for _, path, _ in worker.ledger] == ["/health"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_loop_gone_with_a_call_in_flight_frees_its_queue_once_the_call_ends(worker, master):
    import gc

    worker.set_fault("stall", 0.5)

    async def main():
        agent = aio.AgentClient(worker.host_record(), identity=master)
        await agent.__aenter__()
        asyncio.ensure_future(agent.health())  # still running when asyncio.run ends
        await asyncio.sleep(0.1)

    asyncio.run(main())
    gc.collect()
    deadline = time.monotonic() + 10
    while _completion_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _completion_threads() == [], "completion threads outlived their loop's queue"
    assert [path for _, path, _ in worker.ledger] == ["/health"]


def test_agent_errors_from_completions_keep_their_classes(start_worker, rsa_bundle, master,
                                                          free_port):
    worker = start_worker(rsa_bundle)
    worker.set_fault("server_error")

    async def main():
        async with aio.AgentClient(worker.host_record(), identity=master) as agent:
            with pytest.raises(aio.HTTPStatusError) as http:
                await agent.deploy('{"deckies": [{"name": "d1"}]}')
            with pytest.raises(dac.InvalidArgumentError):
                await agent.mutate(7, ["ssh"])  # type: ignore[arg-type]
        refused = aio.AgentClient(address="127.0.0.1", agent_port=free_port, identity=master)
        with pytest.raises(dac.ConnectError) as connect:
            await refused.__aenter__()
        return http.value, connect.value

    http, connect = asyncio.run(main())
    assert http.status == 500 and isinstance(http, dac.HTTPStatusError)
    assert connect.kind == "connect"
    assert [path for _, path, _ in worker.ledger] == ["/deploy"]


def test_cancelling_an_async_fleet_call_stops_the_sweep(start_worker, rsa_bundle, identity):
    workers = [start_worker(rsa_bundle) for _ in range(3)]
    workers[0].set_fault("stall", 0.6)  # in flight when the task is cancelled
    hosts = [w.host_record(name=f"w{i}") for i, w in enumerate(workers)]

    async def main():
        with dac.Fleet(identity, hosts, verify_hostname=True) as fleet:
            task = asyncio.ensure_future(aio.AsyncFleet(fleet).call("health", concurrency=1))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(1.0)  # the stalled host ends; nothing after it starts

    asyncio.run(main())
    assert [path for _, path, _ in workers[0].ledger] == ["/health"]
    assert workers[1].ledger == [] and workers[2].ledger == [], "a host after the stop was contacted"
