"""The library through its Python module against an httpx client set up the
way the reference master does it, both against the same stand-in worker,
and the module's own cost: a warm call through the module against the raw
ctypes call it wraps (`decnet_client_health` with the C out-pointer, the
answer read and freed), alternating call by call on one client.

    python3 benches/python_peers.py CA_DIR HOST_JSON

Prints one JSON object of medians (milliseconds). Measures; asserts nothing.
"""

import asyncio
import ctypes
import hashlib
import json
import os
import socket
import ssl
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

import httpx  # noqa: E402

import decnet_agent_client as dac  # noqa: E402

WARM_CALLS = 2000
COLD_CALLS = 100
LAYER_CALLS = 5000


def median_ms(samples):
    return statistics.median(samples) * 1e3


def timed(n, fn):
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def reference_context(ca_dir):
    """The reference master's TLS set-up: client chain, the CA as the only
    trust anchor, hostname checks on."""
    master = os.path.join(ca_dir, "master")
    context = ssl.create_default_context(cafile=os.path.join(master, "ca.crt"))
    context.load_cert_chain(os.path.join(master, "worker.crt"), os.path.join(master, "worker.key"))
    return context


def probe_pin(context, host, port, pin):
    """The reference checks the pin with a separate probe handshake."""
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if hashlib.sha256(der).hexdigest() != pin:
        raise RuntimeError("pin mismatch")


async def httpx_figures(ca_dir, record):
    host, port, pin = record["address"], record["agent_port"], record["client_cert_fingerprint"]
    url = f"https://{host}:{port}/health"
    context = reference_context(ca_dir)

    probe_pin(context, host, port, pin)
    async with httpx.AsyncClient(verify=context, trust_env=False) as client:
        for _ in range(50):
            (await client.get(url)).json()
        warm = []
        for _ in range(WARM_CALLS):
            started = time.perf_counter()
            (await client.get(url)).json()
            warm.append(time.perf_counter() - started)

    cold = []
    for _ in range(COLD_CALLS):
        started = time.perf_counter()
        context = reference_context(ca_dir)
        probe_pin(context, host, port, pin)
        async with httpx.AsyncClient(verify=context, trust_env=False) as client:
            (await client.get(url)).json()
        cold.append(time.perf_counter() - started)
    return warm, cold


def library_figures(ca_dir, record):
    identity = dac.Identity.load_dir(os.path.join(ca_dir, "master")) if hasattr(dac.Identity, "load_dir") \
        else dac.Identity.ensure(ca_dir)
    with dac.Client.from_host(identity, record, verify_hostname=True) as client:
        for _ in range(50):
            client.health()
        warm = timed(WARM_CALLS, client.health)

    def cold_call():
        with dac.Client.from_host(identity, record, verify_hostname=True) as fresh:
            fresh.health()

    cold = timed(COLD_CALLS, cold_call)
    return warm, cold


def layer_figures(ca_dir, record):
    """Module call against raw ctypes call on one client, interleaved call by
    call so that drift in the worker's pace hits both alike."""
    identity = dac.Identity.load_dir(os.path.join(ca_dir, "master"))
    health, free = dac.lib.decnet_client_health, dac.lib.decnet_string_free
    owned_str, byref, string_at = dac._OwnedStr, ctypes.byref, ctypes.string_at
    clock = time.perf_counter
    with dac.Client.from_host(identity, record, verify_hostname=True) as client:
        pointer = client._handle._pointer

        def raw_call():
            out = owned_str()
            if health(pointer, byref(out)) != 0:
                raise RuntimeError("raw call failed")
            string_at(out)
            free(out)

        module_call = client.health
        for _ in range(200):
            raw_call()
            module_call()
        raw, module = [], []
        for _ in range(LAYER_CALLS):
            started = clock()
            raw_call()
            middle = clock()
            module_call()
            ended = clock()
            raw.append(middle - started)
            module.append(ended - middle)
    return raw, module


def main():
    ca_dir, host_json = sys.argv[1], sys.argv[2]
    with open(host_json) as f:
        record = json.load(f)
    ours_warm, ours_cold = library_figures(ca_dir, record)
    raw, module = layer_figures(ca_dir, record)
    ref_warm, ref_cold = asyncio.run(httpx_figures(ca_dir, record))
    print(json.dumps({
        "python_module_warm_ms": median_ms(ours_warm),
        "raw_ctypes_warm_ms": median_ms(raw),
        "python_module_warm_interleaved_ms": median_ms(module),
        "python_layer_us": (median_ms(module) - median_ms(raw)) * 1e3,
        "httpx_reference_warm_ms": median_ms(ref_warm),
        "python_module_cold_ms": median_ms(ours_cold),
        "httpx_reference_cold_ms": median_ms(ref_cold),
    }))


if __name__ == "__main__":
    main()
