//! Territories, departments, postal codes and the time zone that decides calling hours.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A French territory with its own numbering block and time zone.
/// `FR` is metropolitan France (Corsica included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Territory {
    FR,
    GP,
    MQ,
    GF,
    RE,
    YT,
    BL,
    MF,
}

impl Territory {
    pub const ALL: [Territory; 8] = [
        Territory::FR,
        Territory::GP,
        Territory::MQ,
        Territory::GF,
        Territory::RE,
        Territory::YT,
        Territory::BL,
        Territory::MF,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Territory::FR => "FR",
            Territory::GP => "GP",
            Territory::MQ => "MQ",
            Territory::GF => "GF",
            Territory::RE => "RE",
            Territory::YT => "YT",
            Territory::BL => "BL",
            Territory::MF => "MF",
        }
    }

    /// The IANA zone whose local time decides when a person living there may be called.
    pub fn time_zone(self) -> Tz {
        match self {
            Territory::FR => chrono_tz::Europe::Paris,
            Territory::GP => chrono_tz::America::Guadeloupe,
            Territory::MQ => chrono_tz::America::Martinique,
            Territory::GF => chrono_tz::America::Cayenne,
            Territory::RE => chrono_tz::Indian::Reunion,
            Territory::YT => chrono_tz::Indian::Mayotte,
            Territory::BL => chrono_tz::America::St_Barthelemy,
            Territory::MF => chrono_tz::America::Marigot,
        }
    }
}

impl fmt::Display for Territory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown territory code (expected one of FR, GP, MQ, GF, RE, YT, BL, MF)")]
pub struct UnknownTerritory;

impl FromStr for Territory {
    type Err = UnknownTerritory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Territory::ALL
            .into_iter()
            .find(|t| t.code().eq_ignore_ascii_case(s.trim()))
            .ok_or(UnknownTerritory)
    }
}

/// A French department code as INSEE writes it: `01`–`95` (with `2A`/`2B` for Corsica)
/// and `971`–`978` overseas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Department(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepartmentError {
    #[error("department code must be 01-95, 2A, 2B or 971-978")]
    Unknown,
}

impl Department {
    pub fn parse(input: &str) -> Result<Self, DepartmentError> {
        let code = input.trim().to_ascii_uppercase();
        let valid = match code.as_str() {
            "2A" | "2B" => true,
            "971" | "972" | "973" | "974" | "976" | "977" | "978" => true,
            c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u8 = c.parse().map_err(|_| DepartmentError::Unknown)?;
                (1..=95).contains(&n) && n != 20
            }
            _ => false,
        };
        if valid {
            Ok(Department(code))
        } else {
            Err(DepartmentError::Unknown)
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    pub fn territory(&self) -> Territory {
        match self.0.as_str() {
            "971" => Territory::GP,
            "972" => Territory::MQ,
            "973" => Territory::GF,
            "974" => Territory::RE,
            "976" => Territory::YT,
            "977" => Territory::BL,
            "978" => Territory::MF,
            _ => Territory::FR,
        }
    }

    /// Moselle, Bas-Rhin and Haut-Rhin keep their local law (extra public holidays).
    pub fn is_alsace_moselle(&self) -> bool {
        matches!(self.0.as_str(), "57" | "67" | "68")
    }

    pub fn time_zone(&self) -> Tz {
        self.territory().time_zone()
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Department {
    type Err = DepartmentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Department::parse(s)
    }
}

/// Why a postal code does not give a served department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostcodeError {
    #[error("a postal code has 5 digits")]
    BadLength,
    #[error("a postal code contains only digits")]
    NotDigits,
    #[error("no department uses this postal code range")]
    UnknownDepartment,
    #[error("this territory is not served (Saint-Pierre-et-Miquelon, Monaco, Pacific)")]
    NotServed,
}

impl PostcodeError {
    pub fn code(&self) -> &'static str {
        match self {
            PostcodeError::BadLength => "postcode.bad_length",
            PostcodeError::NotDigits => "postcode.not_digits",
            PostcodeError::UnknownDepartment => "postcode.unknown_department",
            PostcodeError::NotServed => "postcode.not_served",
        }
    }
}

/// A French postal code (5 digits) whose range belongs to a served department.
///
/// Mapping (La Poste ranges): the first two digits give the department (`01`–`95`), except
/// Corsica, where `20000`–`20199` is Corse-du-Sud (`2A`) and `20200`–`20699` Haute-Corse (`2B`)
/// (`207xx`–`209xx` are unused and rejected); overseas `971xx` is Guadeloupe except `97133`
/// (Saint-Barthélemy, `977`) and `97150` (Saint-Martin, `978`), then `972xx`, `973xx`, `974xx`,
/// `976xx`. Rejected: `00xxx`, `96xxx`, `975xx` (Saint-Pierre-et-Miquelon, not served), `977xx`
/// and `978xx` (not postal ranges), `98xxx` (Monaco and the Pacific), `99xxx`.
///
/// Caveat: a few communes have a postal code of the neighbouring department's distribution
/// office; the postal code gives the delivery department, which is what calling hours need
/// (same time zone), but not always the INSEE department.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Postcode(String);

impl Postcode {
    /// Spaces (and tabs / non-breaking spaces) are ignored: `"75 001"` is `75001`.
    pub fn parse(input: &str) -> Result<Postcode, PostcodeError> {
        let s: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '\u{a0}' | '\u{202f}'))
            .collect();
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(PostcodeError::NotDigits);
        }
        if s.len() != 5 {
            return Err(PostcodeError::BadLength);
        }
        let p = Postcode(s);
        p.department()?;
        Ok(p)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn department(&self) -> Result<Department, PostcodeError> {
        let n: u32 = self.0.parse().map_err(|_| PostcodeError::NotDigits)?;
        let prefix2 = n / 1000;
        let code: String = match prefix2 {
            0 | 96 | 99 => return Err(PostcodeError::UnknownDepartment),
            98 => return Err(PostcodeError::NotServed),
            20 => match n {
                20000..=20199 => "2A".into(),
                20200..=20699 => "2B".into(),
                _ => return Err(PostcodeError::UnknownDepartment),
            },
            97 => match n / 100 {
                971 => match n {
                    97133 => "977".into(),
                    97150 => "978".into(),
                    _ => "971".into(),
                },
                972 | 973 | 974 | 976 => (n / 100).to_string(),
                975 => return Err(PostcodeError::NotServed),
                _ => return Err(PostcodeError::UnknownDepartment),
            },
            d => format!("{d:02}"),
        };
        Department::parse(&code).map_err(|_| PostcodeError::UnknownDepartment)
    }
}

impl fmt::Display for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shortcut for `Postcode::parse(input)?.department()`.
pub fn department_from_postcode(input: &str) -> Result<Department, PostcodeError> {
    Postcode::parse(input)?.department()
}

#[cfg(test)]
mod postcode_tests {
    use super::*;
    use proptest::prelude::*;

    fn dep(s: &str) -> Result<String, PostcodeError> {
        department_from_postcode(s).map(|d| d.code().to_string())
    }

    #[test]
    fn metropolitan() {
        assert_eq!(dep("75001"), Ok("75".into()));
        assert_eq!(dep("75 001"), Ok("75".into()));
        assert_eq!(dep("01000"), Ok("01".into()));
        assert_eq!(dep("95000"), Ok("95".into()));
        assert_eq!(dep("57000"), Ok("57".into()));
        assert_eq!(dep("13008"), Ok("13".into()));
        assert!(department_from_postcode("67000").map(|d| d.is_alsace_moselle()) == Ok(true));
    }

    #[test]
    fn corsica() {
        assert_eq!(dep("20000"), Ok("2A".into()));
        assert_eq!(dep("20090"), Ok("2A".into()));
        assert_eq!(dep("20100"), Ok("2A".into()));
        assert_eq!(dep("20167"), Ok("2A".into()));
        assert_eq!(dep("20199"), Ok("2A".into()));
        assert_eq!(dep("20200"), Ok("2B".into()));
        assert_eq!(dep("20600"), Ok("2B".into()));
        assert_eq!(dep("20620"), Ok("2B".into()));
        assert_eq!(dep("20699"), Ok("2B".into()));
        assert_eq!(dep("20700"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("20999"), Err(PostcodeError::UnknownDepartment));
    }

    #[test]
    fn overseas() {
        assert_eq!(dep("97100"), Ok("971".into()));
        assert_eq!(dep("97110"), Ok("971".into()));
        assert_eq!(dep("97133"), Ok("977".into()));
        assert_eq!(dep("97150"), Ok("978".into()));
        assert_eq!(dep("97200"), Ok("972".into()));
        assert_eq!(dep("97300"), Ok("973".into()));
        assert_eq!(dep("97400"), Ok("974".into()));
        assert_eq!(dep("97600"), Ok("976".into()));
        assert_eq!(
            department_from_postcode("97133").map(|d| d.territory()),
            Ok(Territory::BL)
        );
        assert_eq!(
            department_from_postcode("97150").map(|d| d.territory()),
            Ok(Territory::MF)
        );
        assert_eq!(
            department_from_postcode("97600").map(|d| d.territory()),
            Ok(Territory::YT)
        );
    }

    #[test]
    fn rejected() {
        assert_eq!(dep("97500"), Err(PostcodeError::NotServed));
        assert_eq!(dep("98000"), Err(PostcodeError::NotServed));
        assert_eq!(dep("98800"), Err(PostcodeError::NotServed));
        assert_eq!(dep("00100"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("96000"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("99000"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("97700"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("97800"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("97000"), Err(PostcodeError::UnknownDepartment));
        assert_eq!(dep("7500"), Err(PostcodeError::BadLength));
        assert_eq!(dep("750011"), Err(PostcodeError::BadLength));
        assert_eq!(dep(""), Err(PostcodeError::BadLength));
        assert_eq!(dep("75-001"), Err(PostcodeError::NotDigits));
        assert_eq!(dep("2A000"), Err(PostcodeError::NotDigits));
        assert_eq!(PostcodeError::NotServed.code(), "postcode.not_served");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = department_from_postcode(&s);
        }

        #[test]
        fn metropolitan_prefix_is_department(d in 1u32..96, rest in 0u32..1000) {
            prop_assume!(d != 20);
            let code = format!("{d:02}{rest:03}");
            prop_assert_eq!(dep(&code), Ok(format!("{d:02}")));
        }

        #[test]
        fn spaces_are_ignored(n in 1000u32..96000, at in 0usize..5) {
            let code = format!("{n:05}");
            let spaced = format!("{} {}", &code[..at], &code[at..]);
            prop_assert_eq!(dep(&spaced), dep(&code));
        }
    }
}
