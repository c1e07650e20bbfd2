//! The local funds (CPAM, CGSS, CSS) that commission campaigns, identified by a 3-digit code.
//!
//! The table is reference data (`data/funds.csv`), loaded at start and replaceable without a
//! rebuild, because no authoritative public table of fund codes exists (DOMAIN.md).

use crate::geo::Department;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A fund code: three ASCII digits. It is also the `<org>` token of NATS subjects, so its
/// shape is what lets NATS permissions confine a fund to its own subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FundCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FundError {
    #[error("fund code must be exactly 3 digits")]
    BadCode,
    #[error("fund code is not in the reference table of funds")]
    Unknown,
    #[error("funds table line {line}: {message}")]
    BadTable { line: usize, message: String },
}

impl FundError {
    pub fn code(&self) -> &'static str {
        match self {
            FundError::BadCode => "fund.bad_code",
            FundError::Unknown => "fund.unknown",
            FundError::BadTable { .. } => "fund.bad_table",
        }
    }
}

impl FundCode {
    pub fn parse(input: &str) -> Result<Self, FundError> {
        let code = input.trim();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(FundCode(code.to_string()))
        } else {
            Err(FundError::BadCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FundCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FundKind {
    Cpam,
    Cgss,
    Css,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fund {
    pub code: FundCode,
    pub name: String,
    pub kind: FundKind,
    /// The department the fund serves; its territory is the default territory of its contacts.
    pub department: Department,
}

/// The reference table of funds.
#[derive(Debug, Clone)]
pub struct Funds {
    by_code: BTreeMap<FundCode, Fund>,
}

const BUILTIN: &str = include_str!("../data/funds.csv");

impl Funds {
    /// The table shipped with the code.
    pub fn builtin() -> Self {
        // The shipped file is tested below, so this cannot fail at run time.
        Self::parse(BUILTIN).unwrap_or_else(|e| panic!("shipped funds table is invalid: {e}"))
    }

    /// Parses a table: `code;name;kind;department` per line, `#` comments.
    pub fn parse(text: &str) -> Result<Self, FundError> {
        let mut by_code = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| FundError::BadTable {
                line: i + 1,
                message: message.to_string(),
            };
            let cols: Vec<&str> = line.split(';').collect();
            if cols.len() != 4 {
                return Err(bad("expected 4 columns: code;name;kind;department"));
            }
            let code = FundCode::parse(cols[0]).map_err(|_| bad("bad fund code"))?;
            let kind = match cols[2] {
                "cpam" => FundKind::Cpam,
                "cgss" => FundKind::Cgss,
                "css" => FundKind::Css,
                _ => return Err(bad("kind must be cpam, cgss or css")),
            };
            let department = Department::parse(cols[3]).map_err(|_| bad("bad department"))?;
            let fund = Fund {
                code: code.clone(),
                name: cols[1].to_string(),
                kind,
                department,
            };
            if by_code.insert(code, fund).is_some() {
                return Err(bad("duplicate fund code"));
            }
        }
        Ok(Funds { by_code })
    }

    pub fn get(&self, code: &FundCode) -> Option<&Fund> {
        self.by_code.get(code)
    }

    /// Parses a code and checks it names a known fund.
    pub fn lookup(&self, code: &str) -> Result<&Fund, FundError> {
        let code = FundCode::parse(code)?;
        self.by_code.get(&code).ok_or(FundError::Unknown)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fund> {
        self.by_code.values()
    }

    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Territory;

    #[test]
    fn builtin_table_is_valid_and_covers_every_territory_served() {
        let funds = Funds::parse(BUILTIN).expect("builtin table parses");
        assert_eq!(funds.len(), 105);
        let overseas: Vec<_> = funds
            .iter()
            .filter(|f| f.kind != FundKind::Cpam)
            .map(|f| f.department.territory())
            .collect();
        assert_eq!(
            overseas,
            vec![
                Territory::GP,
                Territory::MQ,
                Territory::GF,
                Territory::RE,
                Territory::YT
            ]
        );
        assert_eq!(funds.lookup("751").map(|f| f.kind), Ok(FundKind::Cpam));
        assert_eq!(funds.lookup("976").map(|f| f.kind), Ok(FundKind::Css));
    }

    #[test]
    fn codes_are_three_digits_and_must_be_known() {
        let funds = Funds::builtin();
        assert_eq!(funds.lookup("75").err(), Some(FundError::BadCode));
        assert_eq!(funds.lookup("75a").err(), Some(FundError::BadCode));
        assert_eq!(funds.lookup("*.>").err(), Some(FundError::BadCode));
        assert_eq!(funds.lookup("000").err(), Some(FundError::Unknown));
    }

    #[test]
    fn bad_tables_name_the_line() {
        let err = Funds::parse("# c\n751;Paris;cpam;75\n751;Paris;cpam;75\n").unwrap_err();
        assert_eq!(
            err,
            FundError::BadTable {
                line: 3,
                message: "duplicate fund code".into()
            }
        );
        assert!(Funds::parse("751;Paris;mutuelle;75").is_err());
    }
}
