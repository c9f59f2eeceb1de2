//! The rollout's state machine: which host starts when, and when the
//! rollout stops. Pure (the caller passes the time), so the sweep that
//! drives it and the tests share one set of rules.
//!
//! Hosts are positions `0..total` in rollout order, grouped in waves: the
//! canary first, then batches. A wave starts only when the one before has
//! finished and the pause between them has passed. A canary failure, or
//! the failure budget reached, starts no new host; hosts in flight finish;
//! the positions never started are "not attempted".

use std::time::{Duration, Instant};

use crate::rollout::policy::RolloutPolicy;

/// Which group a host belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wave {
    /// The hosts that go first.
    Canary,
    /// Batch number `n`, from 1.
    Batch(usize),
}

/// Why a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every host was attempted.
    Completed,
    /// A canary host failed.
    CanaryFailed,
    /// The failure budget was reached.
    FailureBudget,
    /// The caller stopped it (callback, deadline).
    Stopped,
}

impl StopReason {
    /// `completed`, `canary-failed`, `failure-budget` or `stopped`.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::CanaryFailed => "canary-failed",
            StopReason::FailureBudget => "failure-budget",
            StopReason::Stopped => "stopped",
        }
    }
}

/// What the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start the host at this position, part of this wave.
    Start(usize, Wave),
    /// Nothing to start now: wait for a host in flight to finish, or until
    /// this instant (a pause between batches), then ask again.
    Wait(Option<Instant>),
    /// Nothing more will start and nothing is in flight.
    Done(StopReason),
}

/// The state of one rollout.
#[derive(Debug)]
pub struct Planner {
    /// End position (exclusive) of each wave, in order.
    wave_ends: Vec<usize>,
    has_canary: bool,
    budget: Option<usize>,
    pause: Duration,
    next: usize,
    wave: usize,
    in_flight: usize,
    failures: usize,
    resume_at: Option<Instant>,
    halted: Option<StopReason>,
}

impl Planner {
    /// A plan for `total` hosts under `policy`.
    pub fn new(policy: &RolloutPolicy, total: usize) -> Planner {
        let canary = policy.canary.min(total);
        let mut wave_ends = Vec::new();
        if canary > 0 {
            wave_ends.push(canary);
        }
        let batch = policy.batch.of(total - canary).max(1);
        let mut end = canary;
        while end < total {
            end = (end + batch).min(total);
            wave_ends.push(end);
        }
        Planner {
            wave_ends,
            has_canary: canary > 0,
            budget: policy.max_failures.map(|b| b.of(total).max(1)),
            pause: policy.pause_between,
            next: 0,
            wave: 0,
            in_flight: 0,
            failures: 0,
            resume_at: None,
            halted: None,
        }
    }

    /// The failures at which no new host starts, if there is a budget.
    pub fn budget(&self) -> Option<usize> {
        self.budget
    }

    /// Failures so far.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Why no new host starts, once a canary failure, the failure budget
    /// or [`Planner::stop`] halted the rollout.
    pub fn halted(&self) -> Option<StopReason> {
        self.halted
    }

    /// Positions started so far (`0..started()`); the rest, once the
    /// rollout is done, were not attempted.
    pub fn started(&self) -> usize {
        self.next
    }

    /// The wave of the host at `position`.
    pub fn wave_of(&self, position: usize) -> Wave {
        let index = self.wave_ends.partition_point(|&end| end <= position);
        match (self.has_canary, index) {
            (true, 0) => Wave::Canary,
            (true, n) => Wave::Batch(n),
            (false, n) => Wave::Batch(n + 1),
        }
    }

    /// The next step at time `now`.
    pub fn next(&mut self, now: Instant) -> Step {
        if let Some(reason) = self.halted {
            return self.drain(reason);
        }
        let Some(&wave_end) = self.wave_ends.get(self.wave) else {
            return self.drain(StopReason::Completed);
        };
        if self.next < wave_end {
            return self.start();
        }
        if self.in_flight > 0 {
            return Step::Wait(None);
        }
        // The wave is over: move on, after the pause.
        if self.wave + 1 >= self.wave_ends.len() {
            self.wave += 1;
            return Step::Done(StopReason::Completed);
        }
        if !self.pause.is_zero() {
            let resume_at = *self.resume_at.get_or_insert(now + self.pause);
            if now < resume_at {
                return Step::Wait(Some(resume_at));
            }
        }
        self.resume_at = None;
        self.wave += 1;
        self.start()
    }

    /// Records that the host at `position` finished, and whether it failed.
    pub fn finish(&mut self, position: usize, failed: bool) {
        debug_assert!(position < self.next && self.in_flight > 0);
        self.in_flight = self.in_flight.saturating_sub(1);
        if !failed {
            return;
        }
        self.failures += 1;
        if self.halted.is_some() {
            return;
        }
        if self.wave_of(position) == Wave::Canary {
            self.halted = Some(StopReason::CanaryFailed);
        } else if self.budget.is_some_and(|b| self.failures >= b) {
            self.halted = Some(StopReason::FailureBudget);
        }
    }

    /// Starts no new host from now on (a stop requested by the caller);
    /// an earlier halt keeps its reason.
    pub fn stop(&mut self) {
        self.halted.get_or_insert(StopReason::Stopped);
    }

    fn start(&mut self) -> Step {
        let position = self.next;
        self.next += 1;
        self.in_flight += 1;
        Step::Start(position, self.wave_of(position))
    }

    fn drain(&self, reason: StopReason) -> Step {
        if self.in_flight > 0 {
            Step::Wait(None)
        } else {
            Step::Done(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::policy::Amount;

    fn policy(canary: usize, batch: Amount, budget: Option<Amount>) -> RolloutPolicy {
        RolloutPolicy {
            canary,
            batch,
            max_failures: budget,
            ..RolloutPolicy::default()
        }
    }

    /// Runs the plan with `concurrency` slots, hosts finishing in start
    /// order; `fails(p)` says whether position p fails. Returns the start
    /// order with waves and the end.
    fn run(
        planner: &mut Planner,
        concurrency: usize,
        fails: impl Fn(usize) -> bool,
    ) -> (Vec<(usize, Wave)>, StopReason) {
        let now = Instant::now();
        let (mut started, mut flying) = (Vec::new(), std::collections::VecDeque::new());
        for _ in 0..100_000 {
            if flying.len() < concurrency {
                match planner.next(now) {
                    Step::Start(p, w) => {
                        started.push((p, w));
                        flying.push_back(p);
                        continue;
                    }
                    Step::Done(reason) => return (started, reason),
                    Step::Wait(Some(_)) => unreachable!("no pause set"),
                    Step::Wait(None) => {}
                }
            }
            let p = flying.pop_front().expect("wait with nothing in flight");
            planner.finish(p, fails(p));
        }
        panic!("the plan did not end");
    }

    #[test]
    fn waves_are_canary_then_batches_of_the_rest() {
        let mut planner = Planner::new(&policy(1, Amount::Percent(10.0), None), 101);
        let (started, reason) = run(&mut planner, 64, |_| false);
        assert_eq!(reason, StopReason::Completed);
        assert_eq!(started.len(), 101);
        assert_eq!(started[0], (0, Wave::Canary));
        assert_eq!(started[1], (1, Wave::Batch(1)));
        assert_eq!(started[10], (10, Wave::Batch(1)));
        assert_eq!(started[11], (11, Wave::Batch(2)));
        assert_eq!(started[100], (100, Wave::Batch(10)));
        let no_canary = Planner::new(&policy(0, Amount::Count(4), None), 9);
        assert_eq!(no_canary.wave_of(0), Wave::Batch(1));
        assert_eq!(no_canary.wave_of(8), Wave::Batch(3));
    }

    #[test]
    fn a_batch_starts_only_when_the_one_before_has_finished() {
        let mut planner = Planner::new(&policy(1, Amount::Count(3), None), 7);
        let now = Instant::now();
        assert_eq!(planner.next(now), Step::Start(0, Wave::Canary));
        assert_eq!(planner.next(now), Step::Wait(None));
        planner.finish(0, false);
        for p in 1..=3 {
            assert_eq!(planner.next(now), Step::Start(p, Wave::Batch(1)));
        }
        assert_eq!(planner.next(now), Step::Wait(None));
        planner.finish(2, false);
        planner.finish(1, true);
        assert_eq!(
            planner.next(now),
            Step::Wait(None),
            "host 3 still in flight"
        );
        planner.finish(3, false);
        assert_eq!(planner.next(now), Step::Start(4, Wave::Batch(2)));
    }

    #[test]
    fn a_failed_canary_stops_everything_else() {
        let mut planner = Planner::new(&policy(3, Amount::Count(10), None), 100);
        let (started, reason) = run(&mut planner, 16, |p| p == 1);
        assert_eq!(reason, StopReason::CanaryFailed);
        assert_eq!(
            started.len(),
            3,
            "the canaries in flight finish, none else starts"
        );
        assert_eq!(planner.started(), 3);
    }

    #[test]
    fn the_budget_halts_at_its_count_and_in_flight_hosts_finish() {
        // Every host from position 10 on fails; budget 5, one batch of the
        // rest at concurrency 8: the 5th failure (position 14) halts, the
        // hosts already started (up to 14 + 7 in flight) finish.
        let mut planner = Planner::new(
            &policy(1, Amount::Percent(100.0), Some(Amount::Count(5))),
            120,
        );
        let (started, reason) = run(&mut planner, 8, |p| p >= 10);
        assert_eq!(reason, StopReason::FailureBudget);
        assert_eq!(
            started.len(),
            22,
            "positions 0..=21: 14 halts with 15..=21 in flight"
        );
        assert_eq!(
            planner.failures(),
            12,
            "in-flight hosts that fail still count"
        );
        assert_eq!(planner.budget(), Some(5));
    }

    #[test]
    fn a_percentage_budget_counts_every_host_of_the_rollout() {
        let planner = Planner::new(
            &policy(1, Amount::Count(10), Some(Amount::Percent(5.0))),
            200,
        );
        assert_eq!(planner.budget(), Some(10));
        let mut serial = Planner::new(
            &policy(1, Amount::Count(10), Some(Amount::Percent(5.0))),
            200,
        );
        let (started, reason) = run(&mut serial, 1, |p| p % 2 == 1);
        assert_eq!(reason, StopReason::FailureBudget);
        assert_eq!(started.len(), 20, "the 10th failure is position 19");
    }

    #[test]
    fn the_pause_between_batches_is_waited_for() {
        let pol = RolloutPolicy {
            pause_between: Duration::from_secs(5),
            ..policy(1, Amount::Count(2), None)
        };
        let mut planner = Planner::new(&pol, 3);
        let t0 = Instant::now();
        assert_eq!(planner.next(t0), Step::Start(0, Wave::Canary));
        planner.finish(0, false);
        let resume = t0 + Duration::from_secs(5);
        assert_eq!(planner.next(t0), Step::Wait(Some(resume)));
        assert_eq!(
            planner.next(t0 + Duration::from_secs(4)),
            Step::Wait(Some(resume))
        );
        assert_eq!(planner.next(resume), Step::Start(1, Wave::Batch(1)));
        assert_eq!(planner.next(resume), Step::Start(2, Wave::Batch(1)));
        planner.finish(1, false);
        planner.finish(2, false);
        assert_eq!(
            planner.next(resume),
            Step::Done(StopReason::Completed),
            "no pause after the last"
        );
    }

    #[test]
    fn a_stop_starts_nothing_new_and_keeps_an_earlier_reason() {
        let mut planner = Planner::new(&policy(0, Amount::Count(10), None), 10);
        let now = Instant::now();
        assert!(matches!(planner.next(now), Step::Start(0, _)));
        planner.stop();
        assert_eq!(planner.next(now), Step::Wait(None));
        planner.finish(0, false);
        assert_eq!(planner.next(now), Step::Done(StopReason::Stopped));
        let mut canary = Planner::new(&policy(1, Amount::Count(10), None), 10);
        assert!(matches!(canary.next(now), Step::Start(0, Wave::Canary)));
        canary.finish(0, true);
        canary.stop();
        assert_eq!(canary.next(now), Step::Done(StopReason::CanaryFailed));
        let mut empty = Planner::new(&RolloutPolicy::default(), 0);
        assert_eq!(empty.next(now), Step::Done(StopReason::Completed));
    }
}
