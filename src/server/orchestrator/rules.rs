//! The orchestrator's decisions, as plain functions of counts and states:
//! no clock, no database. `docs/orchestrator.md` numbers these rules.
//!
//! Health model (CodeDeploy's, for in-place deployments): an instance is
//! healthy while it is not being deployed to and has not failed; so the
//! not-started and the succeeded instances are healthy, the in-flight and
//! the failed ones are not. An instance is started only when the healthy
//! count stays at or above the minimum afterwards.

use crate::appspec::LifecycleEvent;

/// `HEALTH_CONSTRAINTS`: too many instances failed to reach the minimum.
pub const HEALTH_CONSTRAINTS: &str = "HEALTH_CONSTRAINTS";
/// `HEALTH_CONSTRAINTS_INVALID`: the minimum cannot be met even at the start.
pub const HEALTH_CONSTRAINTS_INVALID: &str = "HEALTH_CONSTRAINTS_INVALID";
/// `NO_INSTANCES`: the group's tags match no registered instance.
pub const NO_INSTANCES: &str = "NO_INSTANCES";

/// The predefined configuration that deploys to one instance at a time and
/// tolerates a failure of the last one.
pub const ONE_AT_A_TIME: &str = "CodeDeployDefault.OneAtATime";

/// How many instances one deployment may take offline, fixed at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Instances in the deployment.
    pub total: usize,
    /// Instances that must stay healthy during, and succeed by the end of,
    /// the deployment.
    pub min_healthy: usize,
    /// Instances that may be in flight at once.
    pub max_in_flight: usize,
}

/// Why a deployment cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// No instance matched the group.
    NoInstances,
    /// The minimum healthy hosts leave no instance to deploy to.
    HealthConstraintsInvalid(String),
}

impl PolicyError {
    /// The `ErrorInformation` code.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::NoInstances => NO_INSTANCES,
            PolicyError::HealthConstraintsInvalid(_) => HEALTH_CONSTRAINTS_INVALID,
        }
    }

    /// The `ErrorInformation` message.
    pub fn message(&self) -> String {
        match self {
            PolicyError::NoInstances => "The deployment failed because no instances were found for the deployment \
                group: no registered on-premises instance matches its tags."
                .to_string(),
            PolicyError::HealthConstraintsInvalid(m) => m.clone(),
        }
    }
}

impl Policy {
    /// The policy of deployment configuration `config` (minimum healthy
    /// hosts `kind` and `value`) over `total` instances.
    ///
    /// - `HOST_COUNT`: `value` instances must stay healthy.
    /// - `FLEET_PERCENT`: `value` percent of the instances, rounded up.
    /// - `MOST_CONCURRENCY` (what GetDeploymentConfig reports for
    ///   CodeDeployDefault.OneAtATime, and that configuration by name):
    ///   `value` instances at a time, all others must stay healthy; so a
    ///   failure of the last instance still leaves the deployment Succeeded.
    pub fn new(config: &str, kind: &str, value: i64, total: usize) -> Result<Policy, PolicyError> {
        if total == 0 {
            return Err(PolicyError::NoInstances);
        }
        let value_usize = usize::try_from(value.max(0)).unwrap_or(usize::MAX);
        let (min_healthy, max_in_flight) = if config == ONE_AT_A_TIME || kind == "MOST_CONCURRENCY" {
            let at_once = if config == ONE_AT_A_TIME { 1 } else { value_usize.max(1) };
            (total.saturating_sub(at_once), at_once.min(total))
        } else {
            let min = match kind {
                "FLEET_PERCENT" => (total.saturating_mul(value_usize.min(100))).div_ceil(100),
                _ => value_usize,
            };
            (min, total.saturating_sub(min))
        };
        if max_in_flight == 0 {
            return Err(PolicyError::HealthConstraintsInvalid(format!(
                "The deployment cannot start: {config} ({kind} {value}) requires {min_healthy} healthy instances \
                 but the deployment group has {total}, so no instance can be taken offline to deploy to. Lower the \
                 minimum healthy hosts or add instances."
            )));
        }
        Ok(Policy { total, min_healthy, max_in_flight })
    }

    /// The succeeded instances a successful deployment needs: the minimum,
    /// and at least one (even when the minimum is 0).
    pub fn needed_successes(&self) -> usize {
        self.min_healthy.max(1)
    }
}

/// How many instances of a deployment are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Not started.
    pub pending: usize,
    /// Started, not finished.
    pub in_flight: usize,
    /// Finished with every event succeeded (or ignored).
    pub succeeded: usize,
    /// Finished with a failed event.
    pub failed: usize,
    /// Never started (the deployment failed or stopped first).
    pub skipped: usize,
}

/// How a deployment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enough instances succeeded.
    Succeeded,
    /// Not enough did: `ErrorInformation` code and message.
    Failed {
        /// `ErrorInformation.code`.
        code: &'static str,
        /// `ErrorInformation.message`.
        message: String,
    },
}

/// What to do with a deployment now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Start this many not-started instances.
    pub start: usize,
    /// Skip every not-started instance: the deployment cannot succeed.
    pub skip_pending: bool,
    /// End the deployment (nothing is in flight any more).
    pub finish: Option<Outcome>,
}

/// Decides the next step of a running deployment.
pub fn decide(policy: &Policy, c: &Counts) -> Step {
    let needed = policy.needed_successes();
    let healthy = c.pending + c.succeeded;
    let reachable = c.succeeded + c.in_flight + c.pending;
    let start =
        c.pending.min(policy.max_in_flight.saturating_sub(c.in_flight)).min(healthy.saturating_sub(policy.min_healthy));
    let stuck = c.pending > 0 && start == 0 && c.in_flight == 0;
    if reachable < needed || stuck {
        // Rule 5: the minimum can no longer be met; finish once the
        // instances already in flight are done.
        let finish = (c.in_flight == 0).then(|| health_failure(policy, c));
        return Step { start: 0, skip_pending: c.pending > 0, finish };
    }
    if c.pending == 0 && c.in_flight == 0 {
        let finish = if c.succeeded >= needed { Outcome::Succeeded } else { health_failure(policy, c) };
        return Step { finish: Some(finish), ..Step::default() };
    }
    Step { start, ..Step::default() }
}

fn health_failure(policy: &Policy, c: &Counts) -> Outcome {
    Outcome::Failed {
        code: HEALTH_CONSTRAINTS,
        message: format!(
            "The overall deployment failed because too many individual instances failed deployment: {} of {} \
             failed, {} succeeded, and {} must succeed (minimum healthy hosts {}).",
            c.failed,
            policy.total,
            c.succeeded,
            policy.needed_successes(),
            policy.min_healthy
        ),
    }
}

/// The lifecycle events of every instance, in order: the traffic events
/// only when the group's deployment style has traffic control.
pub fn events(with_traffic_control: bool) -> Vec<LifecycleEvent> {
    LifecycleEvent::ALL
        .into_iter()
        .filter(|e| {
            with_traffic_control
                || !matches!(
                    e,
                    LifecycleEvent::BeforeBlockTraffic
                        | LifecycleEvent::AfterBlockTraffic
                        | LifecycleEvent::BeforeAllowTraffic
                        | LifecycleEvent::AfterAllowTraffic
                )
        })
        .collect()
}

/// True when a failure of `event` lets the instance continue, under
/// `ignoreApplicationStopFailures`.
pub fn failure_ignored(event: &str, ignore_application_stop_failures: bool) -> bool {
    ignore_application_stop_failures && matches!(event, "ApplicationStop" | "BeforeBlockTraffic" | "AfterBlockTraffic")
}

/// The state of one host command (one lifecycle event of one instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    /// Not handed out yet.
    Pending,
    /// Handed to the agent by PollHostCommand, not acknowledged.
    Dispatched,
    /// Acknowledged by the agent: running.
    InProgress,
    /// Completed successfully.
    Succeeded,
    /// Completed with a failure, or failed by a timeout or a stop.
    Failed,
    /// Failed, but the deployment ignores failures of this event.
    Ignored,
    /// Never run: an earlier event failed, or the deployment ended.
    Skipped,
}

impl CommandState {
    /// Every state, for parsing.
    pub const ALL: [CommandState; 7] = [
        CommandState::Pending,
        CommandState::Dispatched,
        CommandState::InProgress,
        CommandState::Succeeded,
        CommandState::Failed,
        CommandState::Ignored,
        CommandState::Skipped,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Pending => "Pending",
            CommandState::Dispatched => "Dispatched",
            CommandState::InProgress => "InProgress",
            CommandState::Succeeded => "Succeeded",
            CommandState::Failed => "Failed",
            CommandState::Ignored => "Ignored",
            CommandState::Skipped => "Skipped",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<CommandState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The `LifecycleEventStatus` shown for it.
    pub fn event_status(self) -> &'static str {
        match self {
            CommandState::Pending | CommandState::Dispatched => "Pending",
            CommandState::InProgress => "InProgress",
            CommandState::Succeeded => "Succeeded",
            CommandState::Failed | CommandState::Ignored => "Failed",
            CommandState::Skipped => "Skipped",
        }
    }

    /// The `CommandStatus` the command API reports for it: a command that
    /// is over without success is `Failed`, so an agent skips it.
    pub fn command_status(self) -> &'static str {
        match self {
            CommandState::Pending | CommandState::Dispatched => "Pending",
            CommandState::InProgress => "InProgress",
            CommandState::Succeeded => "Succeeded",
            CommandState::Failed | CommandState::Ignored | CommandState::Skipped => "Failed",
        }
    }

    /// True once the command cannot change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, CommandState::Pending | CommandState::Dispatched | CommandState::InProgress)
    }

    /// True when later events of the instance may run after this one.
    pub fn lets_next_run(self) -> bool {
        matches!(self, CommandState::Succeeded | CommandState::Ignored)
    }
}

/// The `LifecycleErrorCode` name of the agent's diagnostic number.
pub fn error_code_name(code: i64) -> &'static str {
    match code {
        0 => "Success",
        1 => "ScriptMissing",
        2 => "ScriptNotExecutable",
        3 => "ScriptTimedOut",
        4 => "ScriptFailed",
        _ => "UnknownError",
    }
}

/// Which deadline, if any, the current command of an in-flight instance
/// has passed. `ready_since`: when the command became the instance's next
/// one (the instance started, or the previous event ended); `dispatched_at`:
/// when an agent picked it up. Times in milliseconds.
pub fn deadline_passed(
    event: &str,
    state: CommandState,
    ready_since: i64,
    dispatched_at: Option<i64>,
    now: i64,
    pickup_timeout_ms: i64,
    event_timeout_ms: i64,
) -> Option<String> {
    match state {
        CommandState::Pending if now - ready_since >= pickup_timeout_ms => Some(format!(
            "the agent did not pick up {event} within {} s (is edgedeploy-agent running on the instance?)",
            pickup_timeout_ms / 1000
        )),
        CommandState::Dispatched | CommandState::InProgress
            if now - dispatched_at.unwrap_or(ready_since) >= event_timeout_ms =>
        {
            Some(format!("{event} did not complete within {} s", event_timeout_ms / 1000))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pending: usize, in_flight: usize, succeeded: usize, failed: usize) -> Counts {
        Counts { pending, in_flight, succeeded, failed, skipped: 0 }
    }

    #[test]
    fn predefined_configurations_on_six_instances() {
        let all = Policy::new("CodeDeployDefault.AllAtOnce", "FLEET_PERCENT", 0, 6).unwrap();
        assert_eq!((all.min_healthy, all.max_in_flight), (0, 6));
        let half = Policy::new("CodeDeployDefault.HalfAtATime", "FLEET_PERCENT", 50, 6).unwrap();
        assert_eq!((half.min_healthy, half.max_in_flight), (3, 3));
        let one = Policy::new(ONE_AT_A_TIME, "HOST_COUNT", 1, 6).unwrap();
        assert_eq!((one.min_healthy, one.max_in_flight), (5, 1));
        let most = Policy::new("x", "MOST_CONCURRENCY", 1, 6).unwrap();
        assert_eq!(most, one);
        let hosts = Policy::new("custom", "HOST_COUNT", 4, 6).unwrap();
        assert_eq!((hosts.min_healthy, hosts.max_in_flight), (4, 2));
    }

    #[test]
    fn documented_nine_instance_examples() {
        // HOST_COUNT 6 of 9: up to 3 at a time; FLEET_PERCENT 40: up to 5.
        let hosts = Policy::new("c", "HOST_COUNT", 6, 9).unwrap();
        assert_eq!((hosts.min_healthy, hosts.max_in_flight), (6, 3));
        let percent = Policy::new("c", "FLEET_PERCENT", 40, 9).unwrap();
        assert_eq!((percent.min_healthy, percent.max_in_flight), (4, 5));
        // HalfAtATime on 9: 4 at a time (rounded down), 5 must succeed.
        let half = Policy::new("c", "FLEET_PERCENT", 50, 9).unwrap();
        assert_eq!((half.min_healthy, half.max_in_flight), (5, 4));
    }

    #[test]
    fn impossible_minimums_are_refused_at_the_start() {
        assert_eq!(Policy::new("c", "HOST_COUNT", 1, 0), Err(PolicyError::NoInstances));
        let err = Policy::new("c", "HOST_COUNT", 6, 6).unwrap_err();
        assert_eq!(err.code(), HEALTH_CONSTRAINTS_INVALID);
        assert!(Policy::new("c", "HOST_COUNT", 7, 6).is_err());
        assert!(Policy::new("c", "FLEET_PERCENT", 99, 6).is_err());
        assert!(Policy::new("c", "FLEET_PERCENT", 50, 1).is_err(), "HalfAtATime on one instance");
        // OneAtATime on one instance: nothing must stay healthy.
        assert_eq!(Policy::new(ONE_AT_A_TIME, "HOST_COUNT", 1, 1).unwrap().max_in_flight, 1);
        assert_eq!(Policy::new("c", "FLEET_PERCENT", 0, 1).unwrap().max_in_flight, 1);
    }

    #[test]
    fn starts_up_to_the_limit_and_refills_as_instances_succeed() {
        let half = Policy::new("c", "FLEET_PERCENT", 50, 6).unwrap();
        assert_eq!(decide(&half, &counts(6, 0, 0, 0)).start, 3);
        assert_eq!(decide(&half, &counts(3, 3, 0, 0)).start, 0);
        assert_eq!(decide(&half, &counts(3, 2, 1, 0)).start, 1);
        assert_eq!(decide(&half, &counts(0, 0, 6, 0)).finish, Some(Outcome::Succeeded));
    }

    #[test]
    fn a_failure_shrinks_what_may_be_in_flight() {
        let half = Policy::new("c", "FLEET_PERCENT", 50, 6).unwrap();
        // One failed, two in flight: healthy 3 = minimum, start nothing.
        assert_eq!(decide(&half, &counts(3, 2, 0, 1)), Step::default());
        // The two succeed: healthy 5, two may go.
        assert_eq!(decide(&half, &counts(3, 0, 2, 1)).start, 2);
        // Ends with 5 of 6 succeeded: at least 3, Succeeded.
        assert_eq!(decide(&half, &counts(0, 0, 5, 1)).finish, Some(Outcome::Succeeded));
    }

    #[test]
    fn failure_when_the_minimum_becomes_impossible_waits_for_in_flight_instances() {
        let half = Policy::new("c", "FLEET_PERCENT", 50, 6).unwrap();
        // 3 failed: at most 3 can succeed, fine; 4 failed: impossible.
        let step = decide(&half, &counts(1, 1, 0, 4));
        assert_eq!((step.start, step.skip_pending, step.finish), (0, true, None));
        let step = decide(&half, &counts(0, 0, 1, 4));
        assert!(matches!(step.finish, Some(Outcome::Failed { code: HEALTH_CONSTRAINTS, .. })));
    }

    #[test]
    fn one_at_a_time_fails_on_any_but_the_last_instance() {
        let one = Policy::new(ONE_AT_A_TIME, "MOST_CONCURRENCY", 1, 4).unwrap();
        assert_eq!(decide(&one, &counts(4, 0, 0, 0)).start, 1);
        let step = decide(&one, &counts(3, 0, 0, 1));
        assert!(step.skip_pending);
        assert!(matches!(step.finish, Some(Outcome::Failed { code: HEALTH_CONSTRAINTS, .. })));
        // The last one fails: still Succeeded.
        assert_eq!(decide(&one, &counts(0, 0, 3, 1)).finish, Some(Outcome::Succeeded));
        // A single instance that fails: nothing succeeded, Failed.
        let single = Policy::new(ONE_AT_A_TIME, "MOST_CONCURRENCY", 1, 1).unwrap();
        assert!(matches!(decide(&single, &counts(0, 0, 0, 1)).finish, Some(Outcome::Failed { .. })));
    }

    #[test]
    fn all_at_once_needs_one_success() {
        let all = Policy::new("c", "FLEET_PERCENT", 0, 3).unwrap();
        assert_eq!(decide(&all, &counts(0, 0, 1, 2)).finish, Some(Outcome::Succeeded));
        assert!(matches!(decide(&all, &counts(0, 0, 0, 3)).finish, Some(Outcome::Failed { .. })));
        assert_eq!(decide(&all, &counts(0, 2, 0, 1)), Step::default());
    }

    #[test]
    fn host_count_stops_starting_after_a_failure() {
        let hosts = Policy::new("c", "HOST_COUNT", 4, 6).unwrap();
        assert_eq!(decide(&hosts, &counts(6, 0, 0, 0)).start, 2);
        // One failed, one succeeded: healthy 5, one may go.
        assert_eq!(decide(&hosts, &counts(4, 0, 1, 1)).start, 1);
        // Two failed: healthy 4 = minimum and nothing in flight: stuck.
        let step = decide(&hosts, &counts(4, 0, 0, 2));
        assert!(step.skip_pending && step.finish.is_some());
    }

    #[test]
    fn traffic_events_only_with_traffic_control() {
        let plain: Vec<&str> = events(false).iter().map(|e| e.name()).collect();
        assert_eq!(
            plain,
            [
                "ApplicationStop",
                "DownloadBundle",
                "BeforeInstall",
                "Install",
                "AfterInstall",
                "ApplicationStart",
                "ValidateService"
            ]
        );
        let traffic = events(true);
        assert_eq!(traffic.len(), 11);
        assert_eq!(traffic[0].name(), "BeforeBlockTraffic");
        assert_eq!(traffic[10].name(), "AfterAllowTraffic");
    }

    #[test]
    fn only_stop_and_block_traffic_failures_are_ignorable() {
        assert!(failure_ignored("ApplicationStop", true));
        assert!(failure_ignored("AfterBlockTraffic", true));
        assert!(!failure_ignored("ApplicationStop", false));
        assert!(!failure_ignored("BeforeInstall", true));
    }

    #[test]
    fn states_map_to_wire_statuses() {
        for state in CommandState::ALL {
            assert_eq!(CommandState::parse(state.as_str()), Some(state));
        }
        assert_eq!(CommandState::Dispatched.event_status(), "Pending");
        assert_eq!(CommandState::Ignored.event_status(), "Failed");
        assert_eq!(CommandState::Skipped.command_status(), "Failed");
        assert!(CommandState::Ignored.lets_next_run());
        assert_eq!(error_code_name(4), "ScriptFailed");
        assert_eq!(error_code_name(99), "UnknownError");
    }

    #[test]
    fn deadlines() {
        let (pickup, event) = (2_000, 10_000);
        assert_eq!(deadline_passed("Install", CommandState::Pending, 0, None, 1_999, pickup, event), None);
        let late = deadline_passed("Install", CommandState::Pending, 0, None, 2_000, pickup, event).unwrap();
        assert!(late.starts_with("the agent did not pick up Install within 2 s"), "{late}");
        assert_eq!(deadline_passed("Install", CommandState::InProgress, 0, Some(5_000), 14_999, pickup, event), None);
        let slow = deadline_passed("Install", CommandState::InProgress, 0, Some(5_000), 15_000, pickup, event);
        assert_eq!(slow.as_deref(), Some("Install did not complete within 10 s"));
        assert_eq!(deadline_passed("Install", CommandState::Succeeded, 0, None, 99_999, pickup, event), None);
    }
}
