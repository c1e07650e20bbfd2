//! The concrete open windows of a day, as instants with the callee's local offset.

use super::{CallingPolicy, HolidayCalendar, Place};
use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::Serialize;

/// How far [`next_open_window`] looks ahead, in days.
pub const SEARCH_HORIZON_DAYS: u64 = 400;

/// Contiguous windows are merged by [`next_open_window`] up to the end of the local day that
/// comes this many days after the day the window opens; a policy open without interruption
/// (e.g. all hours) is reported as closing there, and the caller asks again.
pub const MERGE_HORIZON_DAYS: u64 = 8;

/// An open window `[start, end)`, with the place's local offset at each end (they differ when
/// the window spans a DST change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

impl Window {
    pub fn start_utc(&self) -> DateTime<Utc> {
        self.start.with_timezone(&Utc)
    }

    pub fn end_utc(&self) -> DateTime<Utc> {
        self.end.with_timezone(&Utc)
    }

    /// Half-open: the end instant is outside.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start_utc() <= at && at < self.end_utc()
    }
}

/// What a local day looks like for a place under a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayPlan {
    pub date: NaiveDate,
    /// Whether at least one window is open.
    pub callable: bool,
    /// The public holiday of the day at the place, whether or not the policy closes holidays.
    pub holiday: Option<String>,
    /// Sorted, non-overlapping; empty when not callable.
    pub windows: Vec<Window>,
}

/// Which end of a window a local time is for: decides how an ambiguous local time resolves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Edge {
    Start,
    End,
}

/// The instant at which the local clock of `tz` reads `date` + `seconds` (up to 86 400 = next
/// midnight).
///
/// * Ambiguous (the clock goes back): the start of a window resolves to the later instant and
///   the end to the earlier one, so that every instant of the window reads a local time inside
///   it (the conservative choice).
/// * Nonexistent (the clock jumps forward): the next valid instant, i.e. the transition.
pub(super) fn local_instant(
    tz: Tz,
    date: NaiveDate,
    seconds: u32,
    edge: Edge,
) -> Option<DateTime<Tz>> {
    let local = date
        .and_time(NaiveTime::MIN)
        .checked_add_signed(TimeDelta::try_seconds(i64::from(seconds))?)?;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t),
        LocalResult::Ambiguous(early, late) => Some(match edge {
            Edge::Start => late.max(early),
            Edge::End => early.min(late),
        }),
        LocalResult::None => first_instant_after_gap(tz, local),
    }
}

/// For a local time inside a gap, the first instant after the gap (the transition instant).
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Tz>> {
    let day = TimeDelta::try_days(1)?;
    let before = tz
        .offset_from_utc_datetime(&local.checked_sub_signed(day)?)
        .fix();
    let after = tz
        .offset_from_utc_datetime(&local.checked_add_signed(day)?)
        .fix();
    // In a gap the clock jumps forward: `after` is east of `before`. The transition lies
    // between the instants where the clock would read `local` under each offset.
    let lo = local
        .checked_sub_signed(TimeDelta::try_seconds(i64::from(after.local_minus_utc()))?)?
        .and_utc()
        .timestamp();
    let hi = local
        .checked_sub_signed(TimeDelta::try_seconds(i64::from(before.local_minus_utc()))?)?
        .and_utc()
        .timestamp();
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    let offset_at = |ts: i64| {
        DateTime::from_timestamp(ts, 0)
            .map(|utc| tz.offset_from_utc_datetime(&utc.naive_utc()).fix())
    };
    if offset_at(hi)? == before {
        // Not the expected shape of a gap: fall back to the later reading.
        return DateTime::from_timestamp(hi, 0).map(|utc| utc.with_timezone(&tz));
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if offset_at(mid)? == before {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(lo, 0).map(|utc| utc.with_timezone(&tz))
}

/// The local date at `at`, if representable (not at the extreme ends of the time line).
fn local_date(tz: Tz, at: DateTime<Utc>) -> Option<NaiveDate> {
    let offset = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    at.naive_utc()
        .checked_add_offset(offset)
        .map(|local| local.date())
}

/// The plan of local `date` at `place`: holiday name (if any) and open windows under `policy`.
pub fn day_plan(
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    place: &Place,
    date: NaiveDate,
) -> DayPlan {
    let holiday = calendar.holiday(place, date).map(str::to_owned);
    let closed =
        (holiday.is_some() && policy.holidays_closed()) || policy.closed_dates().contains(&date);
    let mut windows = Vec::new();
    if !closed {
        let tz = place.time_zone();
        for w in policy.windows(date.weekday()) {
            let start = local_instant(tz, date, w.start_seconds(), Edge::Start);
            let end = local_instant(tz, date, w.end_seconds(), Edge::End);
            if let (Some(start), Some(end)) = (start, end) {
                if start < end {
                    windows.push(Window {
                        start: start.fixed_offset(),
                        end: end.fixed_offset(),
                    });
                }
            }
        }
    }
    DayPlan {
        date,
        callable: !windows.is_empty(),
        holiday,
        windows,
    }
}

/// Whether a call may be placed at `at`.
pub fn is_open(
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    place: &Place,
    at: DateTime<Utc>,
) -> bool {
    let Some(local_date) = local_date(place.time_zone(), at) else {
        return false;
    };
    [local_date.pred_opt(), Some(local_date)]
        .into_iter()
        .flatten()
        .any(|date| {
            day_plan(calendar, policy, place, date)
                .windows
                .iter()
                .any(|w| w.contains(at))
        })
}

/// The open window containing `after` (returned with start = `after`), or else the next one,
/// as `(start, end)`; `None` if nothing opens within [`SEARCH_HORIZON_DAYS`]. Windows that touch
/// (also across midnight) are merged, over at most [`MERGE_HORIZON_DAYS`].
pub fn next_open_window(
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    place: &Place,
    after: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let local_date = local_date(place.time_zone(), after)?;
    let first = local_date.pred_opt().unwrap_or(local_date);
    let last = local_date
        .checked_add_days(Days::new(SEARCH_HORIZON_DAYS))
        .unwrap_or(NaiveDate::MAX);
    let mut found: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    let mut merge_until = NaiveDate::MAX;
    for date in first.iter_days().take_while(|d| *d <= last) {
        if date > merge_until {
            break;
        }
        let plan = day_plan(calendar, policy, place, date);
        if found.is_some() && plan.windows.is_empty() {
            break;
        }
        for w in &plan.windows {
            let (start, end) = (w.start_utc(), w.end_utc());
            match found {
                None => {
                    if end > after {
                        found = Some((start.max(after), end));
                        merge_until = date
                            .checked_add_days(Days::new(MERGE_HORIZON_DAYS))
                            .unwrap_or(NaiveDate::MAX);
                    }
                }
                Some((found_start, found_end)) => {
                    if start > found_end {
                        return found;
                    }
                    found = Some((found_start, found_end.max(end)));
                }
            }
        }
    }
    found
}

/// Why a requested callback time cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback time {at} is in the past (now {now})")]
    InPast {
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error(
        "callback time {local} (callee's local time) is outside calling hours{}",
        match .next_open { Some(t) => format!("; next opening {t}"), None => String::new() }
    )]
    OutsideCallingHours {
        at: DateTime<Utc>,
        /// The requested time in the callee's local time.
        local: DateTime<FixedOffset>,
        /// When calling opens next, to suggest another time.
        next_open: Option<DateTime<Utc>>,
    },
    #[error("callback time {at} is more than {max_days} days ahead")]
    TooFarAhead { at: DateTime<Utc>, max_days: u64 },
}

/// A callback must not be in the past, not further than [`SEARCH_HORIZON_DAYS`] ahead, and
/// inside an open window of the callee's calling hours.
pub fn validate_callback(
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    place: &Place,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), CallbackError> {
    if at < now {
        return Err(CallbackError::InPast { at, now });
    }
    let too_far = now
        .checked_add_days(Days::new(SEARCH_HORIZON_DAYS))
        .is_some_and(|limit| at > limit);
    if too_far {
        return Err(CallbackError::TooFarAhead {
            at,
            max_days: SEARCH_HORIZON_DAYS,
        });
    }
    if is_open(calendar, policy, place, at) {
        Ok(())
    } else {
        Err(CallbackError::OutsideCallingHours {
            at,
            local: at.with_timezone(&place.time_zone()).fixed_offset(),
            next_open: next_open_window(calendar, policy, place, at).map(|(start, _)| start),
        })
    }
}
