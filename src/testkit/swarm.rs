//! Stand-in workers and stand-in updaters by the hundred: each with its own
//! certificate (and so its own pin) on its own loopback port, each with its
//! own behaviour. Used in-process by the fleet tests and from a separate
//! process (the `swarm` example) by the fleet benchmark.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};

use super::endpoint::agent_record;
use super::evented::EventedSwarm;
use super::updater::{StandInUpdater, UpdaterMode, Upload};
use super::worker::{Fault, StandInWorker};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::pki::{Bundle, CertificateAuthority, LEAF_VALIDITY_DAYS};

/// How one member of a swarm behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers as the contract says.
    Healthy,
    /// Waits this long before every answer.
    Stall(Duration),
    /// Presents a certificate from the same CA that is not the pinned one.
    WrongCertificate,
    /// Nothing listens on its port: connections are refused.
    Refuse,
    /// Answers every request with 500.
    ServerError,
    /// Answers as the contract says and closes a connection idle this long
    /// (the reference worker does after ~5 s).
    ClosesIdle(Duration),
    /// Takes this long to answer each TLS handshake, then serves normally.
    SlowHandshake(Duration),
    /// Brings up this many deckies of a deploy, then answers it 500 (see
    /// [`Fault::DeployFailsAfter`]).
    DeployFailsAfter(usize),
}

impl Behaviour {
    /// A short lowercase label (`healthy`, `stall`, `wrong-cert`, `refuse`,
    /// `server-error`, `closes-idle`, `slow-handshake`, `deploy-fails`).
    pub fn label(self) -> &'static str {
        match self {
            Behaviour::Healthy => "healthy",
            Behaviour::Stall(_) => "stall",
            Behaviour::WrongCertificate => "wrong-cert",
            Behaviour::Refuse => "refuse",
            Behaviour::ServerError => "server-error",
            Behaviour::ClosesIdle(_) => "closes-idle",
            Behaviour::SlowHandshake(_) => "slow-handshake",
            Behaviour::DeployFailsAfter(_) => "deploy-fails",
        }
    }
}

/// One member: its behaviour, its pinned host record and, unless it
/// refuses connections, its running stand-in.
pub struct Member {
    /// How it behaves.
    pub behaviour: Behaviour,
    /// Its host record (uuid `uuid-w<i>`, name `w<i>`), pinned to the
    /// certificate it was started with.
    pub record: Value,
    /// The running stand-in (`None` for [`Behaviour::Refuse`]).
    pub worker: Option<StandInWorker>,
    /// Holds a refusing member's port.
    _reservation: Option<Socket>,
}

/// Many stand-in workers. Each costs one accepting thread plus one thread
/// and one socket per open connection, all with small stacks; dropping
/// the swarm stops them all.
pub struct Swarm {
    members: Vec<Member>,
}

impl Swarm {
    /// Starts one member per entry of `behaviours`, every worker with its
    /// own certificate (valid for 127.0.0.1, ::1 and localhost) issued by
    /// `ca`, trusting client certificates from `ca`.
    pub fn start(ca: &CertificateAuthority, behaviours: &[Behaviour]) -> Result<Swarm> {
        let bundle = |name: &str| -> Result<Bundle> {
            ca.issue(name, &["127.0.0.1", "::1", "localhost"], LEAF_VALIDITY_DAYS)
        };
        let mut members = Vec::with_capacity(behaviours.len());
        for (i, &behaviour) in behaviours.iter().enumerate() {
            let name = format!("w{i}");
            let record = |addr: SocketAddr, pin: Value| agent_record(&name, addr, pin);
            let member = if behaviour == Behaviour::Refuse {
                // A bound socket that never listens: connections are
                // refused, and no other socket can take the port meanwhile.
                let (socket, addr) = bound_not_listening()?;
                Member {
                    behaviour,
                    record: record(addr, Value::String("00".repeat(32))),
                    worker: None,
                    _reservation: Some(socket),
                }
            } else {
                let worker = StandInWorker::start(&bundle(&name)?)?;
                let pinned = record(worker.addr(), Value::String(worker.fingerprint()));
                match behaviour {
                    Behaviour::Stall(delay) => worker.set_fault(Fault::Stall(delay)),
                    Behaviour::ServerError => worker.set_fault(Fault::ServerError),
                    Behaviour::ClosesIdle(after) => worker.set_fault(Fault::CloseIdleAfter(after)),
                    Behaviour::SlowHandshake(delay) => {
                        worker.set_fault(Fault::SlowHandshake(delay))
                    }
                    Behaviour::DeployFailsAfter(up) => {
                        worker.set_fault(Fault::DeployFailsAfter(up))
                    }
                    Behaviour::WrongCertificate => {
                        worker.swap_certificate(&bundle(&format!("{name}-other"))?)?
                    }
                    Behaviour::Healthy | Behaviour::Refuse => {}
                }
                Member {
                    behaviour,
                    record: pinned,
                    worker: Some(worker),
                    _reservation: None,
                }
            };
            members.push(member);
        }
        Ok(Swarm { members })
    }

    /// The members, in the order they were started.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member's host record, as a JSON array.
    pub fn host_records(&self) -> Value {
        Value::Array(self.members.iter().map(|m| m.record.clone()).collect())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the swarm has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// How one member of an updater swarm behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdaterBehaviour {
    /// Installs and answers as the contract says.
    Accept,
    /// Every update fails its probe and is rolled back: 409.
    RollsBack,
    /// Every update fails, not rolled back: 500.
    Fails,
    /// Accepts updates; on update-self reads the request, closes the
    /// connection without answering and installs after this delay (the
    /// updater re-executing).
    DropsSelfUpdate(Duration),
    /// Installs after waiting this long per upload.
    Slow(Duration),
    /// Its record's pin is not its certificate's.
    WrongPin,
    /// Its record has no `updater_cert_fingerprint`.
    NoPin,
}

impl UpdaterBehaviour {
    /// A short lowercase label (`accept`, `rolls-back`, `fails`,
    /// `drops-self-update`, `slow`, `wrong-pin`, `no-pin`).
    pub fn label(self) -> &'static str {
        match self {
            UpdaterBehaviour::Accept => "accept",
            UpdaterBehaviour::RollsBack => "rolls-back",
            UpdaterBehaviour::Fails => "fails",
            UpdaterBehaviour::DropsSelfUpdate(_) => "drops-self-update",
            UpdaterBehaviour::Slow(_) => "slow",
            UpdaterBehaviour::WrongPin => "wrong-pin",
            UpdaterBehaviour::NoPin => "no-pin",
        }
    }

    fn mode(self) -> UpdaterMode {
        match self {
            UpdaterBehaviour::RollsBack => UpdaterMode::ProbeFailsRolledBack,
            UpdaterBehaviour::Fails => UpdaterMode::InstallFails,
            UpdaterBehaviour::DropsSelfUpdate(delay) => UpdaterMode::DropAfterSelfUpdate(delay),
            UpdaterBehaviour::Slow(delay) => UpdaterMode::Slow(delay),
            _ => UpdaterMode::Normal,
        }
    }
}

/// One member of an updater swarm.
pub struct UpdaterMember {
    /// How it behaves.
    pub behaviour: UpdaterBehaviour,
    /// Its host record (uuid `uuid-u<i>`, name `u<i>`, `address`,
    /// `updater_port`, `updater_cert_fingerprint` as its behaviour says);
    /// only fields a host record may carry.
    pub record: Value,
    /// The running stand-in updater; its uploads are this member's ledger.
    pub updater: StandInUpdater,
}

/// Many stand-in updaters; dropping the swarm stops them all.
pub struct UpdaterSwarm {
    members: Vec<UpdaterMember>,
}

impl UpdaterSwarm {
    /// Starts one stand-in updater per entry of `behaviours`, each with its
    /// own certificate (`updater@u<i>`, valid for 127.0.0.1) issued by `ca`.
    pub fn start(ca: &CertificateAuthority, behaviours: &[UpdaterBehaviour]) -> Result<Self> {
        let mut members = Vec::with_capacity(behaviours.len());
        for (i, &behaviour) in behaviours.iter().enumerate() {
            let name = format!("u{i}");
            let cn = format!("updater@{name}");
            let bundle = ca.issue(&cn, &["127.0.0.1", &name, &cn], LEAF_VALIDITY_DAYS)?;
            let updater = StandInUpdater::start(&bundle)?;
            updater.set_mode(behaviour.mode());
            let pin = match behaviour {
                UpdaterBehaviour::NoPin => Value::Null,
                UpdaterBehaviour::WrongPin => Value::String("ab".repeat(32)),
                _ => Value::String(updater.fingerprint()),
            };
            let record = json!({
                "uuid": format!("uuid-{name}"),
                "name": name,
                "address": "127.0.0.1",
                "agent_port": 1,
                "updater_port": updater.port(),
                "client_cert_fingerprint": null,
                "updater_cert_fingerprint": pin,
            });
            members.push(UpdaterMember {
                behaviour,
                record,
                updater,
            });
        }
        Ok(UpdaterSwarm { members })
    }

    /// The members, in the order they were started.
    pub fn members(&self) -> &[UpdaterMember] {
        &self.members
    }

    /// Every member's host record, as a JSON array.
    pub fn host_records(&self) -> Value {
        Value::Array(self.members.iter().map(|m| m.record.clone()).collect())
    }

    /// Every member's uploads so far (its ledger), in member order.
    pub fn ledgers(&self) -> Vec<Vec<Upload>> {
        self.members.iter().map(|m| m.updater.uploads()).collect()
    }
}

/// Serves a swarm from this process until it is killed: ensures a CA and
/// master identity in `dir/ca`, starts one stand-in per behaviour, writes
/// their host records to `dir/hosts.json` (a JSON array),
/// `dir/hosts.ndjson` and `dir/hosts/w<i>.json`, each member's name and
/// behaviour to `dir/members.json` (in the same order; a host record has no
/// room for it), then creates `dir/ready`.
/// Raises this process's soft fd limit to fit. Returns only on failure.
pub fn serve_swarm(dir: &Path, behaviours: &[Behaviour]) -> Result<Infallible> {
    // A listener and a kept-alive connection per stand-in, plus slack.
    raise_fd_limit(4 * behaviours.len() as u64 + 256)?;
    let ca_dir = dir.join("ca");
    Identity::ensure(Some(&ca_dir))?;
    let ca = CertificateAuthority::load(&ca_dir)?;
    let swarm = Swarm::start(&ca, behaviours)?;
    let members: Vec<(&Value, &str)> = swarm
        .members()
        .iter()
        .map(|m| (&m.record, m.behaviour.label()))
        .collect();
    publish(dir, &members)?;
    loop {
        std::thread::park();
    }
}

/// Serves `count` event-driven stand-ins ([`EventedSwarm`], healthy, or
/// closing connections idle for `idle_close`) named `w<first>` onwards
/// on loopback address `ip` from this process until it is killed: ensures
/// a CA and master identity in `ca_dir`, writes the files [`serve_swarm`] writes into `dir`, then
/// creates `dir/ready`. Each member costs a listening socket and one per
/// open connection: processes sharing one `ca_dir` can serve disjoint
/// ranges of a swarm too large for one process's descriptor limit.
/// Raises this process's soft fd limit to fit. Returns only on failure.
pub fn serve_evented_swarm(
    dir: &Path,
    ca_dir: &Path,
    ip: Ipv4Addr,
    first: usize,
    count: usize,
    idle_close: Option<Duration>,
) -> Result<Infallible> {
    raise_fd_limit(2 * count as u64 + 256)?;
    Identity::ensure(Some(ca_dir))?;
    let ca = CertificateAuthority::load(ca_dir)?;
    let swarm = EventedSwarm::start(&ca, ip, first, count, idle_close)?;
    let label = if idle_close.is_some() {
        Behaviour::ClosesIdle(Duration::ZERO).label()
    } else {
        Behaviour::Healthy.label()
    };
    let members: Vec<(&Value, &str)> = swarm.members().iter().map(|m| (&m.record, label)).collect();
    publish(dir, &members)?;
    loop {
        std::thread::park();
    }
}

/// Writes a served swarm's files (see [`serve_swarm`]) for `members`, each
/// a host record and its behaviour's label, then `dir/ready`.
fn publish(dir: &Path, members: &[(&Value, &str)]) -> Result<()> {
    let write =
        |path: &Path, text: String| std::fs::write(path, text).map_err(|e| Error::io(path, e));
    let hosts = dir.join("hosts");
    std::fs::create_dir_all(&hosts).map_err(|e| Error::io(&hosts, e))?;
    let mut ndjson = String::new();
    for (record, _) in members {
        write(
            &hosts.join(format!("{}.json", record["name"].as_str().unwrap_or("?"))),
            record.to_string(),
        )?;
        ndjson.push_str(&record.to_string());
        ndjson.push('\n');
    }
    write(&dir.join("hosts.ndjson"), ndjson)?;
    let records: Vec<Value> = members.iter().map(|(r, _)| (*r).clone()).collect();
    write(&dir.join("hosts.json"), Value::Array(records).to_string())?;
    let labels: Vec<Value> = members
        .iter()
        .map(|(r, label)| json!({"name": r["name"], "behaviour": label}))
        .collect();
    write(&dir.join("members.json"), Value::Array(labels).to_string())?;
    write(&dir.join("ready"), String::new())
}

/// A TCP socket bound to a free loopback port, never listening.
fn bound_not_listening() -> Result<(Socket, SocketAddr)> {
    let fail = |e: std::io::Error| Error::Connect {
        address: "127.0.0.1:0".into(),
        reason: format!("cannot reserve a port: {e}"),
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(fail)?;
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .map_err(fail)?;
    let addr = socket
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .ok_or_else(|| Error::internal("a TCP socket without an IP address"))?;
    Ok((socket, addr))
}

/// Raises this process's soft limit on open files to at least `wanted`
/// (capped at the hard limit) and returns the new soft limit. For tests
/// and benchmarks only; the library never changes process limits.
pub fn raise_fd_limit(wanted: u64) -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| Error::internal(format!("getrlimit: {e}")))?;
    let target = wanted.min(hard);
    if soft >= target {
        return Ok(soft);
    }
    rlimit::Resource::NOFILE
        .set(target, hard)
        .map_err(|e| Error::internal(format!("setrlimit: {e}")))?;
    Ok(target)
}
