"""Every RPC against the OpenSSL worker: what goes on the wire, and every answer of the contract."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest

import decnet_agent_client as dac
from openssl_worker import canonical_hash

CONFIG = {
    "mode": "unihost",
    "interface": "eth0",
    "subnet": "192.0.2.0/24",
    "gateway": "192.0.2.1",
    "deckies": [
        {"name": "decky-01", "ip": "192.0.2.10", "services": ["ssh", "http"], "distro": "debian",
         "base_image": "debian:bookworm", "hostname": "files-01"},
        {"name": "decky-02", "ip": "192.0.2.11", "services": ["smb"], "distro": "ubuntu",
         "base_image": "ubuntu:24.04", "hostname": "nas-02"},
    ],
    "log_file": None,
    "ipvlan": False,
    "mutate_interval": 30,
}

HYDRATED = {
    "topology": {"id": "topo-1", "name": "lab", "status": "active", "version": 3,
                 "created_at": "2024-05-01T10:00:00Z"},
    "nodes": [
        {"id": "n1", "name": "gw", "x": 10.5, "y": -3, "w": 100, "h": 40, "ip": "10.0.0.1",
         "label": "caf\u00e9 \u2603 \U0001F600", "weight": 0.1, "big": 12345678901234567890},
        {"id": "n2", "name": "db", "updated_at": "2024-05-02", "last_seen": None, "tags": ["a/b", "\t"]},
    ],
    "edges": [{"from": "n1", "to": "n2", "last_error": "boom"}],
}


def _bundle(request, name: str) -> Path:
    return request.getfixturevalue(name)


@pytest.fixture(params=[
    ("rsa_bundle", None),
    ("rsa_bundle", ssl.TLSVersion.TLSv1_2),
    ("ecdsa_bundle", None),
    ("ecdsa_bundle", ssl.TLSVersion.TLSv1_2),
], ids=["reference-rsa-tls13", "reference-rsa-tls12", "library-ecdsa-tls13", "library-ecdsa-tls12"])
def any_worker(request, start_worker):
    """OpenSSL workers with the reference RSA leaf and the library's ECDSA leaf, TLS 1.3 and 1.2."""
    bundle, maximum = request.param
    return start_worker(_bundle(request, bundle), maximum_version=maximum)


def test_every_rpc_on_the_wire(identity, any_worker):
    worker = any_worker
    with dac.Client.from_host(identity, worker.host_record(pinned=True), verify_hostname=True) as client:
        client.connect()
        assert worker.ledger == []  # connect() sends no request
        answers = [
            client.health(),
            client.status(),
            client.deploy(CONFIG),
            client.deploy(CONFIG, dry_run=True, no_cache=True),
            client.status(),
            client.mutate("decky-01", ["ssh", "ftp"]),
            client.mutate("decky-02", ["rdp"], dry_run=True),
            client.teardown("decky-02"),
            client.teardown(),
            client.apply_topology(HYDRATED),
            client.topology_state(),
            client.teardown_topology("topo-1"),
            client.topology_state(),
            client.self_destruct(),
        ]
    digest = canonical_hash(HYDRATED)
    assert answers == [
        {"status": "ok"},
        {"deployed": False, "deckies": []},
        {"status": "accepted", "deckies": ["decky-01", "decky-02"]},  # 202 is success
        {"status": "accepted", "deckies": ["decky-01", "decky-02"]},
        {"deployed": True, "deckies": ["decky-01", "decky-02"]},
        {"status": "accepted", "decky_id": "decky-01", "services": ["ssh", "ftp"]},  # 202
        {"status": "dry_run", "decky_id": "decky-02", "services": ["rdp"]},  # 200
        {"status": "torn_down", "decky_id": "decky-02"},
        {"status": "torn_down", "decky_id": None},
        {"status": "applied", "topology_id": "topo-1", "version_hash": digest},
        {"applied": True, "topology_id": "topo-1", "version_hash": digest},
        {"status": "torn_down", "topology_id": "topo-1"},
        {"applied": False},
        {"status": "self_destruct_scheduled"},
    ]
    assert worker.ledger == [
        ("GET", "/health", None),
        ("GET", "/status", None),
        ("POST", "/deploy", {"config": CONFIG, "dry_run": False, "no_cache": False}),
        ("POST", "/deploy", {"config": CONFIG, "dry_run": True, "no_cache": True}),
        ("GET", "/status", None),
        ("POST", "/mutate", {"decky_id": "decky-01", "services": ["ssh", "ftp"], "dry_run": False}),
        ("POST", "/mutate", {"decky_id": "decky-02", "services": ["rdp"], "dry_run": True}),
        ("POST", "/teardown", {"decky_id": "decky-02"}),
        ("POST", "/teardown", {"decky_id": None}),
        ("POST", "/topology/apply", {"hydrated": HYDRATED, "version_hash": digest}),
        ("GET", "/topology/state", None),
        ("POST", "/topology/teardown", {"topology_id": "topo-1"}),
        ("GET", "/topology/state", None),
        ("POST", "/self-destruct", None),
    ]
    for (method, _path, body), headers in zip(worker.ledger, worker.headers):
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower.get("accept") == "application/json"
        if body is not None:
            assert lower.get("content-type") == "application/json"
        if method == "POST" and body is None:  # self-destruct: an empty body, properly framed
            assert lower.get("content-length") == "0" or "transfer-encoding" in lower
    # keep-alive: the warm connection from connect() carried every request
    assert worker.handshakes == 1, worker.handshakes
    assert worker.errors == []
    expected_version = "TLSv1.2" if worker.context.maximum_version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    assert worker.tls_versions == [expected_version]
    # the worker saw the master's certificate
    subject = dict(item[0] for item in worker.peer_certs[0]["subject"])
    assert subject["commonName"] == "decnet-master"


def test_json_text_arguments_are_sent_verbatim_as_json(client, worker):
    client.deploy(json.dumps(CONFIG))
    client.apply_topology(json.dumps(HYDRATED), version_hash=canonical_hash(HYDRATED))
    assert worker.ledger[0][2]["config"] == CONFIG
    assert worker.ledger[1][2]["hydrated"] == HYDRATED


def test_topology_hash_matches_the_python_reference_port():
    assert dac.topology_hash(HYDRATED) == canonical_hash(HYDRATED)
    assert dac.topology_hash(json.dumps(HYDRATED)) == canonical_hash(HYDRATED)
    volatile_only = {"a": 1, "status": "x", "nested": [{"x": 1, "keep": True}]}
    assert dac.topology_hash(volatile_only) == dac.topology_hash({"a": 1, "nested": [{"keep": True}]})


def test_topology_hash_vectors():
    """The reference's vectors: the library and the Python port agree with every one."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo / "tests" / "data" / "canonical_hash.jsonl",
                  repo.parent / "shared" / "vectors" / "canonical_hash.jsonl"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        pytest.skip("no canonical_hash.jsonl vectors found")
    count = 0
    for line in path.read_text(encoding="utf-8").split("\n"):  # not splitlines(): U+2028 etc. occur raw
        if not line.strip():
            continue
        vector = json.loads(line)
        assert dac.topology_hash(vector["input"]) == vector["sha256"], vector["name"]
        assert canonical_hash(json.loads(vector["input"])) == vector["sha256"], vector["name"]
        count += 1
    assert count > 0


# ---------------------------------------------------------------------------
# The other answers of the contract
# ---------------------------------------------------------------------------


def test_mutate_dry_run_404s(client, worker):
    with pytest.raises(dac.HTTPStatusError) as caught:
        client.mutate("decky-01", ["ssh"], dry_run=True)
    error = caught.value
    assert (error.status, error.detail, error.kind, error.code) == (404, "no active deployment", "http_status", 9)
    assert json.loads(error.body) == {"detail": "no active deployment"}
    assert "404" in error.message
    client.deploy(CONFIG)
    with pytest.raises(dac.HTTPStatusError) as caught:
        client.mutate("decky-99", ["ssh"], dry_run=True)
    assert (caught.value.status, caught.value.detail) == (404, "decky 'decky-99' not found")
    assert client.mutate("decky-01", ["ssh"], dry_run=True)["status"] == "dry_run"


def test_topology_409_and_400(client, worker):
    client.apply_topology(HYDRATED)
    assert client.apply_topology(HYDRATED)["status"] == "applied"  # the same one again is fine
    other = dict(HYDRATED, topology={"id": "topo-2"})
    with pytest.raises(dac.HTTPStatusError) as caught:
        client.apply_topology(other)
    assert caught.value.status == 409
    assert caught.value.detail == "topology 'topo-1' is already applied"
    client.teardown_topology("topo-1")
    wrong = "0" * 64
    with pytest.raises(dac.HTTPStatusError) as caught:
        client.apply_topology(other, version_hash=wrong)
    assert caught.value.status == 400
    assert caught.value.detail.startswith("version_hash mismatch")
    assert worker.ledger[-1] == ("POST", "/topology/apply", {"hydrated": other, "version_hash": wrong})
    assert client.apply_topology(other, version_hash=canonical_hash(other))["topology_id"] == "topo-2"


def test_validation_422_carries_the_detail_list(client, worker):
    bad = {"deckies": [{"name": "decky-01", "services": []}]}  # passes the local check only
    with pytest.raises(dac.HTTPStatusError) as caught:
        client.deploy(bad)
    assert caught.value.status == 422
    assert caught.value.detail == [{"loc": ["body", "config", "deckies", 0, "services"],
                                    "msg": "at least one service name", "type": "value_error"}]
    assert worker.ledger == [("POST", "/deploy", {"config": bad, "dry_run": False, "no_cache": False})]


@pytest.mark.parametrize("call", ["teardown", "self_destruct", "health"])
def test_500_from_the_worker(client, worker, call):
    worker.set_fault("server_error")
    with pytest.raises(dac.HTTPStatusError) as caught:
        getattr(client, call)()
    assert (caught.value.status, caught.value.detail) == (500, "simulated worker failure")
    worker.set_fault(None)
    assert client.health() == {"status": "ok"}


def test_deploy_config_checked_before_any_traffic(client, worker):
    for bad in ({}, {"deckies": []}, {"deckies": "x"}, {"deckies": [{"ip": "1.2.3.4"}]},
                {"deckies": [{"name": 7}]}, "[]"):
        with pytest.raises(dac.InvalidArgumentError):
            client.deploy(bad)
    with pytest.raises(dac.InvalidArgumentError):
        client.mutate("", ["ssh"])
    with pytest.raises(dac.InvalidArgumentError):
        client.mutate("decky-01", "ssh")  # a str is not a list of services
    with pytest.raises(dac.InvalidArgumentError):
        client.teardown_topology("")
    with pytest.raises(dac.InvalidArgumentError):
        client.apply_topology("[1, 2]")
    assert worker.ledger == []
    assert worker.handshakes == 0


# ---------------------------------------------------------------------------
# Transport failures
# ---------------------------------------------------------------------------


def test_connect_refused(identity, free_port):
    with dac.Client.connect_to(identity, "127.0.0.1", free_port, None) as client:
        with pytest.raises(dac.ConnectError) as caught:
            client.connect()
        assert caught.value.kind == "connect" and str(free_port) in caught.value.message
        with pytest.raises(dac.ConnectError):
            client.health()
        with pytest.raises(dac.ConnectError):
            client.deploy(CONFIG)


def test_stalling_worker_times_out(client, worker):
    client.health()  # warm connection
    client.set_timeouts("control", read=0.3)
    worker.set_fault("stall", 10)
    started = time.monotonic()
    with pytest.raises(dac.AgentTimeoutError) as caught:
        client.status()
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3, elapsed
    assert isinstance(caught.value, TimeoutError)  # the builtin
    assert caught.value.kind == "timeout" and "read" in caught.value.message
    # The phase, and that the request had left, as the library knows them.
    assert caught.value.phase == "read"
    assert caught.value.may_have_reached_worker is True
    with pytest.raises(TimeoutError):
        client.teardown()
    # The topology profiles are separate: a long read budget rides out a short stall.
    worker.set_fault("stall", 0.5)
    client.set_timeouts("topology-teardown", read=5)
    assert client.teardown_topology("t")["status"] == "torn_down"


def test_non_json_answer_is_a_protocol_error(client, worker):
    worker.set_fault("non_json")
    with pytest.raises(dac.ProtocolError) as caught:
        client.health()
    assert "not JSON" in caught.value.message
    worker.set_fault(None)
    assert client.health() == {"status": "ok"}


def test_response_size_cap(client, worker):
    client.set_max_response_bytes(1000)
    worker.set_fault("oversized", 5000)
    with pytest.raises(dac.ProtocolError, match="exceeds 1000 bytes"):
        client.status()
    worker.set_fault("oversized", 500)
    assert len(client.status()["pad"]) == 500
    worker.set_fault(None)
    assert client.health() == {"status": "ok"}


def test_hang_up_after_request_is_connection_lost(client, worker):
    client.health()
    worker.set_fault("close")
    with pytest.raises(dac.ConnectionLostError) as caught:
        client.teardown("decky-01")
    assert caught.value.may_have_reached_worker is True
    assert caught.value.kind == "connection_lost"
    # The POST reached the worker exactly once: never re-sent.
    assert [entry[1] for entry in worker.ledger].count("/teardown") == 1
    worker.set_fault(None)
    assert client.health() == {"status": "ok"}


def test_worker_closing_idle_connections_is_harmless(client, worker):
    """OpenSSL workers drop idle keep-alive connections (no close_notify); the next call,
    a POST included, must go out on a fresh connection instead of failing."""
    worker.idle_timeout = 0.2
    client.health()
    time.sleep(0.6)
    assert client.teardown("decky-01")["status"] == "torn_down"
    time.sleep(0.6)
    assert client.health() == {"status": "ok"}
    client.connect()  # a warm connection that goes stale before use
    time.sleep(0.6)
    assert client.deploy(CONFIG)["status"] == "accepted"
    assert [entry[1] for entry in worker.ledger] == ["/health", "/teardown", "/health", "/deploy"]


def test_an_answer_keyed_like_serde_private_number_arrives_exactly(client, worker):
    """serde_json's arbitrary_precision reads this key as a number; Python must see the object."""
    worker.set_fault("raw", b'{"$serde_json::private::Number":"1",'
                            b'"nested":{"\\u0024serde_json::private::Number":true}}')
    assert client.health() == {"$serde_json::private::Number": "1",
                               "nested": {"$serde_json::private::Number": True}}
    worker.set_fault(None)
