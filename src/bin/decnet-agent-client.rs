//! `decnet-agent-client`: the command-line front end, for shell tooling.
//!
//! Results go to stdout as one line of JSON; an error goes to stderr as one
//! line, and the exit status tells its kind (see `--help`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use decnet_agent_client::client::{
    AgentClient, HostRecord, HostnameVerification, Profile, Timeouts,
};
use decnet_agent_client::identity::{default_ca_dir, MASTER_DIR};
use decnet_agent_client::pki::{self, CertificateAuthority, LEAF_VALIDITY_DAYS};
use decnet_agent_client::{topology, Error, ErrorKind, Identity, Result};
use serde_json::{json, Value};

#[path = "cli/docs.rs"]
mod docs;
#[path = "cli/fleet.rs"]
mod fleet;
#[path = "cli/updater.rs"]
mod updater;
#[path = "cli/verbose.rs"]
mod verbose;

/// Exit statuses, one per error kind: 10 + the kind's stable code.
const EXIT_CODES: &str = "\
Exit status:
  0   success
  2   usage error (bad or missing arguments)
  11  invalid_argument     12  io               13  pki
  14  not_enrolled         15  connect          16  tls
  17  pin_mismatch         18  timeout          19  http_status
  20  protocol             21  connection_lost  22  internal

Results are printed to stdout as one line of JSON; errors to stderr as one
line: `decnet-agent-client: <kind>: <message>`. With -v or -vv the library's
events go to stderr first, one JSON line each.";

#[derive(Parser)]
#[command(name = "decnet-agent-client", version, about = "Drive DECNET worker agents over mutual TLS", after_help = EXIT_CODES)]
struct Cli {
    /// CA directory holding the CA and the master identity (`identity-ensure`
    /// creates them; calls to workers only load them) [default: $HOME/.decnet/ca]
    #[arg(long, global = true, value_name = "DIR")]
    ca_dir: Option<PathBuf>,

    /// Worker host record as JSON: a file, or `-` for standard input
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "address")]
    host_json: Option<String>,

    /// Worker address (IPv4, IPv6 or DNS name), instead of --host-json
    #[arg(long, global = true)]
    address: Option<String>,

    /// Worker agent port, with --address
    #[arg(long, global = true, default_value_t = 8765)]
    port: u16,

    /// SHA-256 fingerprint the worker's certificate must have (overrides the host record's)
    #[arg(long, global = true, value_name = "HEX")]
    pin: Option<String>,

    /// Connect without a pin when none is given (--address without --pin,
    /// a host record without client_cert_fingerprint); logged at warn
    #[arg(long, global = true, conflicts_with = "pin")]
    no_pin: bool,

    /// Check the worker's name against its certificate [default: $DECNET_VERIFY_HOSTNAME, else true]
    #[arg(long, global = true, value_name = "BOOL")]
    verify_hostname: Option<bool>,

    /// Never resume a TLS session: every connection pays a full handshake
    /// (resumption keeps the pin; see the README's security section)
    #[arg(long, global = true)]
    no_resumption: bool,

    /// Connect + handshake timeout in seconds, for every call
    #[arg(long, global = true, value_name = "SECS")]
    connect_timeout: Option<f64>,

    /// Read timeout in seconds, for every call
    #[arg(long, global = true, value_name = "SECS")]
    read_timeout: Option<f64>,

    /// Write timeout in seconds, for every call
    #[arg(long, global = true, value_name = "SECS")]
    write_timeout: Option<f64>,

    /// Print the library's events on stderr, one JSON line each: -v
    /// connections, requests and failures; -vv also request and response bodies
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// GET /health
    Health,
    /// GET /status: the deployment snapshot
    Status,
    /// POST /deploy of a deployment config (checked locally first)
    Deploy {
        /// Deployment config JSON: a file, or `-` for standard input
        #[arg(long, value_name = "FILE")]
        config: String,
        /// Validate only
        #[arg(long)]
        dry_run: bool,
        /// Rebuild images without cache
        #[arg(long)]
        no_cache: bool,
    },
    /// POST /mutate: give a decky a new set of services
    Mutate {
        /// The decky to change
        decky: String,
        /// The services it should run
        #[arg(required = true)]
        services: Vec<String>,
        /// Validate only
        #[arg(long)]
        dry_run: bool,
    },
    /// POST /teardown of one decky, or of everything with --all --yes
    Teardown {
        /// The decky to remove
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        decky: Option<String>,
        /// Remove every decky
        #[arg(long)]
        all: bool,
        /// Confirm removing everything
        #[arg(long)]
        yes: bool,
    },
    /// POST /self-destruct: the worker wipes itself (needs --yes)
    SelfDestruct {
        /// Confirm
        #[arg(long)]
        yes: bool,
    },
    /// POST /topology/apply (the version hash is computed unless given)
    TopologyApply {
        /// Hydrated topology JSON: a file, or `-` for standard input
        #[arg(long, value_name = "FILE")]
        hydrated: String,
        /// Send this version hash instead of computing it
        #[arg(long, value_name = "HEX")]
        version_hash: Option<String>,
    },
    /// POST /topology/teardown
    TopologyTeardown {
        /// The topology to remove
        topology_id: String,
    },
    /// GET /topology/state
    TopologyState,
    /// Open and verify one connection (chain, hostname, pin), then exit
    Connect,
    /// Create or load the CA and the master identity in --ca-dir
    IdentityEnsure,
    /// Enroll a worker: with --address, write its agent and updater bundles
    /// under <ca-dir>/workers/NAME/ and print its host record (agent port:
    /// --port); with --out DIR, only issue a bundle (ca.crt, worker.crt,
    /// worker.key) into DIR
    Enroll {
        /// The worker's name (certificate CN and a DNS SAN)
        name: String,
        /// Only issue a bundle into this folder (created 0700)
        #[arg(long, value_name = "DIR", conflicts_with_all = ["no_updater", "reissue"])]
        out: Option<PathBuf>,
        /// Subject alternative names (IP addresses or DNS names); repeatable
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        /// Validity in days, with --out
        #[arg(long, default_value_t = LEAF_VALIDITY_DAYS, requires = "out")]
        days: u32,
        /// Issue no updater identity (the record's updater pin is null)
        #[arg(long)]
        no_updater: bool,
        /// Replace an existing enrollment of NAME
        #[arg(long)]
        reissue: bool,
    },
    /// Calls to the worker's updater (pinned with the record's
    /// updater_cert_fingerprint, or --pin; never unpinned)
    Updater {
        /// The updater's port [default: 8766]
        #[arg(long, value_name = "PORT")]
        updater_port: Option<u16>,
        #[command(subcommand)]
        call: updater::UpdaterCall,
    },
    /// Fingerprint (SHA-256 of the DER, lowercase hex) of a certificate file
    Fingerprint {
        /// PEM or DER certificate file
        file: PathBuf,
        /// Print only the 64 hex digits, for scripts (no JSON, no colons)
        #[arg(long)]
        raw: bool,
    },
    /// Canonical topology hash, as the worker computes it
    TopologyHash {
        /// Hydrated topology JSON: a file, or `-` for standard input
        file: String,
    },
    /// One RPC over many workers: NDJSON results on stdout as hosts complete
    #[command(after_help = fleet::exit_help())]
    Fleet(fleet::FleetArgs),
    /// Print the shell completion script for SHELL (`make install` installs them)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Print the man page, roff; with --dir, write it and one page per
    /// subcommand into DIR (`make install` installs them)
    Manpage {
        /// Existing folder for every page (`decnet-agent-client.1`,
        /// `decnet-agent-client-fleet.1`, ...)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    verbose::install(cli.verbose);
    if let Command::Fleet(args) = &cli.command {
        return fleet::main(&cli, args);
    }
    match run(&cli) {
        Ok(Some(value)) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{value}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(exit_code(ErrorKind::Io)),
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            eprintln!("decnet-agent-client: {}: {message}", e.kind().name());
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

fn exit_code(kind: ErrorKind) -> u8 {
    10 + kind.code() as u8
}

/// Reads a file, or standard input for `-`.
fn read_input(source: &str, what: &str) -> Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("<stdin>", e))?;
        return Ok(text);
    }
    std::fs::read_to_string(source).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Error::invalid(what, format!("{source} is not UTF-8")),
        _ => Error::io(source, e),
    })
}

fn read_json(source: &str, what: &str) -> Result<Value> {
    decnet_agent_client::json::from_str(&read_input(source, what)?)
        .map_err(|e| Error::invalid(what, format!("malformed JSON: {e}")))
}

fn ca_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.ca_dir {
        Some(dir) => Ok(dir.clone()),
        None => default_ca_dir(),
    }
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::invalid(what, "must be a positive number of seconds"))
}

/// `timeouts` with the `--connect-timeout`, `--read-timeout` and
/// `--write-timeout` the user gave, for every client the tool makes.
fn with_timeout_options(cli: &Cli, mut timeouts: Timeouts) -> Result<Timeouts> {
    if let Some(s) = cli.connect_timeout {
        timeouts.connect = seconds(s, "connect_timeout")?;
    }
    if let Some(s) = cli.read_timeout {
        timeouts.read = seconds(s, "read_timeout")?;
    }
    if let Some(s) = cli.write_timeout {
        timeouts.write = seconds(s, "write_timeout")?;
    }
    Ok(timeouts)
}

fn client(cli: &Cli) -> Result<AgentClient> {
    if cli.host_json.as_deref() == Some("-") && reads_stdin(&cli.command) {
        return Err(Error::invalid(
            "host_json",
            "standard input is already taken by another argument",
        ));
    }
    let record = match (&cli.host_json, &cli.address) {
        // --pin or --no-pin stands in for the record's own pin.
        (Some(source), _) if cli.pin.is_some() || cli.no_pin => {
            HostRecord::from_value_unpinned(&read_json(source, "host_json")?)?
        }
        (Some(source), _) => HostRecord::from_value(&read_json(source, "host_json")?)?,
        (None, Some(_)) if cli.pin.is_none() && !cli.no_pin => {
            return Err(Error::invalid(
                "pin",
                "--address needs --pin HEX (the worker's SHA-256 fingerprint), \
                 or --no-pin to connect unpinned",
            ))
        }
        (None, Some(address)) => HostRecord::new(address, cli.port)?,
        (None, None) => {
            return Err(Error::invalid(
                "host_json",
                "give --host-json FILE or --address ADDR",
            ))
        }
    };
    let record = match &cli.pin {
        Some(pin) => HostRecord {
            pin_origin: Some("--pin".into()),
            ..record.with_pin(Some(pin))?
        },
        None => record,
    };
    let hostname = hostname_choice(cli);
    // Load, never create: a CA made here could not talk to any worker.
    let identity = Identity::load_dir(&ca_dir(cli)?.join(MASTER_DIR))?;
    let client = if cli.no_pin {
        AgentClient::new_unpinned(&identity, record, hostname)?
    } else {
        AgentClient::new(&identity, record, hostname)?
    };
    client.set_session_resumption(!cli.no_resumption);
    for profile in Profile::ALL {
        client.set_timeouts(
            profile,
            with_timeout_options(cli, client.timeouts(profile))?,
        )?;
    }
    Ok(client)
}

fn hostname_choice(cli: &Cli) -> HostnameVerification {
    match cli.verify_hostname {
        Some(true) => HostnameVerification::On,
        Some(false) => HostnameVerification::Off,
        None => HostnameVerification::FromEnvironment,
    }
}

fn reads_stdin(command: &Command) -> bool {
    match command {
        Command::Deploy { config, .. } => config == "-",
        Command::TopologyApply { hydrated, .. } => hydrated == "-",
        _ => false,
    }
}

fn require_yes(yes: bool, what: &str) -> Result<()> {
    if yes {
        Ok(())
    } else {
        Err(Error::invalid(
            "yes",
            format!("{what} is irreversible: add --yes to confirm"),
        ))
    }
}

fn run(cli: &Cli) -> Result<Option<Value>> {
    let value = match &cli.command {
        Command::Health => client(cli)?.health()?,
        Command::Status => client(cli)?.status()?,
        Command::Deploy {
            config,
            dry_run,
            no_cache,
        } => {
            let config = read_json(config, "config")?;
            client(cli)?.deploy(&config, *dry_run, *no_cache)?
        }
        Command::Mutate {
            decky,
            services,
            dry_run,
        } => client(cli)?.mutate(decky, services, *dry_run)?,
        Command::Teardown { decky, all, yes } => {
            if *all {
                require_yes(*yes, "tearing down every decky")?;
            }
            client(cli)?.teardown(decky.as_deref())?
        }
        Command::SelfDestruct { yes } => {
            require_yes(*yes, "self-destruct")?;
            client(cli)?.self_destruct()?
        }
        Command::TopologyApply {
            hydrated,
            version_hash,
        } => {
            let hydrated = read_input(hydrated, "hydrated")?;
            client(cli)?.apply_topology_json(&hydrated, version_hash.as_deref())?
        }
        Command::TopologyTeardown { topology_id } => client(cli)?.teardown_topology(topology_id)?,
        Command::TopologyState => client(cli)?.topology_state()?,
        Command::Connect => {
            let client = client(cli)?;
            client.connect()?;
            json!({"connected": client.describe()})
        }
        Command::IdentityEnsure => {
            let dir = ca_dir(cli)?;
            let identity = Identity::ensure(Some(&dir))?;
            let ca = CertificateAuthority::load(&dir)?;
            json!({
                "ca_dir": dir,
                "ca_fingerprint": ca.fingerprint(),
                "master_dir": dir.join(MASTER_DIR),
                "master_fingerprint": identity.fingerprint(),
            })
        }
        Command::Enroll {
            name,
            out: Some(out),
            sans,
            days,
            ..
        } => {
            let bundle = CertificateAuthority::load(&ca_dir(cli)?)?.issue(name, sans, *days)?;
            bundle.write(out)?;
            json!({"name": name, "dir": out, "fingerprint": bundle.fingerprint})
        }
        Command::Enroll {
            name,
            out: None,
            sans,
            no_updater,
            reissue,
            ..
        } => updater::run_enroll(cli, name, sans, *no_updater, *reissue)?,
        Command::Updater { updater_port, call } => updater::run_updater(cli, *updater_port, call)?,
        Command::Fingerprint { file, raw } => {
            let fingerprint = pki::fingerprint_file(Path::new(file))?;
            if *raw {
                writeln!(std::io::stdout().lock(), "{fingerprint}")
                    .map_err(|e| Error::io("<stdout>", e))?;
                return Ok(None);
            }
            json!({"file": file, "fingerprint": fingerprint})
        }
        Command::TopologyHash { file } => {
            json!({"version_hash": topology::canonical_hash_str(&read_input(file, "hydrated")?)?})
        }
        Command::Completions { shell } => {
            docs::completions(*shell, &mut std::io::stdout().lock())?;
            return Ok(None);
        }
        Command::Manpage { dir: None } => {
            docs::manpage(&mut std::io::stdout().lock())?;
            return Ok(None);
        }
        Command::Manpage { dir: Some(dir) } => {
            docs::manpages(dir)?;
            return Ok(None);
        }
        // `main` runs it: its exit status says how the fleet fared.
        Command::Fleet(_) => return Err(Error::internal("fleet is run by main")),
    };
    Ok(Some(value))
}
