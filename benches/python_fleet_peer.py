"""The reference master's fleet pattern, for the fleet benchmark: one
health probe per host under ``asyncio.gather``, each with a reference-style
TLS context, its separate pin-probe handshake and a fresh httpx client (as
``python_peers.py`` models a single call).

    python3 benches/python_fleet_peer.py CA_DIR HOSTS_JSON [ROUNDS]

Prints one JSON object: the median wall time of a sweep, the process CPU
time it took (both ms), and how many hosts answered. Measures; asserts
nothing.
"""

import asyncio
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import httpx  # noqa: E402

from python_peers import probe_pin, reference_context  # noqa: E402


async def probe(ca_dir, record):
    host, port, pin = record["address"], record["agent_port"], record["client_cert_fingerprint"]
    context = reference_context(ca_dir)
    probe_pin(context, host, port, pin)
    async with httpx.AsyncClient(verify=context, trust_env=False, timeout=30) as client:
        response = await client.get(f"https://{host}:{port}/health")
        return response.json().get("status") == "ok"


async def sweep(ca_dir, records):
    answers = await asyncio.gather(*(probe(ca_dir, r) for r in records), return_exceptions=True)
    return sum(answer is True for answer in answers)


def cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e3


def main():
    ca_dir, hosts_json = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with open(hosts_json) as f:
        records = json.load(f)
    samples = []
    for _ in range(rounds):
        cpu, started = cpu_ms(), time.perf_counter()
        ok = asyncio.run(sweep(ca_dir, records))
        samples.append(((time.perf_counter() - started) * 1e3, cpu_ms() - cpu, ok))
    samples.sort()
    wall, cpu, ok = samples[len(samples) // 2]
    print(json.dumps({"wall_ms": wall, "cpu_ms": cpu, "ok": ok, "hosts": len(records),
                      "median_of": len(samples), "spread_ms": statistics.pstdev(s[0] for s in samples)}))


if __name__ == "__main__":
    main()
