#!/usr/bin/env bash
# Measures the library against its peers on the same stand-in worker, in
# one run, and prints a Markdown table of medians and ratios:
#   - the CLI's one-shot pinned health against curl's (client certificate,
#     CA, --pinnedpubkey), each a whole process, timed by hyperfine;
#   - the Python module against an httpx client set up the way the
#     reference master does it (warm calls; cold client + first call);
#   - the Python layer's own cost: the module's warm call against the raw
#     ctypes call it wraps, interleaved call by call.
# Installs what it needs (curl and hyperfine from apt, httpx from pip).
# Everything runs pinned to one core (taskset -c 0), as the performance
# anchors' "same core" column, unless PEERS_CPUS says otherwise.
#
#   bash benches/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cpus=${PEERS_CPUS:-0}
for tool in curl hyperfine; do
    command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
python3 -c 'import httpx' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check httpx

cargo build --release --quiet --features cli --bin decnet-agent-client
cargo build --release --quiet --features testkit --example stand_in_worker --target-dir target/testkit
make --quiet --no-print-directory lib TARGET_DIR=target/c-abi  # what make install installs

work=$(mktemp -d)
taskset -c "$cpus" target/testkit/release/examples/stand_in_worker "$work" &
worker=$!
trap 'kill $worker 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -f "$work/ready" ] && break; sleep 0.1; done

host="$work/hosts/ok.json"
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_port"])' "$host")
master="$work/ca/master"
spki=$(openssl x509 -in "$work/worker.crt" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)

cli=(taskset -c "$cpus" target/release/decnet-agent-client --ca-dir "$work/ca" --host-json "$host" health)
curl=(taskset -c "$cpus" curl -sS --fail --cert "$master/worker.crt" --key "$master/worker.key"
      --cacert "$master/ca.crt" --pinnedpubkey "sha256//$spki" "https://127.0.0.1:$port/health")
"${cli[@]}" >/dev/null
"${curl[@]}" >/dev/null

hyperfine --shell=none --warmup 10 --runs 100 --export-json "$work/oneshot.json" \
    "${cli[*]}" "${curl[*]}" >/dev/null
DECNET_AGENT_CLIENT_LIB="$PWD/target/c-abi/release/libdecnet_agent_client.so" \
    taskset -c "$cpus" python3 benches/python_peers.py "$work/ca" "$host" > "$work/python.json"

python3 - "$work/oneshot.json" "$work/python.json" <<'PY'
import json, sys
oneshot = json.load(open(sys.argv[1]))["results"]
py = json.load(open(sys.argv[2]))
cli, curl = (r["median"] * 1e3 for r in oneshot)
rows = [
    ("one-shot pinned health: our CLI", cli, "curl --cert --key --cacert --pinnedpubkey", curl),
    ("Python module, warm call", py["python_module_warm_ms"], "httpx reference-style, warm call", py["httpx_reference_warm_ms"]),
    ("raw ctypes call (interleaved with the next row)", py["raw_ctypes_warm_ms"], "httpx reference-style, warm call", py["httpx_reference_warm_ms"]),
    ("Python module, warm call (interleaved with the raw call)", py["python_module_warm_interleaved_ms"], "httpx reference-style, warm call", py["httpx_reference_warm_ms"]),
    ("Python module, cold client + call", py["python_module_cold_ms"], "httpx reference-style, probe + client + call", py["httpx_reference_cold_ms"]),
]
print("| ours | median ms | peer | median ms | peer / ours |")
print("|---|---|---|---|---|")
for ours, a, peer, b in rows:
    print(f"| {ours} | {a:.3f} | {peer} | {b:.3f} | {b / a:.1f}x |")
print()
print(f"Python layer over the raw ctypes call: {py['python_layer_us']:.1f} us per call")
PY
