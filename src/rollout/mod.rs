//! Rolling a release out over many updaters: the policy, the plan that
//! decides which host starts when, and each host's outcome. Pure: the
//! updater fleet drives it.

pub mod outcome;
pub mod planner;
pub mod policy;

pub use outcome::{HostReport, HostStatus, Operation, Summary};
pub use planner::{Planner, Step, StopReason, Wave};
pub use policy::{Amount, RolloutPolicy};
