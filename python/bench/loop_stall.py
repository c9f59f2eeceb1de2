"""Event-loop responsiveness while a fleet of stand-in workers is swept.

A 1 ms ticker task records how late each tick wakes up (its worst stall)
while 256 stand-ins (the crate's ``swarm`` example, each with its own
certificate and pin) answer ``GET /health``:

* ``idle``: the ticker alone, the machine's own scheduling noise;
* ``gather floor``: ``asyncio.gather`` of 256 tasks that only sleep: what starting and
  ending that many tasks in one go costs the loop, whatever they call;
* ``first sweep``: ``AsyncFleet.as_completed`` over a new ``Fleet`` (full handshakes);
* ``fleet``: ``AsyncFleet.as_completed`` (one sweep on its own thread; the first
  round handshakes, the later ones reuse the connections);
* ``gather``: ``asyncio.gather`` of 256 ``aio.AgentClient`` health calls;
* ``reference``: the same gather with the reference's httpx ``AgentClient``
  (when ``DECNET_REFERENCE_DIR`` points at a checkout importable here).

Run (from the repository, after ``make lib TARGET_DIR=target/c-abi`` and
building the swarm example as python/tests/test_fleet.py does)::

    DECNET_AGENT_CLIENT_LIB=target/c-abi/release/libdecnet_agent_client.so \\
        python3 python/bench/loop_stall.py [--hosts 256] [--rounds 3] [--max-workers N] \\
        [--swarm-cpus 1 --cpus 0] [--sweep-niceness N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

import decnet_agent_client as dac  # noqa: E402
from decnet_agent_client import aio  # noqa: E402

SWARM = Path(os.environ.get("DECNET_SWARM_BIN",
                            REPO / "target" / "testkit" / "release" / "examples" / "swarm"))


async def worst_stall(work: Callable[[], Awaitable[Any]]) -> Tuple[float, float, Any]:
    """(worst tick lateness in ms, the work's seconds, its result) of ``work()`` beside a 1 ms ticker."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        while running:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - start
    running = False
    await tick
    return worst * 1000, elapsed, result


def start_swarm(directory: Path, count: int, cpus: str = "") -> "subprocess.Popen[bytes]":
    pin = ["taskset", "-c", cpus] if cpus else []
    process = subprocess.Popen(pin + [str(SWARM), str(directory), str(count)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until = time.monotonic() + 120
    while not (directory / "ready").exists():
        if process.poll() is not None or time.monotonic() > until:
            raise SystemExit(f"swarm at {SWARM} did not start")
        time.sleep(0.1)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-workers", type=int, default=None,
                        help="aio's thread pool size (default: its own)")
    parser.add_argument("--swarm-cpus", default="",
                        help="CPUs for the stand-ins (taskset list), so they do not take the loop's")
    parser.add_argument("--cpus", default="",
                        help="CPUs for this process: the loop and the sweep's threads")
    parser.add_argument("--sweep-niceness", type=int, default=None,
                        help="AsyncFleet's sweep_niceness, 10 to 19 (default: its own, 10)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.max_workers:
        aio.set_max_workers(args.max_workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        swarm = start_swarm(directory, args.hosts, args.swarm_cpus)
        try:
            hosts: List[Dict[str, Any]] = json.loads((directory / "hosts.json").read_text())
            identity = aio.ensure_master_identity(directory / "ca")
            runs: Dict[str, Callable[[], Awaitable[Any]]] = {}

            with dac.Identity.ensure(directory / "ca") as ident, \
                    dac.Fleet(ident, hosts, verify_hostname=True) as fleet:
                niceness = {} if args.sweep_niceness is None else {
                    "sweep_niceness": args.sweep_niceness}
                swept = aio.AsyncFleet(fleet, **niceness)

                async def fleet_sweep() -> int:
                    return sum([r.ok async for r in swept.as_completed("health")])

                async def first_sweep() -> int:  # a new fleet: every handshake is a full one
                    # Made and closed off the loop: 256 hosts' TLS set-up would stall it.
                    new = await asyncio.to_thread(dac.Fleet, ident, hosts, verify_hostname=True)
                    try:
                        fresh = aio.AsyncFleet(new, **niceness)
                        return sum([r.ok async for r in fresh.as_completed("health")])
                    finally:
                        await asyncio.to_thread(new.close)

                async def one(host: Dict[str, Any]) -> bool:
                    async with aio.AgentClient(host, identity=identity, verify_hostname=True) as a:
                        return (await a.health()) is not None

                async def gather_ours() -> int:
                    return sum(await asyncio.gather(*(one(h) for h in hosts)))

                async def nap(_host: Dict[str, Any]) -> bool:
                    await asyncio.sleep(0.05)
                    return False

                async def gather_floor() -> int:  # the pattern's own cost: 256 tasks, no calls
                    return sum(await asyncio.gather(*(nap(h) for h in hosts)))

                async def idle() -> int:  # the machine's own noise: the ticker alone
                    await asyncio.sleep(0.5)
                    return 0

                runs["idle loop (baseline, 0.5 s)"] = idle
                runs["gather floor (tasks that only sleep)"] = gather_floor
                runs["fleet, first sweep (a new Fleet each)"] = first_sweep
                runs["fleet (AsyncFleet.as_completed)"] = fleet_sweep
                runs["gather of aio.AgentClient"] = gather_ours

                reference = os.environ.get("DECNET_REFERENCE_DIR")
                if reference:
                    sys.path.insert(0, reference)
                    from decnet.swarm import client as ref  # type: ignore[import-not-found]

                    ref_identity = ref.MasterIdentity(identity.key_path, identity.cert_path,
                                                      identity.ca_cert_path)

                    async def ref_one(host: Dict[str, Any]) -> bool:
                        async with ref.AgentClient(host, identity=ref_identity,
                                                   verify_hostname=True) as a:
                            return (await a.health()) is not None

                    async def gather_reference() -> int:
                        return sum(await asyncio.gather(*(ref_one(h) for h in hosts)))

                    runs["gather of the reference's httpx AgentClient"] = gather_reference

                for name, work in runs.items():
                    for round_ in range(args.rounds):
                        stall, elapsed, ok = asyncio.run(worst_stall(work))
                        print(f"{name:45s} round {round_ + 1}: {ok}/{len(hosts)} ok in "
                              f"{elapsed:6.3f} s, worst loop stall {stall:7.2f} ms", flush=True)
        finally:
            swarm.kill()
            swarm.wait()


if __name__ == "__main__":
    main()
