"""Every string the library hands over is freed: resident memory stays flat over 10,000 calls."""

from __future__ import annotations

import ctypes
import gc

import pytest

import decnet_agent_client as dac

PADDING = 1024  # each /health answer carries ~1 KiB, so a leaked answer is easy to see
WARM_UP = 1_000
TOTAL = 10_000
BOUND = 2 * 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_ten_thousand_calls_do_not_grow_memory(client, worker):
    worker.record = False  # the stand-in's ledger would grow in this same process
    worker.health_padding = PADDING
    for _ in range(WARM_UP):
        assert client.health()["status"] == "ok"
    gc.collect()
    at_warm_up = rss_bytes()
    for _ in range(TOTAL - WARM_UP):
        client.health()
    gc.collect()
    at_total = rss_bytes()
    growth = at_total - at_warm_up
    print(f"\nVmRSS after {WARM_UP} calls: {at_warm_up / 1024:.0f} KiB; after {TOTAL}: "
          f"{at_total / 1024:.0f} KiB; growth {growth / 1024:.0f} KiB "
          f"(a leaked answer would add ~{(TOTAL - WARM_UP) * (PADDING + 32) / 1048576:.1f} MiB)")
    assert growth < BOUND, f"VmRSS grew by {growth} bytes over {TOTAL - WARM_UP} calls"


def test_the_probe_would_see_a_leak(client, worker):
    """Control: the same calls through the raw function, holding the answers instead of
    freeing them, do show up in VmRSS (then they are all freed)."""
    worker.record = False
    worker.health_padding = PADDING
    client.health()
    gc.collect()
    before = rss_bytes()
    held = []
    try:
        with client._handle as pointer:
            for _ in range(TOTAL - WARM_UP):
                out = ctypes.POINTER(ctypes.c_char)()
                assert dac.lib.decnet_client_health(pointer, ctypes.byref(out)) == 0
                held.append(out)
        grown = rss_bytes() - before
    finally:
        for out in held:
            dac.lib.decnet_string_free(out)
    print(f"\nholding {len(held)} answers grew VmRSS by {grown / 1024:.0f} KiB")
    assert grown > BOUND


def test_dropped_handles_are_freed_by_the_garbage_collector(ca_dir, identity, worker):
    """Clients and identities that are never closed are freed by __del__: making and dropping
    thousands of them does not grow resident memory either."""
    record = worker.host_record()

    def churn(count):
        for _ in range(count):
            client = dac.Client.from_host(identity, record, verify_hostname=True)
            client.describe()
            del client
            ident = dac.Identity.load_dir(ca_dir / "master")
            ident.fingerprint
            del ident

    churn(300)
    gc.collect()
    before = rss_bytes()
    churn(3000)
    gc.collect()
    growth = rss_bytes() - before
    print(f"\n3000 dropped clients and identities: VmRSS growth {growth / 1024:.0f} KiB")
    assert growth < BOUND
