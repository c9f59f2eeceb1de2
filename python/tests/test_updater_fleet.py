"""The updater fleet and the sharded deploy from Python, against the crate's stand-in workers
and updaters in another process (the ``stand_in_worker`` example: updaters ``ok``,
``probe`` (every update rolled back: 409) and ``selfdrop`` (update-self closes the
connection, installs later); workers ``ok``, ``close`` (hangs up every request) and
``deployfail`` (a deploy brings up its first decky, then answers 500), among others). ``DECNET_STAND_IN_BIN`` names a built one, else it is built with cargo into
``target/testkit`` (as the C suite does).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import decnet_agent_client as dac

REPO = Path(__file__).resolve().parents[2]


def _stand_in_binary() -> Path:
    named = os.environ.get("DECNET_STAND_IN_BIN")
    if named:
        return Path(named)
    subprocess.run(
        ["cargo", "build", "--release", "--features", "testkit", "--example", "stand_in_worker",
         "--target-dir", "target/testkit"],
        cwd=REPO, check=True)
    return REPO / "target" / "testkit" / "release" / "examples" / "stand_in_worker"


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Iterator[Tuple[Path, Dict[str, Dict[str, Any]]]]:
    """(directory, records by name: updaters ``u-<mode>``, workers ``w-<behaviour>``)."""
    directory = tmp_path_factory.mktemp("stand-ins")
    process = subprocess.Popen([str(_stand_in_binary()), str(directory)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        until = time.monotonic() + 120
        while not (directory / "ready").exists():
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < until, "stand-ins not ready after 120 s"
            time.sleep(0.1)
        records: Dict[str, Dict[str, Any]] = {}
        for kind, prefix in (("updaters", "u-"), ("hosts", "w-")):
            for path in (directory / kind).glob("*.json"):
                records[prefix + path.stem] = json.loads(path.read_text())
        yield directory, records
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def master(stand_ins) -> Iterator[dac.Identity]:
    directory, _ = stand_ins
    with dac.Identity.ensure(str(directory / "ca")) as identity:
        yield identity


@pytest.fixture
def tarball(tmp_path) -> Path:
    path = tmp_path / "tree.tgz"
    path.write_bytes(b"a release for the whole fleet " + str(time.monotonic_ns()).encode())
    return path


def _fleet(master: dac.Identity, stand_ins: Any, *names: str) -> dac.UpdaterFleet:
    _, records = stand_ins
    return dac.UpdaterFleet(master, [records[name] for name in names])


def _active(fleet: dac.UpdaterFleet) -> List[Any]:
    return [next((r["sha"] for r in (h.result or {}).get("releases", [])
                  if r["slot"] == "active"), None) for h in fleet.releases()]


def test_a_failing_canary_stops_the_push_before_any_other_host(master, stand_ins, tarball):
    with _fleet(master, stand_ins, "u-probe", "u-ok", "u-selfdrop") as fleet:
        seen: List[dac.RolloutHost] = []
        rollout = fleet.push(tarball, "py-canary", policy={"canary": 1},
                             on_result=lambda host: seen.append(host))
        assert rollout.stop == "canary-failed"
        canary, *rest = rollout.hosts
        assert (canary.status, canary.http_status, canary.rolled_back, canary.wave) == (
            "rolled-back", 409, True, "canary")
        assert canary.stderr and canary.update_time is not None
        assert [h.status for h in rest] == ["not-attempted", "not-attempted"]
        assert [h.name for h in seen] == ["probe"], "no callback for hosts never started"
        assert rollout.counts["not-attempted"] == 2
        assert "py-canary" not in _active(fleet)


def test_the_failure_budget_halts_and_self_update_is_verified(master, stand_ins, tarball):
    with _fleet(master, stand_ins, "u-ok", "u-probe", "u-selfdrop") as fleet:
        halted = fleet.push(tarball, "py-budget", concurrency=1,
                            policy={"canary": 0, "batch": 1, "max_failures": 1})
        assert halted.stop == "failure-budget"
        assert [h.status for h in halted.hosts] == ["updated", "rolled-back", "not-attempted"]
        assert [h.wave for h in halted.hosts] == [1, 2, 3]
        assert _active(fleet)[2] != "py-budget", "the host not attempted kept its release"
    with _fleet(master, stand_ins, "u-ok", "u-selfdrop") as fleet:
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        rollout = fleet.push(tarball, "py-self", sha256=digest.upper(),
                             policy={"self_update": True, "verify": 20})
        assert rollout.stop == "completed" and rollout.counts["self-updated"] == 2
        answered, dropped = rollout.hosts
        assert answered.http_status == 200 and answered.self_update_time is not None
        assert dropped.http_status is None, "the re-executing updater closed the connection"
        assert dropped.verify_time is not None, "verify saw the new release"
        assert _active(fleet) == ["py-self", "py-self"]


def test_bad_input_is_refused_before_any_traffic(master, stand_ins, tarball):
    with _fleet(master, stand_ins, "u-ok") as fleet:
        with pytest.raises(dac.InvalidArgumentError, match="max_failure"):
            fleet.push(tarball, "x", policy={"max_failure": 5})
        with pytest.raises(dac.InvalidArgumentError, match="sha256"):
            fleet.push(tarball, "x", sha256="0" * 64)
        with pytest.raises(dac.InvalidArgumentError, match="self_update"):
            fleet.rollback(policy={"self_update": True})
        with pytest.raises(dac.FileSystemError):
            fleet.push(tarball.with_name("missing.tgz"), "x")
        with pytest.raises(dac.InvalidArgumentError):
            fleet.call("reboot")


def test_rollback_and_an_unpinned_host(master, stand_ins, tarball):
    _, records = stand_ins
    unpinned = {"uuid": "uuid-nopin", "name": "nopin", "address": "127.0.0.1", "updater_port": 1}
    with dac.UpdaterFleet(master, [records["u-ok"], unpinned]) as fleet:
        assert len(fleet) == 2
        for sha in ("py-r1", "py-r2"):
            assert fleet.push(tarball, sha, policy={"canary": 0}).counts["updated"] == 1
        rollout = fleet.rollback()
        assert [h.status for h in rollout.hosts] == ["rolled-back", "no-updater-pin"]
        assert rollout.hosts[1].wave is None
        health = fleet.health()
        assert health[0].ok and health[0].result["role"] == "updater"
        assert isinstance(health[1].error, dac.PinMismatchError)
        updated = fleet.call("update", tarball, "py-r3")
        assert updated[0].ok and updated[0].result["release"]["sha"] == "py-r3"


def test_a_sharded_deploy_sends_each_host_its_deckies_and_probes_a_failure(master, stand_ins):
    _, records = stand_ins
    ok, close = records["w-ok"], records["w-close"]
    config = {"mode": "swarm", "interface": "eth0", "deckies": [
        {"name": "d1", "services": ["ssh"], "host_uuid": ok["uuid"]},
        {"name": "d2", "services": ["ssh"], "host_uuid": close["uuid"]},
        {"name": "d3", "services": ["ftp"], "host_uuid": ok["uuid"]},
    ]}
    with dac.Fleet(master, [dict(ok, use_ipvlan=True), close]) as fleet:
        seen: List[int] = []
        results = fleet.deploy_sharded(config, on_result=lambda r: seen.append(r.index))
        assert sorted(seen) == [0, 1]
        first, second = results
        assert first.ok and first.deckies == ["d1", "d3"] and first.running is None
        assert first.result == {"status": "accepted", "deckies": ["d1", "d3"]}
        assert not second.ok and second.deckies == ["d2"]
        assert second.probe_error is not None, "the probe of a worker that hangs up fails too"
        status = fleet.status([0])[0].result
        assert status["deckies"] == ["d1", "d3"]
        config["deckies"].append({"name": "d4", "services": ["ssh"], "host_uuid": "uuid-nowhere"})
        with pytest.raises(dac.InvalidArgumentError, match="uuid-nowhere"):
            fleet.deploy_sharded(config)


def test_the_probe_after_a_part_way_deploy_says_which_deckies_are_up(master, stand_ins):
    _, records = stand_ins
    failing = records["w-deployfail"]
    config = {"mode": "swarm", "deckies": [
        {"name": f"p{i}", "services": ["ssh"], "host_uuid": failing["uuid"]} for i in range(3)]}
    with dac.Fleet(master, [failing]) as fleet:
        (result,) = fleet.deploy_sharded(config)
        assert not result.ok and isinstance(result.error, dac.HTTPStatusError)
        assert (result.running, result.down, result.probe_error) == (["p0"], ["p1", "p2"], None)
        (unprobed,) = fleet.deploy_sharded(config, probe=False)
        assert unprobed.running is None and unprobed.probe_error is None
