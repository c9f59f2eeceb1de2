//! decnet-agent-client: drive DECNET honeypot worker agents over mutual TLS.
//!
//! Layers, each using only those before it: [`error`] → [`pki`] →
//! [`identity`] → `tls` (verify, resumption, session, handshake, classify,
//! transport, connector) → `rpc` (one exchange, shared by every client) →
//! [`client`] → [`fleet`] (plan, the shared sweep engine, results, the
//! `Fleet`) → [`completions`] (single calls completed on the library's
//! threads, for event loops); [`topology`], [`rollout`] (the policy and plan of an updater
//! push) and [`shard`] (a deploy split per worker) are pure; `testkit` is
//! used only by tests, benchmarks and the demo, never by the layers.

pub mod client;
pub mod completions;
pub mod enroll;
pub mod error;
pub mod events;
pub mod ffi;
pub mod fleet;
mod hex;
pub mod identity;
pub mod json;
pub mod pki;
pub mod rollout;
mod rpc;
mod secure_fs;
pub mod shard;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tls;
pub mod topology;
pub mod updater;

pub use client::{
    AgentClient, HandshakeCounts, HostRecord, HostnameVerification, Profile, Timeouts,
};
pub use enroll::{enroll, EnrollRequest, Enrolled};
pub use error::{Error, ErrorKind, Result, TimeoutPhase};
pub use events::{Event, Level};
pub use fleet::{Fleet, HostResult, Outcome};
pub use identity::Identity;
pub use rollout::{RolloutPolicy, UpdaterFleet};
pub use updater::{SelfUpdate, Tarball, UpdateFailure, UpdaterClient, UpdaterProfile};
