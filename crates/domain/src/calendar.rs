//! When a person may be called: public holidays (as amendable data), calling policies
//! (weekly local-time windows) and the concrete open windows of a day in the callee's time zone.
//!
//! The legal default is Code de la consommation art. D. 223-9 (décret 2022-1313): Monday to
//! Friday, except public holidays, 10:00–13:00 and 14:00–20:00 **in the callee's time zone**.
//! See [`CallingPolicy::legal_default`].
//!
//! * [`HolidayCalendar`]: which days are public holidays where ([`Place`]); built from
//!   `data/holidays.json` and replaceable by an amended JSON file.
//! * [`CallingPolicy`]: weekly windows, whether holidays close, extra closed dates;
//!   [`CallingPolicy::check_within`] tells whether a campaign's policy stays within the legal
//!   default.
//! * [`day_plan`], [`next_open_window`], [`is_open`], [`validate_callback`]: the windows of a
//!   day as instants with the local offset, DST included.

mod holidays;
mod plan;
mod policy;

use crate::geo::{Department, Territory};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use holidays::{
    easter_sunday, CalendarDataError, HolidayCalendar, HolidayDef, HolidayRule, HolidayScope,
};
pub use plan::{
    day_plan, is_open, next_open_window, validate_callback, CallbackError, DayPlan, Window,
    MERGE_HORIZON_DAYS, SEARCH_HORIZON_DAYS,
};
pub use policy::{CallingPolicy, LocalWindow, Override, PolicyError, WeeklySchedule};

/// Where a person is, as far as calling hours are concerned.
///
/// A contact may only be known by its territory (e.g. from its phone number). A territory-only
/// metropolitan place (`FR`) gets the national holidays only; a territory-only overseas place
/// gets the holidays of the department (or collectivity) of that territory: GP → 971, MQ → 972,
/// GF → 973, RE → 974, YT → 976, BL → 977, MF → 978.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Department(Department),
    Territory(Territory),
}

impl Place {
    pub fn territory(&self) -> Territory {
        match self {
            Place::Department(d) => d.territory(),
            Place::Territory(t) => *t,
        }
    }

    /// The IANA zone whose local time decides calling hours.
    pub fn time_zone(&self) -> Tz {
        self.territory().time_zone()
    }

    /// The department code whose local holidays apply, if any (`None` for territory-only
    /// metropolitan France).
    pub fn department_code(&self) -> Option<&str> {
        match self {
            Place::Department(d) => Some(d.code()),
            Place::Territory(t) => overseas_department_code(*t),
        }
    }
}

/// The INSEE code of the overseas department or collectivity of a territory.
pub(crate) fn overseas_department_code(territory: Territory) -> Option<&'static str> {
    match territory {
        Territory::FR => None,
        Territory::GP => Some("971"),
        Territory::MQ => Some("972"),
        Territory::GF => Some("973"),
        Territory::RE => Some("974"),
        Territory::YT => Some("976"),
        Territory::BL => Some("977"),
        Territory::MF => Some("978"),
    }
}

impl From<Department> for Place {
    fn from(d: Department) -> Self {
        Place::Department(d)
    }
}

impl From<Territory> for Place {
    fn from(t: Territory) -> Self {
        Place::Territory(t)
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Department(d) => write!(f, "department {d}"),
            Place::Territory(t) => write!(f, "territory {t}"),
        }
    }
}

#[cfg(test)]
mod tests;
