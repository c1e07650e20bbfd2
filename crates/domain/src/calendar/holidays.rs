//! Public holidays as data: rules (fixed date or relative to Easter) with the scope they apply
//! to. The built-in list is `data/holidays.json`; an amended list is loaded with
//! [`HolidayCalendar::from_json`].

use super::Place;
use crate::geo::{Department, Territory};
use chrono::{Datelike, Days, NaiveDate};
use once_cell::sync::Lazy;
use serde::{Deserialize, Serialize};

const BUILT_IN_JSON: &str = include_str!("../../data/holidays.json");

static BUILT_IN: Lazy<HolidayCalendar> = Lazy::new(|| {
    HolidayCalendar::from_json(BUILT_IN_JSON)
        .expect("built-in data/holidays.json is valid (checked by unit tests)")
});

/// Easter offsets are bounded so that the day always stays in Easter's calendar year
/// (Easter falls between 22 March and 25 April).
const EASTER_OFFSET_MIN: i32 = -80;
const EASTER_OFFSET_MAX: i32 = 250;

/// Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher).
/// `None` before 1583 (Julian calendar) or beyond year 9999.
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    if !(1583..=9999).contains(&year) {
        return None;
    }
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let n = h + l - 7 * m + 114;
    let month = u32::try_from(n / 31).ok()?;
    let day = u32::try_from(n % 31 + 1).ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// How the date of a holiday is found in a given year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HolidayRule {
    /// The same day every year (29 February only occurs in leap years).
    Fixed { month: u32, day: u32 },
    /// `offset` days after Easter Sunday (negative: before), within −80..=250.
    Easter { offset: i32 },
}

impl HolidayRule {
    /// The date of this rule in `year`, if it has one.
    pub fn date_in(&self, year: i32) -> Option<NaiveDate> {
        match *self {
            HolidayRule::Fixed { month, day } => NaiveDate::from_ymd_opt(year, month, day),
            HolidayRule::Easter { offset } => {
                let easter = easter_sunday(year)?;
                let magnitude = Days::new(u64::from(offset.unsigned_abs()));
                if offset >= 0 {
                    easter.checked_add_days(magnitude)
                } else {
                    easter.checked_sub_days(magnitude)
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        match *self {
            HolidayRule::Fixed { month, day } => {
                // 2000 is a leap year: accepts 29 February.
                if NaiveDate::from_ymd_opt(2000, month, day).is_none() {
                    return Err(format!("no such day: month {month}, day {day}"));
                }
            }
            HolidayRule::Easter { offset } => {
                if !(EASTER_OFFSET_MIN..=EASTER_OFFSET_MAX).contains(&offset) {
                    return Err(format!(
                        "Easter offset {offset} out of range {EASTER_OFFSET_MIN}..={EASTER_OFFSET_MAX}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a holiday applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolidayScope {
    /// Everywhere (metropolitan France and overseas).
    National,
    /// In these departments / overseas collectivities only (INSEE codes, e.g. "57", "971").
    Departments(Vec<Department>),
    /// In every place of these territories.
    Territories(Vec<Territory>),
}

impl HolidayScope {
    fn applies_to(&self, place: &Place) -> bool {
        match self {
            HolidayScope::National => true,
            HolidayScope::Departments(list) => place
                .department_code()
                .is_some_and(|code| list.iter().any(|d| d.code() == code)),
            HolidayScope::Territories(list) => list.contains(&place.territory()),
        }
    }
}

/// One holiday rule of the calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidayDef {
    /// The French name, e.g. "Lundi de Pâques".
    pub name: String,
    pub rule: HolidayRule,
    pub scope: HolidayScope,
    /// First year the rule applies (inclusive), if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_year: Option<i32>,
    /// Last year the rule applies (inclusive), if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_year: Option<i32>,
}

impl HolidayDef {
    fn falls_on(&self, place: &Place, date: NaiveDate) -> bool {
        let year = date.year();
        self.from_year.is_none_or(|y| year >= y)
            && self.until_year.is_none_or(|y| year <= y)
            && self.rule.date_in(year) == Some(date)
            && self.scope.applies_to(place)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("empty name".into());
        }
        self.rule.check()?;
        match &self.scope {
            HolidayScope::National => {}
            HolidayScope::Departments(list) => {
                if list.is_empty() {
                    return Err("empty department list".into());
                }
                for d in list {
                    // Deserialisation does not validate department codes: do it here.
                    match Department::parse(d.code()) {
                        Ok(parsed) if parsed.code() == d.code() => {}
                        _ => return Err(format!("unknown department code {:?}", d.code())),
                    }
                }
            }
            HolidayScope::Territories(list) => {
                if list.is_empty() {
                    return Err("empty territory list".into());
                }
            }
        }
        if let (Some(from), Some(until)) = (self.from_year, self.until_year) {
            if from > until {
                return Err(format!("from_year {from} is after until_year {until}"));
            }
        }
        Ok(())
    }
}

/// Errors loading an amended holiday calendar.
#[derive(Debug, thiserror::Error)]
pub enum CalendarDataError {
    #[error("holiday calendar is not valid JSON for the expected format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("holiday #{index} ({name:?}) is invalid: {reason}")]
    Invalid {
        index: usize,
        name: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    description: Option<String>,
    holidays: Vec<HolidayDef>,
}

/// The public holidays, by place. When two holidays fall on the same day and place, the first
/// one listed gives the name (the built-in list puts the national holidays first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HolidayCalendar {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    holidays: Vec<HolidayDef>,
}

impl Default for HolidayCalendar {
    /// The built-in calendar (`data/holidays.json`).
    fn default() -> Self {
        BUILT_IN.clone()
    }
}

impl HolidayCalendar {
    /// The built-in calendar, shared (no copy).
    pub fn built_in() -> &'static HolidayCalendar {
        &BUILT_IN
    }

    /// The JSON text of the built-in calendar, a starting point for an amended one.
    pub fn built_in_json() -> &'static str {
        BUILT_IN_JSON
    }

    /// Loads a calendar in the format of `data/holidays.json`:
    /// `{"description": "...", "holidays": [{"name", "rule", "scope", "from_year"?, "until_year"?}]}`.
    pub fn from_json(json: &str) -> Result<Self, CalendarDataError> {
        let file: CalendarFile = serde_json::from_str(json)?;
        Self::from_defs(file.description, file.holidays)
    }

    /// Builds a calendar from rules, validating each.
    pub fn from_defs(
        description: Option<String>,
        holidays: Vec<HolidayDef>,
    ) -> Result<Self, CalendarDataError> {
        for (index, def) in holidays.iter().enumerate() {
            def.check().map_err(|reason| CalendarDataError::Invalid {
                index,
                name: def.name.clone(),
                reason,
            })?;
        }
        Ok(HolidayCalendar {
            description,
            holidays,
        })
    }

    /// The JSON form, loadable again with [`HolidayCalendar::from_json`].
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn definitions(&self) -> &[HolidayDef] {
        &self.holidays
    }

    /// The name of the public holiday on `date` at `place`, if it is one.
    pub fn holiday(&self, place: &Place, date: NaiveDate) -> Option<&str> {
        self.holidays
            .iter()
            .find(|h| h.falls_on(place, date))
            .map(|h| h.name.as_str())
    }

    /// All the holidays falling on `date` at `place`, in the order listed.
    pub fn holidays_on(&self, place: &Place, date: NaiveDate) -> Vec<&str> {
        self.holidays
            .iter()
            .filter(|h| h.falls_on(place, date))
            .map(|h| h.name.as_str())
            .collect()
    }

    /// The holidays of `year` at `place`, by date (one entry per date: the name
    /// [`HolidayCalendar::holiday`] gives).
    pub fn holidays_in_year(&self, place: &Place, year: i32) -> Vec<(NaiveDate, &str)> {
        let mut dates: Vec<NaiveDate> = self
            .holidays
            .iter()
            .filter_map(|h| h.rule.date_in(year))
            .collect();
        dates.sort_unstable();
        dates.dedup();
        dates
            .into_iter()
            .filter_map(|d| self.holiday(place, d).map(|name| (d, name)))
            .collect()
    }
}
