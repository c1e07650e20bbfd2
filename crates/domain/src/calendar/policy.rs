//! Calling policies: weekly local-time windows, holidays, extra closed dates.

use chrono::{NaiveDate, NaiveTime, Timelike, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

const SECONDS_PER_DAY: u32 = 86_400;

/// Every weekday, Monday first.
const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

pub(crate) fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// A window of local (wall-clock) time within a day, `[start, end)`, to the second.
/// `end` may be the end of the day (24:00, written `"24:00"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalWindow {
    start: u32,
    end: u32,
}

impl LocalWindow {
    /// `[start, end)`; `end` must be after `start` (use [`LocalWindow::until_end_of_day`] for
    /// 24:00). Sub-second parts are ignored.
    pub fn new(start: NaiveTime, end: NaiveTime) -> Result<Self, PolicyError> {
        Self::from_seconds(
            start.num_seconds_from_midnight(),
            end.num_seconds_from_midnight(),
        )
    }

    /// `[start, 24:00)`.
    pub fn until_end_of_day(start: NaiveTime) -> Self {
        LocalWindow {
            start: start.num_seconds_from_midnight(),
            end: SECONDS_PER_DAY,
        }
    }

    /// `[start, end)` in seconds after local midnight, `end` at most 86 400 (24:00).
    pub fn from_seconds(start: u32, end: u32) -> Result<Self, PolicyError> {
        if start < end && end <= SECONDS_PER_DAY {
            Ok(LocalWindow { start, end })
        } else {
            Err(PolicyError::InvalidWindow {
                start: format_seconds(start),
                end: format_seconds(end),
            })
        }
    }

    fn hm(start_h: u32, start_m: u32, end_h: u32, end_m: u32) -> Self {
        LocalWindow {
            start: start_h * 3600 + start_m * 60,
            end: end_h * 3600 + end_m * 60,
        }
    }

    pub fn start(&self) -> NaiveTime {
        NaiveTime::from_num_seconds_from_midnight_opt(self.start, 0).unwrap_or(NaiveTime::MIN)
    }

    /// `None` means the end of the day (24:00).
    pub fn end(&self) -> Option<NaiveTime> {
        NaiveTime::from_num_seconds_from_midnight_opt(self.end, 0)
            .filter(|_| self.end < SECONDS_PER_DAY)
    }

    /// Seconds after local midnight.
    pub fn start_seconds(&self) -> u32 {
        self.start
    }

    /// Seconds after local midnight (86 400 = 24:00).
    pub fn end_seconds(&self) -> u32 {
        self.end
    }
}

impl fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}–{}",
            format_seconds(self.start),
            format_seconds(self.end)
        )
    }
}

fn format_seconds(s: u32) -> String {
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if sec == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// Parses `HH:MM` or `HH:MM:SS`; `24:00` (end of day) only when `allow_24` is set.
fn parse_seconds(text: &str, allow_24: bool) -> Option<u32> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let h: u32 = parts[0].parse().ok()?;
    let m: u32 = parts[1].parse().ok()?;
    let s: u32 = match parts.get(2) {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if m > 59 || s > 59 {
        return None;
    }
    let total = h * 3600 + m * 60 + s;
    if h < 24 || (allow_24 && total == SECONDS_PER_DAY) {
        Some(total)
    } else {
        None
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalWindowRepr {
    start: String,
    end: String,
}

impl Serialize for LocalWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        LocalWindowRepr {
            start: format_seconds(self.start),
            end: format_seconds(self.end),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LocalWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = LocalWindowRepr::deserialize(deserializer)?;
        let bad = || PolicyError::InvalidWindow {
            start: repr.start.clone(),
            end: repr.end.clone(),
        };
        let start = parse_seconds(&repr.start, false)
            .ok_or_else(bad)
            .map_err(serde::de::Error::custom)?;
        let end = parse_seconds(&repr.end, true)
            .ok_or_else(bad)
            .map_err(serde::de::Error::custom)?;
        LocalWindow::from_seconds(start, end).map_err(serde::de::Error::custom)
    }
}

/// The windows of each weekday (local time). Each day's windows are sorted and do not overlap
/// (they may touch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeeklySchedule {
    pub monday: Vec<LocalWindow>,
    pub tuesday: Vec<LocalWindow>,
    pub wednesday: Vec<LocalWindow>,
    pub thursday: Vec<LocalWindow>,
    pub friday: Vec<LocalWindow>,
    pub saturday: Vec<LocalWindow>,
    pub sunday: Vec<LocalWindow>,
}

impl WeeklySchedule {
    pub fn day(&self, day: Weekday) -> &[LocalWindow] {
        match day {
            Weekday::Mon => &self.monday,
            Weekday::Tue => &self.tuesday,
            Weekday::Wed => &self.wednesday,
            Weekday::Thu => &self.thursday,
            Weekday::Fri => &self.friday,
            Weekday::Sat => &self.saturday,
            Weekday::Sun => &self.sunday,
        }
    }

    fn day_mut(&mut self, day: Weekday) -> &mut Vec<LocalWindow> {
        match day {
            Weekday::Mon => &mut self.monday,
            Weekday::Tue => &mut self.tuesday,
            Weekday::Wed => &mut self.wednesday,
            Weekday::Thu => &mut self.thursday,
            Weekday::Fri => &mut self.friday,
            Weekday::Sat => &mut self.saturday,
            Weekday::Sun => &mut self.sunday,
        }
    }

    /// Sorts each day's windows and rejects overlapping ones.
    fn normalise(mut self) -> Result<Self, PolicyError> {
        for day in WEEK {
            let windows = self.day_mut(day);
            windows.sort();
            for pair in windows.windows(2) {
                if pair[1].start < pair[0].end {
                    return Err(PolicyError::OverlappingWindows {
                        weekday: day,
                        first: pair[0],
                        second: pair[1],
                    });
                }
            }
        }
        Ok(self)
    }
}

/// Why a policy is invalid, or wider than the reference it is checked against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid window {start}–{end}: the end must be after the start, within 00:00–24:00")]
    InvalidWindow { start: String, end: String },
    #[error("{} windows {first} and {second} overlap", weekday_name(*.weekday))]
    OverlappingWindows {
        weekday: Weekday,
        first: LocalWindow,
        second: LocalWindow,
    },
    #[error(
        "{} window {window} is outside the legal calling hours ({}): widening the legal default \
         needs an audited override",
        weekday_name(*.weekday),
        if .allowed.is_empty() { "closed that day".to_string() } else { .allowed.clone() }
    )]
    OutsideLegalHours {
        weekday: Weekday,
        window: LocalWindow,
        /// The reference windows of that day, e.g. "10:00–13:00, 14:00–20:00".
        allowed: String,
    },
    #[error(
        "the policy opens public holidays, which the legal default closes: this needs an audited \
         override"
    )]
    HolidaysOpened,
    #[error(
        "the policy opens {0}, which the legal default closes: this needs an audited override"
    )]
    ClosedDateOpened(NaiveDate),
    #[error("an override of the legal calling hours needs a reason")]
    OverrideWithoutReason,
}

/// An explicit, audited decision to call outside the legal default (benchmark, demo, a
/// documented legal exception). The scheduler records it; this type only carries the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub reason: String,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallingPolicyRepr {
    weekly: WeeklySchedule,
    #[serde(default = "default_true")]
    holidays_closed: bool,
    #[serde(default)]
    closed_dates: BTreeSet<NaiveDate>,
}

/// When calls may be placed, in the callee's local time.
///
/// JSON form (stored by the scheduler):
/// `{"weekly": {"monday": [{"start": "10:00", "end": "13:00"}, …], …, "sunday": []},
///   "holidays_closed": true, "closed_dates": ["2027-12-24"]}`.
/// Missing days are closed; `holidays_closed` defaults to `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CallingPolicyRepr")]
pub struct CallingPolicy {
    weekly: WeeklySchedule,
    holidays_closed: bool,
    closed_dates: BTreeSet<NaiveDate>,
}

impl TryFrom<CallingPolicyRepr> for CallingPolicy {
    type Error = PolicyError;
    fn try_from(repr: CallingPolicyRepr) -> Result<Self, PolicyError> {
        CallingPolicy::new(repr.weekly, repr.holidays_closed, repr.closed_dates)
    }
}

impl Default for CallingPolicy {
    /// The legal default.
    fn default() -> Self {
        Self::legal_default()
    }
}

impl CallingPolicy {
    /// Builds a policy; each day's windows are sorted, overlapping windows are rejected.
    pub fn new(
        weekly: WeeklySchedule,
        holidays_closed: bool,
        closed_dates: BTreeSet<NaiveDate>,
    ) -> Result<Self, PolicyError> {
        Ok(CallingPolicy {
            weekly: weekly.normalise()?,
            holidays_closed,
            closed_dates,
        })
    }

    /// Code de la consommation art. D. 223-9: Monday to Friday 10:00–13:00 and 14:00–20:00,
    /// public holidays closed.
    pub fn legal_default() -> Self {
        let day = vec![LocalWindow::hm(10, 0, 13, 0), LocalWindow::hm(14, 0, 20, 0)];
        CallingPolicy {
            weekly: WeeklySchedule {
                monday: day.clone(),
                tuesday: day.clone(),
                wednesday: day.clone(),
                thursday: day.clone(),
                friday: day,
                saturday: Vec::new(),
                sunday: Vec::new(),
            },
            holidays_closed: true,
            closed_dates: BTreeSet::new(),
        }
    }

    /// Every day 00:00–24:00, holidays open. Only with an explicit, audited [`Override`]
    /// (benchmark, demo).
    pub fn all_hours() -> Self {
        let day = vec![LocalWindow::hm(0, 0, 24, 0)];
        CallingPolicy {
            weekly: WeeklySchedule {
                monday: day.clone(),
                tuesday: day.clone(),
                wednesday: day.clone(),
                thursday: day.clone(),
                friday: day.clone(),
                saturday: day.clone(),
                sunday: day,
            },
            holidays_closed: false,
            closed_dates: BTreeSet::new(),
        }
    }

    /// Replaces the windows of one weekday.
    pub fn with_day(
        mut self,
        day: Weekday,
        windows: Vec<LocalWindow>,
    ) -> Result<Self, PolicyError> {
        *self.weekly.day_mut(day) = windows;
        self.weekly = self.weekly.normalise()?;
        Ok(self)
    }

    /// Opens or closes public holidays.
    pub fn with_holidays_closed(mut self, closed: bool) -> Self {
        self.holidays_closed = closed;
        self
    }

    /// Closes one more date (e.g. a customary day off such as Mi-Carême in the Antilles).
    pub fn with_closed_date(mut self, date: NaiveDate) -> Self {
        self.closed_dates.insert(date);
        self
    }

    pub fn weekly(&self) -> &WeeklySchedule {
        &self.weekly
    }

    /// The local windows of a weekday, sorted.
    pub fn windows(&self, day: Weekday) -> &[LocalWindow] {
        self.weekly.day(day)
    }

    pub fn holidays_closed(&self) -> bool {
        self.holidays_closed
    }

    pub fn closed_dates(&self) -> &BTreeSet<NaiveDate> {
        &self.closed_dates
    }

    /// `Ok` when this policy never opens a moment `reference` keeps closed: every window lies
    /// within the reference windows of the same weekday, holidays stay closed if the reference
    /// closes them, and the reference's closed dates stay closed. The first violation is
    /// reported, naming the day and window.
    pub fn check_within(&self, reference: &CallingPolicy) -> Result<(), PolicyError> {
        for day in WEEK {
            let allowed = reference.windows(day);
            for window in self.windows(day) {
                if !covered(window, allowed) {
                    return Err(PolicyError::OutsideLegalHours {
                        weekday: day,
                        window: *window,
                        allowed: allowed
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        if reference.holidays_closed && !self.holidays_closed {
            return Err(PolicyError::HolidaysOpened);
        }
        for date in &reference.closed_dates {
            use chrono::Datelike;
            if !self.closed_dates.contains(date) && !self.windows(date.weekday()).is_empty() {
                return Err(PolicyError::ClosedDateOpened(*date));
            }
        }
        Ok(())
    }

    /// Whether the policy opens moments the legal default keeps closed (and so needs an
    /// audited [`Override`]).
    pub fn widens_legal_default(&self) -> bool {
        self.check_within(&CallingPolicy::legal_default()).is_err()
    }

    /// `Ok` if the policy stays within the legal default, or widens it with an override that
    /// gives a (non-blank) reason. Otherwise the error of [`CallingPolicy::check_within`].
    pub fn authorize(&self, override_: Option<&Override>) -> Result<(), PolicyError> {
        match self.check_within(&CallingPolicy::legal_default()) {
            Ok(()) => Ok(()),
            Err(err) => match override_ {
                Some(o) if !o.reason.trim().is_empty() => Ok(()),
                Some(_) => Err(PolicyError::OverrideWithoutReason),
                None => Err(err),
            },
        }
    }
}

/// Whether `window` lies within the union of `allowed` (sorted, non-overlapping).
fn covered(window: &LocalWindow, allowed: &[LocalWindow]) -> bool {
    let mut reached = window.start;
    for a in allowed {
        if a.start <= reached && a.end > reached {
            reached = a.end;
        }
        if reached >= window.end {
            return true;
        }
    }
    false
}
