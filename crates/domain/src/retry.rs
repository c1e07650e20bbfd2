//! Retry rules of a campaign (what to do after each attempt) and contact-pressure limits
//! across campaigns (how often one person may be called).
//!
//! The scheduler applies both: [`decide`] gives the earliest time the campaign wants to try
//! again, [`earliest_allowed`] pushes it back until the person's pressure limits allow it, and
//! the calendar ([`crate::calendar::next_open_window`]) moves it into calling hours.

use crate::outcome::{AttemptOutcome, FinalStatus};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Bounds [`RetryPolicy::validate`] enforces.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// Shortest delay accepted before a retry, in minutes.
pub const MIN_DELAY_MINUTES: u32 = 1;
/// Longest delay accepted before a retry, in minutes (30 days).
pub const MAX_DELAY_MINUTES: u32 = 30 * 24 * 60;

/// What a campaign does after each attempt.
///
/// Defaults (applied to every missing field, so a limit always exists):
/// * no answer: retry after 4 h (240 min) — another time of day;
/// * busy: retry after 30 min — the person is there;
/// * voicemail: retry after 24 h (1 440 min) — the next day;
/// * callback requested without a time: retry after 4 h (240 min);
/// * at most 5 attempts per contact; a callback the person asked for is still honoured for
///   `callback_extra_attempts` (default 1) attempts beyond that.
///
/// Wrong number / not in service close as [`FinalStatus::WrongNumber`], a refused interview
/// as [`FinalStatus::InterviewRefused`], a held interview as [`FinalStatus::InterviewHeld`];
/// a contact that runs out of attempts closes as [`FinalStatus::NotReached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    pub no_answer_delay_minutes: u32,
    pub busy_delay_minutes: u32,
    pub voicemail_delay_minutes: u32,
    pub callback_default_delay_minutes: u32,
    /// Attempts per contact, all outcomes counted (1..=20).
    pub max_attempts: u32,
    /// Extra attempts allowed only to honour a requested callback (0..=5).
    pub callback_extra_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            no_answer_delay_minutes: 4 * 60,
            busy_delay_minutes: 30,
            voicemail_delay_minutes: 24 * 60,
            callback_default_delay_minutes: 4 * 60,
            max_attempts: 5,
            callback_extra_attempts: 1,
        }
    }
}

/// An invalid retry or pressure setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error("{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
}

fn in_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), RetryPolicyError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(RetryPolicyError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl RetryPolicy {
    /// Rejects 0 or absurd values: attempts 1..=20, delays 1 min..=30 days, callback extra
    /// attempts 0..=5.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        in_range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS_LIMIT)?;
        for (field, value) in [
            ("no_answer_delay_minutes", self.no_answer_delay_minutes),
            ("busy_delay_minutes", self.busy_delay_minutes),
            ("voicemail_delay_minutes", self.voicemail_delay_minutes),
            (
                "callback_default_delay_minutes",
                self.callback_default_delay_minutes,
            ),
        ] {
            in_range(field, value, MIN_DELAY_MINUTES, MAX_DELAY_MINUTES)?;
        }
        in_range(
            "callback_extra_attempts",
            self.callback_extra_attempts,
            0,
            5,
        )
    }

    /// The delay before the next attempt after a not-reached outcome.
    pub fn delay_after(&self, outcome: AttemptOutcome) -> Option<TimeDelta> {
        let minutes = match outcome {
            AttemptOutcome::NoAnswer => self.no_answer_delay_minutes,
            AttemptOutcome::Busy => self.busy_delay_minutes,
            AttemptOutcome::Voicemail => self.voicemail_delay_minutes,
            AttemptOutcome::CallbackRequested => self.callback_default_delay_minutes,
            _ => return None,
        };
        TimeDelta::try_minutes(i64::from(minutes))
    }
}

/// What to do with a contact after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Try again, not before this instant (the scheduler moves it into an open window and
    /// applies the pressure limits).
    RetryAfter(DateTime<Utc>),
    /// The contact is finished.
    Close(FinalStatus),
}

/// The decision after an attempt made at `at` with `outcome`.
///
/// `attempts_made` counts the attempts on this contact **including** the one being decided.
/// `callback_at` is the time the person asked for (with
/// [`AttemptOutcome::CallbackRequested`]); a time before `at` is treated as `at`, and a missing
/// one as `at` + `callback_default_delay_minutes`. Call [`RetryPolicy::validate`] when the
/// policy is configured; out-of-range values are clamped here so that a limit always applies.
pub fn decide(
    policy: &RetryPolicy,
    outcome: AttemptOutcome,
    attempts_made: u32,
    at: DateTime<Utc>,
    callback_at: Option<DateTime<Utc>>,
) -> Decision {
    let max_attempts = policy.max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT);
    let retry = |minutes: u32| {
        let minutes = minutes.clamp(MIN_DELAY_MINUTES, MAX_DELAY_MINUTES);
        TimeDelta::try_minutes(i64::from(minutes))
            .and_then(|d| at.checked_add_signed(d))
            .map_or(
                Decision::Close(FinalStatus::NotReached),
                Decision::RetryAfter,
            )
    };
    match outcome {
        AttemptOutcome::WrongNumber | AttemptOutcome::NotInService => {
            Decision::Close(FinalStatus::WrongNumber)
        }
        AttemptOutcome::RefusedInterview => Decision::Close(FinalStatus::InterviewRefused),
        AttemptOutcome::InterviewHeld => Decision::Close(FinalStatus::InterviewHeld),
        AttemptOutcome::CallbackRequested => {
            let limit = max_attempts.saturating_add(policy.callback_extra_attempts.min(5));
            if attempts_made >= limit {
                return Decision::Close(FinalStatus::NotReached);
            }
            match callback_at {
                Some(when) => Decision::RetryAfter(when.max(at)),
                None => retry(policy.callback_default_delay_minutes),
            }
        }
        AttemptOutcome::NoAnswer | AttemptOutcome::Busy | AttemptOutcome::Voicemail => {
            if attempts_made >= max_attempts {
                return Decision::Close(FinalStatus::NotReached);
            }
            let minutes = match outcome {
                AttemptOutcome::NoAnswer => policy.no_answer_delay_minutes,
                AttemptOutcome::Busy => policy.busy_delay_minutes,
                _ => policy.voicemail_delay_minutes,
            };
            retry(minutes)
        }
    }
}

/// Contact-pressure limits for one person, all campaigns together (DOMAIN.md, from Code de la
/// consommation D. 223-9): at most `max_attempts` calls or attempts per `per_days` days, and no
/// new contact for `quiet_days_after_refusal` days after the person refused in a conversation.
///
/// **Days are rolling periods of 24 hours**: "30 calendar days" is the half-open period of
/// 30 × 24 h = 720 h ending at the instant considered. An attempt at instant `a` counts
/// against an instant `t` when `t − 720 h < a ≤ t`, i.e. it stops counting at exactly
/// `a + 720 h`. This never frees a slot earlier than counting whole local calendar dates
/// would (an attempt on local date D then counts through D + 29 and frees at local midnight
/// starting D + 30, at or before `a + 720 h` whatever the time zone and DST), so it is the
/// conservative reading and needs no time zone. Likewise a refusal at `r` blocks every instant
/// before `r + 60 × 24 h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PressureRule {
    pub max_attempts: u32,
    pub per_days: u32,
    pub quiet_days_after_refusal: u32,
}

impl Default for PressureRule {
    fn default() -> Self {
        PressureRule {
            max_attempts: 4,
            per_days: 30,
            quiet_days_after_refusal: 60,
        }
    }
}

impl PressureRule {
    /// Rejects 0 or absurd values: attempts 1..=100, period 1..=366 days, quiet period
    /// 0..=3 660 days.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        in_range("max_attempts", self.max_attempts, 1, 100)?;
        in_range("per_days", self.per_days, 1, 366)?;
        in_range(
            "quiet_days_after_refusal",
            self.quiet_days_after_refusal,
            0,
            3660,
        )
    }

    /// Whether this rule is at least as protective as `reference` (by default the legal one):
    /// no more attempts, over a period at least as long, and a quiet period at least as long.
    pub fn is_within(&self, reference: &PressureRule) -> bool {
        self.max_attempts <= reference.max_attempts
            && self.per_days >= reference.per_days
            && self.quiet_days_after_refusal >= reference.quiet_days_after_refusal
    }

    /// Whether the rule is looser than the legal default (then it needs an audited override).
    pub fn widens_legal_default(&self) -> bool {
        !self.is_within(&PressureRule::default())
    }

    fn period(&self) -> TimeDelta {
        TimeDelta::try_days(i64::from(self.per_days.max(1))).unwrap_or(TimeDelta::MAX)
    }

    fn quiet(&self) -> TimeDelta {
        TimeDelta::try_days(i64::from(self.quiet_days_after_refusal)).unwrap_or(TimeDelta::MAX)
    }
}

/// One call or attempt already made to a person, in any campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonAttempt {
    pub at: DateTime<Utc>,
    /// The person refused during a conversation (starts the quiet period).
    pub refused_in_conversation: bool,
}

/// Whether one more attempt at `t` respects `rule` given `history`.
///
/// Attempts in the history later than `t` are taken into account too: no period of
/// `per_days` days may then hold more than `max_attempts` attempts, `t` included.
pub fn is_allowed(rule: &PressureRule, history: &[PersonAttempt], t: DateTime<Utc>) -> bool {
    let quiet = rule.quiet();
    let refused_until = history
        .iter()
        .filter(|a| a.refused_in_conversation)
        .any(|a| a.at.checked_add_signed(quiet).is_none_or(|end| t < end));
    if refused_until {
        return false;
    }
    let period = rule.period();
    let max = usize::try_from(rule.max_attempts.max(1)).unwrap_or(usize::MAX);
    // Periods (x − period, x] containing t: x in [t, t + period). The count only rises at
    // x = t and at each later attempt, so checking those ends is enough.
    let ends = std::iter::once(t).chain(
        history
            .iter()
            .map(|a| a.at)
            .filter(|&a| a > t && t.checked_add_signed(period).is_none_or(|limit| a < limit)),
    );
    for x in ends {
        let start = x.checked_sub_signed(period);
        let count = history
            .iter()
            .filter(|a| a.at <= x && start.is_none_or(|s| a.at > s))
            .count();
        if count + 1 > max {
            return false;
        }
    }
    true
}

/// The earliest instant at or after `candidate` when `rule` allows one more attempt given the
/// person's `history`: `candidate` itself if allowed, else the first instant when the rolling
/// count drops below `max_attempts` (an attempt at `a` stops counting at `a + per_days × 24 h`)
/// and `quiet_days_after_refusal × 24 h` have passed since the last refusal.
pub fn earliest_allowed(
    rule: &PressureRule,
    history: &[PersonAttempt],
    candidate: DateTime<Utc>,
) -> DateTime<Utc> {
    let quiet = rule.quiet();
    let period = rule.period();
    let mut start = candidate;
    for a in history.iter().filter(|a| a.refused_in_conversation) {
        match a.at.checked_add_signed(quiet) {
            Some(end) => start = start.max(end),
            None => return DateTime::<Utc>::MAX_UTC,
        }
    }
    // Allowed-ness can only change from "no" to "yes" when an attempt stops counting.
    let mut points: Vec<DateTime<Utc>> = history
        .iter()
        .filter_map(|a| a.at.checked_add_signed(period))
        .filter(|&p| p > start)
        .collect();
    points.sort_unstable();
    points.dedup();
    std::iter::once(start)
        .chain(points)
        .find(|&t| is_allowed(rule, history, t))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn attempt(at: &str) -> PersonAttempt {
        PersonAttempt {
            at: utc(at),
            refused_in_conversation: false,
        }
    }

    fn refusal(at: &str) -> PersonAttempt {
        PersonAttempt {
            at: utc(at),
            refused_in_conversation: true,
        }
    }

    #[test]
    fn default_retry_policy_is_valid_and_documented() {
        let p = RetryPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.max_attempts, 5);
        assert_eq!(
            p.delay_after(AttemptOutcome::NoAnswer),
            Some(TimeDelta::hours(4))
        );
        assert_eq!(
            p.delay_after(AttemptOutcome::Busy),
            Some(TimeDelta::minutes(30))
        );
        assert_eq!(
            p.delay_after(AttemptOutcome::Voicemail),
            Some(TimeDelta::hours(24))
        );
        assert_eq!(p.delay_after(AttemptOutcome::WrongNumber), None);
    }

    #[test]
    fn missing_fields_take_defaults_and_bad_values_are_rejected() {
        let p: RetryPolicy = serde_json::from_str(r#"{"busy_delay_minutes": 10}"#).expect("json");
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.busy_delay_minutes, 10);
        let empty: RetryPolicy = serde_json::from_str("{}").expect("json");
        assert_eq!(empty, RetryPolicy::default());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attemps": 3}"#).is_err());
        for bad in [
            RetryPolicy {
                max_attempts: 0,
                ..Default::default()
            },
            RetryPolicy {
                max_attempts: 21,
                ..Default::default()
            },
            RetryPolicy {
                busy_delay_minutes: 0,
                ..Default::default()
            },
            RetryPolicy {
                voicemail_delay_minutes: MAX_DELAY_MINUTES + 1,
                ..Default::default()
            },
            RetryPolicy {
                callback_extra_attempts: 6,
                ..Default::default()
            },
        ] {
            let err = bad.validate().expect_err("invalid");
            assert!(err.to_string().contains("must be between"), "{err}");
        }
        let round: RetryPolicy =
            serde_json::from_str(&serde_json::to_string(&RetryPolicy::default()).expect("ser"))
                .expect("de");
        assert_eq!(round, RetryPolicy::default());
    }

    #[test]
    fn decisions_per_outcome() {
        let p = RetryPolicy::default();
        let at = utc("2027-06-15T10:00:00Z");
        let cb = utc("2027-06-16T14:00:00Z");
        let cases = [
            (
                AttemptOutcome::NoAnswer,
                Decision::RetryAfter(utc("2027-06-15T14:00:00Z")),
            ),
            (
                AttemptOutcome::Busy,
                Decision::RetryAfter(utc("2027-06-15T10:30:00Z")),
            ),
            (
                AttemptOutcome::Voicemail,
                Decision::RetryAfter(utc("2027-06-16T10:00:00Z")),
            ),
            (
                AttemptOutcome::WrongNumber,
                Decision::Close(FinalStatus::WrongNumber),
            ),
            (
                AttemptOutcome::NotInService,
                Decision::Close(FinalStatus::WrongNumber),
            ),
            (
                AttemptOutcome::RefusedInterview,
                Decision::Close(FinalStatus::InterviewRefused),
            ),
            (
                AttemptOutcome::InterviewHeld,
                Decision::Close(FinalStatus::InterviewHeld),
            ),
            (AttemptOutcome::CallbackRequested, Decision::RetryAfter(cb)),
        ];
        for (outcome, want) in cases {
            assert_eq!(decide(&p, outcome, 1, at, Some(cb)), want, "{outcome:?}");
        }
        // Callback without a time, or in the past.
        assert_eq!(
            decide(&p, AttemptOutcome::CallbackRequested, 1, at, None),
            Decision::RetryAfter(utc("2027-06-15T14:00:00Z"))
        );
        assert_eq!(
            decide(
                &p,
                AttemptOutcome::CallbackRequested,
                1,
                at,
                Some(utc("2027-06-01T00:00:00Z"))
            ),
            Decision::RetryAfter(at)
        );
    }

    #[test]
    fn attempts_run_out() {
        let p = RetryPolicy::default();
        let at = utc("2027-06-15T10:00:00Z");
        for outcome in [
            AttemptOutcome::NoAnswer,
            AttemptOutcome::Busy,
            AttemptOutcome::Voicemail,
        ] {
            assert!(matches!(
                decide(&p, outcome, 4, at, None),
                Decision::RetryAfter(_)
            ));
            assert_eq!(
                decide(&p, outcome, 5, at, None),
                Decision::Close(FinalStatus::NotReached)
            );
            assert_eq!(
                decide(&p, outcome, 9, at, None),
                Decision::Close(FinalStatus::NotReached)
            );
        }
        // A callback asked on the last attempt is honoured once more.
        assert!(matches!(
            decide(&p, AttemptOutcome::CallbackRequested, 5, at, None),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            decide(&p, AttemptOutcome::CallbackRequested, 6, at, None),
            Decision::Close(FinalStatus::NotReached)
        );
        // Terminal outcomes close whatever the count.
        assert_eq!(
            decide(&p, AttemptOutcome::InterviewHeld, 6, at, None),
            Decision::Close(FinalStatus::InterviewHeld)
        );
        // An unvalidated policy with 0 attempts still has a limit (1).
        let zero = RetryPolicy {
            max_attempts: 0,
            busy_delay_minutes: 0,
            ..Default::default()
        };
        assert_eq!(
            decide(&zero, AttemptOutcome::NoAnswer, 1, at, None),
            Decision::Close(FinalStatus::NotReached)
        );
        let one_more = RetryPolicy {
            max_attempts: 2,
            busy_delay_minutes: 0,
            ..Default::default()
        };
        assert_eq!(
            decide(&one_more, AttemptOutcome::Busy, 1, at, None),
            Decision::RetryAfter(utc("2027-06-15T10:01:00Z"))
        );
        // No overflow at the end of time.
        assert_eq!(
            decide(
                &p,
                AttemptOutcome::NoAnswer,
                1,
                DateTime::<Utc>::MAX_UTC,
                None
            ),
            Decision::Close(FinalStatus::NotReached)
        );
    }

    #[test]
    fn pressure_rule_defaults_and_validation() {
        let rule = PressureRule::default();
        assert_eq!(
            (
                rule.max_attempts,
                rule.per_days,
                rule.quiet_days_after_refusal
            ),
            (4, 30, 60)
        );
        assert_eq!(rule.validate(), Ok(()));
        assert!(!rule.widens_legal_default());
        assert!(PressureRule {
            max_attempts: 5,
            ..rule
        }
        .widens_legal_default());
        assert!(PressureRule {
            per_days: 29,
            ..rule
        }
        .widens_legal_default());
        assert!(PressureRule {
            quiet_days_after_refusal: 59,
            ..rule
        }
        .widens_legal_default());
        assert!(!PressureRule {
            max_attempts: 2,
            per_days: 45,
            quiet_days_after_refusal: 90
        }
        .widens_legal_default());
        assert!(PressureRule {
            max_attempts: 0,
            ..rule
        }
        .validate()
        .is_err());
        assert!(PressureRule {
            per_days: 0,
            ..rule
        }
        .validate()
        .is_err());
        let json: PressureRule = serde_json::from_str("{}").expect("json");
        assert_eq!(json, rule);
    }

    #[test]
    fn fifth_attempt_waits_until_the_first_leaves_the_30_day_period() {
        let rule = PressureRule::default();
        let history = [
            attempt("2027-03-01T09:00:00Z"),
            attempt("2027-03-05T09:00:00Z"),
            attempt("2027-03-10T09:00:00Z"),
            attempt("2027-03-20T09:00:00Z"),
        ];
        let candidate = utc("2027-03-21T09:00:00Z");
        // 30 × 24 h after 1 March 09:00 UTC is 31 March 09:00 UTC (whatever DST does locally).
        let free = utc("2027-03-31T09:00:00Z");
        assert_eq!(earliest_allowed(&rule, &history, candidate), free);
        assert!(!is_allowed(&rule, &history, free - TimeDelta::seconds(1)));
        assert!(is_allowed(&rule, &history, free));
        // Three attempts: the candidate itself is allowed.
        assert_eq!(earliest_allowed(&rule, &history[1..], candidate), candidate);
        // Exactly at an attempt's instant it still counts.
        assert!(!is_allowed(&rule, &history, utc("2027-03-20T09:00:00Z")));
        // Once 5 March leaves too, two slots.
        assert_eq!(
            earliest_allowed(&rule, &history, utc("2027-04-04T10:00:00Z")),
            utc("2027-04-04T10:00:00Z")
        );
    }

    #[test]
    fn quiet_period_after_refusal() {
        let rule = PressureRule::default();
        let history = [
            attempt("2027-01-02T10:00:00Z"),
            refusal("2027-01-10T10:00:00Z"),
        ];
        let quiet_end = utc("2027-03-11T10:00:00Z"); // 60 × 24 h later
        assert_eq!(
            earliest_allowed(&rule, &history, utc("2027-01-11T10:00:00Z")),
            quiet_end
        );
        assert!(!is_allowed(
            &rule,
            &history,
            quiet_end - TimeDelta::seconds(1)
        ));
        assert!(is_allowed(&rule, &history, quiet_end));
        let later = utc("2027-05-01T00:00:00Z");
        assert_eq!(earliest_allowed(&rule, &history, later), later);
        // Both limits at once: the later one wins.
        let busy = [
            refusal("2027-01-01T10:00:00Z"),
            attempt("2027-02-20T10:00:00Z"),
            attempt("2027-02-21T10:00:00Z"),
            attempt("2027-02-25T10:00:00Z"),
            attempt("2027-03-01T10:00:00Z"),
        ];
        // Quiet period ends 2 March 10:00; four attempts since 20 Feb: free 22 March 10:00.
        assert_eq!(
            earliest_allowed(&rule, &busy, utc("2027-01-15T00:00:00Z")),
            utc("2027-03-22T10:00:00Z")
        );
    }

    #[test]
    fn later_attempts_in_history_are_respected() {
        let rule = PressureRule {
            max_attempts: 2,
            per_days: 30,
            quiet_days_after_refusal: 60,
        };
        // Two attempts planned in the future; a candidate just before them would make three in
        // a 30-day period.
        let history = [
            attempt("2027-06-10T10:00:00Z"),
            attempt("2027-06-12T10:00:00Z"),
        ];
        assert!(!is_allowed(&rule, &history, utc("2027-06-01T10:00:00Z")));
        assert!(is_allowed(&rule, &history, utc("2027-05-12T10:00:00Z")));
        assert_eq!(
            earliest_allowed(&rule, &history, utc("2027-06-01T10:00:00Z")),
            utc("2027-07-10T10:00:00Z")
        );
        assert_eq!(
            earliest_allowed(&rule, &[], utc("2027-06-01T10:00:00Z")),
            utc("2027-06-01T10:00:00Z")
        );
    }

    fn history_strategy() -> impl Strategy<Value = Vec<PersonAttempt>> {
        let base = utc("2027-01-01T00:00:00Z");
        prop::collection::vec(
            (0i64..(120 * 24 * 60), prop::bool::weighted(0.1)).prop_map(move |(m, r)| {
                PersonAttempt {
                    at: base + TimeDelta::minutes(m),
                    refused_in_conversation: r,
                }
            }),
            0..10,
        )
    }

    proptest! {
        #[test]
        fn earliest_allowed_is_allowed_and_minimal(
            history in history_strategy(),
            cand in 0i64..(150 * 24 * 60),
            max in 1u32..6,
        ) {
            let rule = PressureRule { max_attempts: max, ..PressureRule::default() };
            let candidate = utc("2027-01-01T00:00:00Z") + TimeDelta::minutes(cand);
            let t = earliest_allowed(&rule, &history, candidate);
            prop_assert!(t >= candidate);
            prop_assert!(is_allowed(&rule, &history, t));
            // Sampled: nothing earlier (hourly and one second before) is allowed.
            if t > candidate {
                prop_assert!(!is_allowed(&rule, &history, t - TimeDelta::seconds(1)));
                let mut probe = candidate;
                while probe < t {
                    prop_assert!(!is_allowed(&rule, &history, probe), "allowed at {}", probe);
                    probe += TimeDelta::hours(1);
                }
            }
            // Brute-force definition check on the past-only reading.
            let past: Vec<_> = history.iter().filter(|a| a.at <= t).collect();
            let recent = past.iter().filter(|a| a.at > t - TimeDelta::days(30)).count();
            prop_assert!(recent < max as usize);
            prop_assert!(past.iter().filter(|a| a.refused_in_conversation).all(|a| t >= a.at + TimeDelta::days(60)));
        }

        #[test]
        fn retry_is_never_before_the_attempt(o in 0usize..8, n in 0u32..30, m in 0i64..1_000_000) {
            let outcome = AttemptOutcome::ALL[o];
            let at = utc("2027-01-01T00:00:00Z") + TimeDelta::minutes(m);
            match decide(&RetryPolicy::default(), outcome, n, at, None) {
                Decision::RetryAfter(t) => {
                    prop_assert!(t >= at);
                    prop_assert!(n < 6);
                }
                Decision::Close(_) => {}
            }
        }
    }
}
