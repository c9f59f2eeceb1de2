//! decnet-agent-client: drive DECNET honeypot worker agents over mutual TLS.
//!
//! Layers, each using only those before it: [`error`] → [`pki`] →
//! [`identity`] → `tls` → [`client`] → [`fleet`]; [`topology`] is pure.

pub mod client;
pub mod error;
pub mod ffi;
pub mod fleet;
mod hex;
pub mod identity;
pub mod pki;
mod secure_fs;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tls;
pub mod topology;

pub use client::{AgentClient, HostRecord, HostnameVerification, Profile, Timeouts};
pub use error::{Error, ErrorKind, Result, TimeoutPhase};
pub use fleet::{Fleet, HostResult, Outcome};
pub use identity::Identity;
