//! decnet-agent-client: drive DECNET honeypot worker agents over mutual TLS.
//!
//! Layers, each using only those before it: [`error`] → [`pki`] →
//! [`identity`] → `tls` → `rpc` (one exchange, shared by every client) →
//! [`client`] → [`fleet`]; [`topology`], [`rollout`] (the policy and plan
//! of an updater push) and [`shard`] (a deploy split per worker) are pure.

pub mod client;
pub mod enroll;
pub mod error;
pub mod events;
pub mod ffi;
pub mod fleet;
mod hex;
pub mod identity;
mod json;
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
pub use updater::{SelfUpdate, Tarball, UpdateFailure, UpdaterClient, UpdaterProfile};
