//! The `updater …` subcommands and `enroll` (full enrollment): the worker
//! updater channel and the host record, for shell masters.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use decnet_agent_client::enroll::{enroll, EnrollRequest};
use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::updater::{
    SelfUpdate, Tarball, UpdaterClient, UpdaterProfile, DEFAULT_UPDATER_PORT,
};
use decnet_agent_client::{Error, Identity, Result};
use serde_json::{json, Value};

use super::{ca_dir, hostname_choice, read_json, seconds, with_timeout_options, Cli};

/// One call to a worker's updater.
#[derive(Subcommand)]
pub(super) enum UpdaterCall {
    /// GET /health: status, role and releases
    Health,
    /// GET /releases
    Releases,
    /// POST /update of a release tarball (its SHA-256 is computed here)
    Update {
        /// The tarball file (streamed from disk)
        #[arg(long, value_name = "FILE")]
        tarball: PathBuf,
        /// Git SHA of the release, for provenance
        #[arg(long, default_value = "")]
        sha: String,
    },
    /// POST /update-self: replace the updater itself (needs --yes); prints
    /// {"connection_closed": bool, "body": answer or null}
    UpdateSelf {
        /// The tarball file (streamed from disk)
        #[arg(long, value_name = "FILE")]
        tarball: PathBuf,
        /// Git SHA of the release, for provenance
        #[arg(long, default_value = "")]
        sha: String,
        /// Confirm replacing the updater
        #[arg(long)]
        yes: bool,
    },
    /// POST /rollback to the previous release
    Rollback,
    /// Poll GET /health until the active release has this git SHA
    WaitForRelease {
        /// The git SHA to wait for
        sha: String,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 120.0, value_name = "SECS")]
        deadline: f64,
        /// Seconds between polls
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
    },
}

/// The updater client the global options describe: `--host-json` (pin:
/// its `updater_cert_fingerprint`, unless `--pin` overrides it) or
/// `--address` with `--pin`.
fn updater_client(cli: &Cli, port: u16) -> Result<UpdaterClient> {
    let hostname = hostname_choice(cli);
    let identity = Identity::load_dir(&ca_dir(cli)?.join(MASTER_DIR))?;
    let client = match (&cli.host_json, &cli.address) {
        (Some(source), _) => {
            let mut record = read_json(source, "host_json")?;
            if let (Some(pin), Some(object)) = (&cli.pin, record.as_object_mut()) {
                object.insert("updater_cert_fingerprint".into(), json!(pin));
            }
            UpdaterClient::from_host_value(&identity, &record, port, hostname)?
        }
        (None, Some(address)) => {
            let pin = cli.pin.as_deref().ok_or_else(|| {
                Error::invalid(
                    "pin",
                    "the updater needs --pin (its certificate's fingerprint)",
                )
            })?;
            UpdaterClient::new(&identity, address, port, pin, hostname)?
        }
        (None, None) => {
            return Err(Error::invalid(
                "host_json",
                "give --host-json FILE or --address ADDR --pin HEX",
            ))
        }
    };
    for profile in UpdaterProfile::ALL {
        client.set_timeouts(
            profile,
            with_timeout_options(cli, client.timeouts(profile))?,
        )?;
    }
    Ok(client)
}

/// Runs one updater call and returns what to print.
pub(super) fn run_updater(cli: &Cli, port: Option<u16>, call: &UpdaterCall) -> Result<Value> {
    let client = updater_client(cli, port.unwrap_or(DEFAULT_UPDATER_PORT))?;
    match call {
        UpdaterCall::Health => client.health(),
        UpdaterCall::Releases => client.releases(),
        UpdaterCall::Update { tarball, sha } => client.update(Tarball::File(tarball), sha),
        UpdaterCall::UpdateSelf { tarball, sha, yes } => {
            if !yes {
                return Err(Error::invalid(
                    "yes",
                    "update-self replaces the updater: add --yes to confirm",
                ));
            }
            Ok(match client.update_self(Tarball::File(tarball), sha)? {
                SelfUpdate::Answered(body) => json!({"connection_closed": false, "body": body}),
                SelfUpdate::QueuedConnectionClosed => {
                    json!({"connection_closed": true, "body": null})
                }
            })
        }
        UpdaterCall::Rollback => client.rollback(),
        UpdaterCall::WaitForRelease {
            sha,
            deadline,
            interval,
        } => client.wait_for_release(
            sha,
            seconds(*deadline, "deadline")?,
            Duration::try_from_secs_f64(*interval)
                .map_err(|_| Error::invalid("interval", "must be a number of seconds"))?,
        ),
    }
}

/// `enroll NAME --address ADDR …`: writes both bundles under
/// `<ca_dir>/workers/NAME/` and returns the host record.
pub(super) fn run_enroll(
    cli: &Cli,
    name: &str,
    sans: &[String],
    no_updater: bool,
    reissue: bool,
) -> Result<Value> {
    let address = cli.address.as_deref().ok_or_else(|| {
        Error::invalid(
            "address",
            "enroll needs --address (or --out DIR for a bare bundle)",
        )
    })?;
    let request = EnrollRequest {
        name: name.to_string(),
        address: address.to_string(),
        sans: sans.to_vec(),
        agent_port: cli.port,
        with_updater: !no_updater,
        reissue,
    };
    Ok(enroll(&ca_dir(cli)?, &request)?.record)
}
