//! Rolling a release out over many updaters: the policy, the plan that
//! decides which host starts when, each host's outcome (all pure), and the
//! updater fleet that drives them over the sweep engine.

pub mod fleet;
pub mod outcome;
pub mod planner;
pub mod policy;

pub use fleet::{Rollout, RolloutHostResult, UpdaterCall, UpdaterFleet};
pub use outcome::{HostReport, HostStatus, Operation, Summary};
pub use planner::{Planner, Step, StopReason, Wave};
pub use policy::{Amount, RolloutPolicy};
