"""Fleets from Python, against a swarm of stand-in workers in another process.

The swarm is the crate's ``swarm`` example (each stand-in with its own
certificate and pin on its own loopback port); ``DECNET_SWARM_BIN`` names a
built one, else it is built with cargo into ``target/testkit`` (as the C
suite does).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import decnet_agent_client as dac

REPO = Path(__file__).resolve().parents[2]
COUNT = 30  # 3 of each fault kind


def _swarm_binary() -> Path:
    named = os.environ.get("DECNET_SWARM_BIN")
    if named:
        return Path(named)
    subprocess.run(
        ["cargo", "build", "--release", "--features", "testkit", "--example", "swarm",
         "--target-dir", "target/testkit"],
        cwd=REPO, check=True)
    return REPO / "target" / "testkit" / "release" / "examples" / "swarm"


# Each swarm member's behaviour by host name, from the swarm's members.json
# (a host record has no room for it).
BEHAVIOUR: dict[str, str] = {}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    """(directory, host records) of a running 30-stand-in swarm."""
    directory = tmp_path_factory.mktemp("swarm")
    process = subprocess.Popen(
        [str(_swarm_binary()), str(directory), str(COUNT), "--stall", "3", "--stall-secs", "20",
         "--wrong-cert", "3", "--refuse", "3", "--server-error", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        until = time.monotonic() + 120
        while not (directory / "ready").exists():
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < until, "swarm not ready after 120 s"
            time.sleep(0.1)
        members = json.loads((directory / "members.json").read_text())
        BEHAVIOUR.update((m["name"], m["behaviour"]) for m in members)
        yield directory, json.loads((directory / "hosts.json").read_text())
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def fleet(swarm):
    directory, hosts = swarm
    with dac.Identity.ensure(directory / "ca") as identity, \
            dac.Fleet(identity, hosts, verify_hostname=True) as f:
        f.set_timeouts("control", connect=5, read=2, write=5)
        yield f


EXPECTED = {
    "healthy": None,
    "stall": dac.AgentTimeoutError,
    "wrong-cert": dac.PinMismatchError,
    "refuse": dac.ConnectError,
    "server-error": dac.HTTPStatusError,
}


def test_every_host_gets_a_typed_outcome(swarm, fleet):
    _, hosts = swarm
    assert len(fleet) == COUNT
    order = []
    results = fleet.health(on_result=lambda r: order.append(r.index))
    assert [r.index for r in results] == list(range(COUNT))
    assert sorted(order) == list(range(COUNT))
    for record, r in zip(hosts, results):
        assert r.name == record["name"] and r.uuid == record["uuid"]
        assert r.address == f"127.0.0.1:{record['agent_port']}"
        expected = EXPECTED[BEHAVIOUR[record["name"]]]
        if expected is None:
            assert r.ok and r.result == {"status": "ok"} and r.error is None, r
        else:
            assert r.outcome == "error" and isinstance(r.error, expected), r
    by_behaviour = {BEHAVIOUR[record["name"]]: r for record, r in zip(hosts, results)}
    pin = by_behaviour["wrong-cert"]
    record = hosts[pin.index]
    assert pin.error.expected == record["client_cert_fingerprint"]
    assert pin.error.actual and pin.error.actual != pin.error.expected
    failure = by_behaviour["server-error"].error
    assert failure.status == 500 and failure.detail == "simulated worker failure"
    assert isinstance(by_behaviour["stall"].error, TimeoutError)
    assert by_behaviour["stall"].elapsed >= 2.0
    # The stalled hosts complete last.
    stalled = {i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "stall"}
    assert set(order[-len(stalled):]) == stalled


def test_as_completed_yields_in_completion_order(swarm, fleet):
    _, hosts = swarm
    seen = list(fleet.as_completed("status", concurrency=8))
    assert sorted(r.index for r in seen) == list(range(COUNT))
    stalled = {i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "stall"}
    assert {r.index for r in seen[-len(stalled):]} == stalled
    assert all(isinstance(r.error, dac.AgentTimeoutError) for r in seen[-len(stalled):])


def test_as_completed_closed_early_stops_the_call(swarm, fleet):
    _, hosts = swarm
    healthy = [record["uuid"] for record in hosts if BEHAVIOUR[record["name"]] == "healthy"]
    stall = next(record["uuid"] for record in hosts if BEHAVIOUR[record["name"]] == "stall")
    # One thread: while the stalled host (second) is in flight, the stop lands.
    plan = [healthy[0], stall] + healthy[1:]
    iterator = fleet.as_completed("health", plan, concurrency=1)
    first = next(iterator)
    assert first.ok and first.uuid == healthy[0]
    iterator.close()
    results = fleet.health(plan, concurrency=1, on_result=lambda r: True)
    assert results[0].ok
    # The thread may take the stalled host before the stop lands, or not.
    assert results[1].not_attempted or isinstance(results[1].error, dac.AgentTimeoutError)
    assert [r.not_attempted for r in results[2:]] == [True] * (len(plan) - 2)
    assert all(r.error is None and r.result is None for r in results[2:])


def test_per_host_arguments_and_references(swarm, fleet):
    _, hosts = swarm
    healthy = [(i, record) for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "healthy"]
    configs = {}
    for n, (i, record) in enumerate(healthy):
        reference = (i, record["uuid"], record["name"])[n % 3]
        configs[reference] = {"deckies": [{"name": f"decky-of-{record['name']}", "services": ["ssh"]}]}
    results = fleet.deploy(configs, dry_run=True)
    assert len(results) == len(healthy)
    for r in results:
        assert r.ok, r
        assert r.result["deckies"] == [f"decky-of-{r.name}"]


def test_deadline_and_bad_plans(swarm, fleet):
    _, hosts = swarm
    stalled = [i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "stall"]
    fleet.set_timeouts("control", connect=5, read=15, write=5)
    began = time.monotonic()
    results = fleet.health(stalled, deadline=0.5)
    assert time.monotonic() - began < 5
    assert all(isinstance(r.error, dac.AgentTimeoutError) for r in results)
    # Cut by the sweep's deadline after the request had left.
    assert all(r.error.phase == "deadline" and r.error.may_have_reached_worker for r in results)
    # A zero deadline is refused, in a call as in the fleet's default.
    with pytest.raises(dac.InvalidArgumentError, match="deadline"):
        fleet.health(deadline=0)
    with pytest.raises(dac.InvalidArgumentError, match="deadline"):
        fleet.set_deadline(0)
    with pytest.raises(dac.InvalidArgumentError, match="plan\\[1\\].host"):
        fleet.health([0, hosts[0]["uuid"]])
    with pytest.raises(dac.InvalidArgumentError, match="rpc"):
        fleet.call("reboot")
    with pytest.raises(dac.InvalidArgumentError, match="concurrency"):
        fleet.health(concurrency=0)


def test_callback_exception_stops_and_is_raised(swarm, fleet):
    _, hosts = swarm
    healthy = [record["name"] for record in hosts if BEHAVIOUR[record["name"]] == "healthy"]
    calls = []

    def boom(result):
        calls.append(result.index)
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fleet.health(healthy, concurrency=1, on_result=boom)
    assert len(calls) == 1


def test_duplicate_hosts_and_closed_fleet(swarm):
    directory, hosts = swarm
    with dac.Identity.ensure(directory / "ca") as identity:
        with pytest.raises(dac.InvalidArgumentError, match="hosts\\[1\\].uuid"):
            dac.Fleet(identity, [hosts[0], dict(hosts[1], uuid=hosts[0]["uuid"])])
        empty = dac.Fleet(identity, [])
        assert len(empty) == 0 and empty.health() == []
        empty.close()
        with pytest.raises(dac.ClosedError):
            empty.health()


def test_calls_from_threads_share_the_fleet(swarm, fleet):
    _, hosts = swarm
    healthy = [i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "healthy"]
    outcomes = []

    def sweep():
        outcomes.append(all(r.ok for r in fleet.status(healthy)))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [True] * 4


def test_handshake_counts_and_the_resumption_switch(swarm, fleet):
    """Counts sum over the hosts; the switch is checked and reaches every host's client."""
    _, hosts = swarm
    assert fleet.handshake_counts() == (0, 0)
    healthy = [i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "healthy"]
    fleet.set_session_resumption(False)
    results = fleet.health(hosts=healthy)
    assert all(r.ok for r in results), results
    counts = fleet.handshake_counts()
    assert counts == dac.HandshakeCounts(full=len(healthy), resumed=0)
    with pytest.raises(dac.InvalidArgumentError):
        fleet.set_session_resumption("no")


def test_the_connection_budget_closes_idle_hosts_and_holds(swarm, fleet):
    """A cap of 3 over the healthy hosts: every call answered, never more than 3 open, and
    hosts closed to make room reconnect with a resumed handshake."""
    _, hosts = swarm
    budget = fleet.connection_budget()
    assert budget.max_open_connections >= 1 and budget.open_connections == 0
    healthy = [i for i, record in enumerate(hosts) if BEHAVIOUR[record["name"]] == "healthy"]
    fleet.set_max_open_connections(3)
    for _ in range(2):
        results = fleet.health(hosts=healthy, concurrency=8)
        assert all(r.ok for r in results), results
        assert fleet.connection_budget().open_connections <= 3
    budget = fleet.connection_budget()
    assert budget.max_open_connections == 3
    assert budget.evictions >= 2 * len(healthy) - 6, budget
    assert fleet.handshake_counts().resumed >= len(healthy) - 3
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(dac.InvalidArgumentError):
            fleet.set_max_open_connections(bad)
