//! Measures the canonical topology hash over a realistic ~1 MiB hydrated
//! topology. Prints figures; asserts nothing about time. Throughput is
//! always relative to the size of the JSON text.
//!
//! Run with `cargo bench --bench topology_hash`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use decnet_agent_client::topology::{canonical_hash, canonical_hash_str, canonical_json};
use serde_json::{json, Value};

const TARGET_BYTES: usize = 1024 * 1024;
const ITERATIONS: usize = 200;
const WARMUP: usize = 10;

/// A small deterministic generator, so every run hashes the same document.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn timestamp(rng: &mut Lcg) -> String {
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000)
    )
}

fn service(rng: &mut Lcg) -> Value {
    let (name, port, banner) = [
        ("ssh", 22, "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6"),
        ("http", 80, "nginx/1.24.0"),
        ("https", 443, "Apache/2.4.58 (Debian)"),
        ("smb", 445, "Samba 4.19.5"),
        ("rdp", 3389, "Microsoft Terminal Services"),
        ("mysql", 3306, "5.7.44-log MySQL Community Server"),
        ("telnet", 23, "BusyBox v1.36.1 telnetd"),
    ][rng.below(7) as usize];
    json!({
        "name": name,
        "port": port,
        "proto": "tcp",
        "banner": banner,
        "enabled": rng.below(10) != 0,
        "status": "listening",
        "updated_at": timestamp(rng),
        "config": {
            "emulation": rng.pick(&["low", "medium", "high"]),
            "log_level": rng.pick(&["info", "debug"]),
            "credentials": [
                {"user": "admin", "password": format!("p@ss-{}", rng.below(100_000))},
                {"user": "root", "password": "toor"}
            ],
            "rate_limit": rng.below(1000) as f64 / 7.0,
        }
    })
}

fn node(rng: &mut Lcg, i: usize) -> Value {
    let kind = rng.pick(&["decky", "decky", "decky", "router", "switch", "sensor"]);
    let services: Vec<Value> = (0..1 + rng.below(4)).map(|_| service(rng)).collect();
    let name = match rng.below(8) {
        0 => format!("décky-façade-{i:04}"),
        1 => format!("节点-{i:04}"),
        _ => format!(
            "{kind}-{}-{i:04}",
            rng.pick(&["web", "db", "file", "dc", "mail"])
        ),
    };
    json!({
        "id": format!("node-{i:06}"),
        "name": name,
        "kind": kind,
        "hostname": format!("host{i}.corp.example.internal"),
        "ip": format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254)),
        "mac": format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", rng.below(256), rng.below(256), rng.below(256), rng.below(256)),
        "os": rng.pick(&["ubuntu-22.04", "windows-server-2019", "debian-12", "routeros-7"]),
        "services": services,
        "labels": {"env": rng.pick(&["prod", "staging"]), "zone": rng.pick(&["dmz", "lan", "ot"]), "owner": "sec-ops"},
        "x": rng.below(4000) as f64 + 0.5,
        "y": rng.below(3000) as f64 + 0.25,
        "w": 120,
        "h": 64,
        "created_at": timestamp(rng),
        "updated_at": timestamp(rng),
        "last_seen": timestamp(rng),
        "status": rng.pick(&["running", "stopped", "error"]),
        "last_error": null,
        "version": rng.below(50),
        "weight": rng.below(1_000_000) as f64 / 1e6,
    })
}

fn edge(rng: &mut Lcg, i: usize, nodes: usize) -> Value {
    json!({
        "id": format!("edge-{i:06}"),
        "source": format!("node-{:06}", rng.below(nodes as u64)),
        "target": format!("node-{:06}", rng.below(nodes as u64)),
        "kind": rng.pick(&["lan", "wan", "vpn"]),
        "attrs": {
            "latency_ms": rng.below(10_000) as f64 / 100.0,
            "bandwidth_mbps": 10u64.pow(1 + rng.below(4) as u32),
            "vlan": rng.below(4096),
            "path": [{"x": rng.below(4000), "y": rng.below(3000)}, {"x": rng.below(4000), "y": rng.below(3000)}],
        },
        "status": "up",
        "created_at": timestamp(rng),
    })
}

/// Writes `value` as Python's `json.dumps` does by default (`", "` and
/// `": "` separators, non-ASCII as `\uXXXX`), but with every object's keys in
/// reverse order, so the hash has to sort them all.
fn python_style(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_style(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_string(key, out);
                out.push_str(": ");
                python_style(item, out);
            }
            out.push('}');
        }
        Value::String(s) => python_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Builds a hydrated topology of at least `target` bytes of compact JSON.
fn build_topology(target: usize) -> Value {
    let mut rng = Lcg(0x5eed);
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut approx = 0;
    while approx < target {
        let n = node(&mut rng, nodes.len());
        approx += n.to_string().len();
        nodes.push(n);
        if nodes.len() > 1 {
            let e = edge(&mut rng, edges.len(), nodes.len());
            approx += e.to_string().len();
            edges.push(e);
        }
    }
    json!({
        "topology": {
            "id": "topo-7f3a9c",
            "name": "Corporate decoy network",
            "description": "Hydrated topology for the benchmark — nodes, services, edges",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-03-01T12:00:00Z",
            "status": "applied",
            "version": 42,
            "nodes": nodes,
            "edges": edges,
        },
        "networks": [
            {"id": "net-dmz", "cidr": "10.0.0.0/16", "gateway": "10.0.0.1"},
            {"id": "net-lan", "cidr": "10.1.0.0/16", "gateway": "10.1.0.1"},
        ],
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `f` and prints median, p90 and throughput over `bytes` of input.
fn measure(label: &str, bytes: usize, mut f: impl FnMut()) {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = percentile(&times, 0.5);
    let p90 = percentile(&times, 0.9);
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{label:<40} median {:8.3} ms   p90 {:8.3} ms   {:8.1} MiB/s   ({:.3} ms per MiB)",
        ms(median),
        ms(p90),
        mib / median.as_secs_f64(),
        ms(median) / mib,
    );
}

fn main() {
    let value = build_topology(TARGET_BYTES);
    let compact = serde_json::to_string(&value).expect("serializable");
    let mut text = String::with_capacity(compact.len() * 2);
    python_style(&value, &mut text);
    let canonical = canonical_json(&value).expect("hashable");
    let nodes = value["topology"]["nodes"].as_array().map_or(0, Vec::len);
    let edges = value["topology"]["edges"].as_array().map_or(0, Vec::len);
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    println!("hydrated topology: {nodes} nodes, {edges} edges");
    println!(
        "  as sent (Python json.dumps style, keys unsorted): {} bytes ({:.2} MiB)",
        text.len(),
        mib(text.len())
    );
    println!(
        "  compact, keys sorted: {} bytes ({:.2} MiB); canonical form {} bytes",
        compact.len(),
        mib(compact.len()),
        canonical.len()
    );
    let digest = canonical_hash_str(&text).expect("hashable");
    assert_eq!(digest, canonical_hash_str(&compact).expect("hashable"));
    assert_eq!(digest, canonical_hash(&value).expect("hashable"));
    println!("digest {digest}");
    println!("{ITERATIONS} iterations after {WARMUP} warm-up runs; MiB/s of input text");

    measure("canonical_hash_str, as sent", text.len(), || {
        black_box(canonical_hash_str(black_box(&text)).expect("hashable"));
    });
    measure("canonical_hash_str, compact sorted", compact.len(), || {
        black_box(canonical_hash_str(black_box(&compact)).expect("hashable"));
    });
    measure("canonical_hash(&Value)", compact.len(), || {
        black_box(canonical_hash(black_box(&value)).expect("hashable"));
    });
    measure("canonical_json(&Value)", compact.len(), || {
        black_box(canonical_json(black_box(&value)).expect("hashable"));
    });
    // For comparison: what parsing to a `Value` first would add.
    measure("reference: serde_json parse, as sent", text.len(), || {
        black_box(serde_json::from_str::<Value>(black_box(&text)).expect("valid"));
    });
}
