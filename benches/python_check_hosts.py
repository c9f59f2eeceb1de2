"""The reference master's host check (POST /swarm/check), written as it is
there, for the side-by-side fleet benchmark (benches/fleet_peers.rs).

The reference (decnet/web/router/swarm/api_check_hosts.py with
decnet/swarm/client.py) runs one ``_probe`` per host under an unbounded
``asyncio.gather``; each enters a fresh ``AgentClient``: a bare
``SSLContext`` with the master's chain and the CA, a fresh
``httpx.AsyncClient``, then the pin check -- a second, blocking handshake
in ``asyncio.to_thread`` (the default executor) comparing the SHA-256 of
the worker's certificate with the host record -- then ``GET /health``
(``raise_for_status``, ``.json()``), then the client is closed. Nothing is
kept between checks.

The reference keeps no client between sweeps, so the warm sweep here is
not its pattern: one client per host (same context, pin checked once)
kept open through an unmeasured sweep, then a measured one over the
kept-alive connections.

    python benches/python_check_hosts.py CA_DIR HOSTS_JSON

Prints one JSON object: wall and CPU time (ms; CPU is this process's user
plus system time, every thread) and answered hosts of the cold sweep and
of the warm sweep. Measures; asserts nothing.
"""

import asyncio
import hashlib
import json
import os
import resource
import socket
import ssl
import sys
import time

import httpx

# The reference's timeouts for control calls (decnet/swarm/client.py).
TIMEOUT_CONTROL = httpx.Timeout(connect=5.0, read=15.0, write=5.0, pool=5.0)


class Identity:
    def __init__(self, ca_dir):
        master = os.path.join(ca_dir, "master")
        self.cert = os.path.join(master, "worker.crt")
        self.key = os.path.join(master, "worker.key")
        self.ca = os.path.join(master, "ca.crt")

    def context(self):
        """The reference's bare SSLContext: TLS 1.2 or later, the master's
        chain, the CA as the only anchor, hostname checked."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        return ctx


class PinMismatch(RuntimeError):
    pass


class AgentClient:
    """The parts of the reference's AgentClient a host check uses."""

    def __init__(self, identity, host):
        self.identity = identity
        self.address = host["address"]
        self.port = int(host["agent_port"])
        self.pin = host["client_cert_fingerprint"].lower()
        self.client = None

    def fetch_peer_fingerprint(self):
        ctx = self.identity.context()
        sock = socket.create_connection((self.address, self.port), timeout=10.0)
        try:
            with ctx.wrap_socket(sock, server_hostname=self.address) as tls:
                der = tls.getpeercert(binary_form=True)
        finally:
            try:
                sock.close()
            except OSError:
                pass
        return hashlib.sha256(der).hexdigest().lower()

    async def __aenter__(self):
        self.client = httpx.AsyncClient(
            base_url=f"https://{self.address}:{self.port}",
            verify=self.identity.context(),
            timeout=TIMEOUT_CONTROL,
        )
        try:
            actual = await asyncio.to_thread(self.fetch_peer_fingerprint)
            if actual != self.pin:
                raise PinMismatch(f"{self.address}:{self.port}")
        except BaseException:
            await self.client.aclose()
            self.client = None
            raise
        return self

    async def __aexit__(self, *exc):
        if self.client:
            await self.client.aclose()
            self.client = None

    async def health(self):
        response = await self.client.get("/health")
        response.raise_for_status()
        return response.json()


async def check_hosts(identity, hosts):
    """The reference's check: reachable when the whole probe raised nothing."""

    async def probe(host):
        try:
            async with AgentClient(identity, host) as agent:
                await agent.health()
            return True
        except Exception:
            return False

    return sum(await asyncio.gather(*(probe(h) for h in hosts)))


async def kept_sweep(agents):
    async def one(agent):
        try:
            await agent.health()
            return True
        except Exception:
            return False

    return sum(await asyncio.gather(*(one(a) for a in agents)))


async def warm(identity, hosts):
    """One kept client per host: entered (pin checked) and swept once,
    unmeasured; then the measured sweep over the kept connections."""
    agents = [AgentClient(identity, h) for h in hosts]
    entered = await asyncio.gather(*(a.__aenter__() for a in agents), return_exceptions=True)
    kept = [a for a, e in zip(agents, entered) if e is a]
    await kept_sweep(kept)
    ok, wall, cpu = await measured(kept_sweep(kept))
    await asyncio.gather(*(a.__aexit__() for a in kept))
    return ok, wall, cpu


def cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e3


async def measured(awaitable):
    cpu, started = cpu_ms(), time.perf_counter()
    result = await awaitable
    return result, (time.perf_counter() - started) * 1e3, cpu_ms() - cpu


async def main():
    identity = Identity(sys.argv[1])
    with open(sys.argv[2]) as f:
        hosts = json.load(f)
    cold_ok, cold_wall, cold_cpu = await measured(check_hosts(identity, hosts))
    warm_ok, warm_wall, warm_cpu = await warm(identity, hosts)
    print(json.dumps({
        "hosts": len(hosts),
        "cold": {"wall_ms": cold_wall, "cpu_ms": cold_cpu, "ok": cold_ok},
        "warm": {"wall_ms": warm_wall, "cpu_ms": warm_cpu, "ok": warm_ok},
        "httpx": httpx.__version__,
        "python": sys.version.split()[0],
        "executor_threads": min(32, (os.cpu_count() or 1) + 4),
    }))


if __name__ == "__main__":
    asyncio.run(main())
