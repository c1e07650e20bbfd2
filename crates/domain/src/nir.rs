//! NIR (numéro d'inscription au répertoire, "numéro de sécurité sociale") and birth-date checks.
//!
//! Layout of the 13-character body: sex (1), year (2), month (2), birth place (5), order (3),
//! optionally followed by the 2-digit key. Birth place is department (2) + commune (3) in
//! metropolitan France (Corsica `2A`/`2B`, or `20` for people born there before 1976),
//! department (3) + commune (2) overseas (`97x`/`98x`), and `99` + country code for people born
//! abroad.
//!
//! Key = 97 − (N mod 97) where N is the 13-character body read as a number after replacing the
//! Corsican department `2A` by `19` and `2B` by `18`.
//!
//! Accepted input: 13 characters (no key: valid when the structure is right, as CNAM's own
//! validator does) or 15 characters (key checked). Spaces, dots, dashes, tabs and non-breaking
//! spaces are ignored; letters are upper-cased.
//!
//! Sex digit `1`/`2` is a NIR; `7`/`8` is a temporary number (old NNP provisional numbers, and
//! NIA-style temporary numbers). NNP numbers do not carry a birth date (digits 2–13 are a check
//! digit, a fund code and an order number), so for `7`/`8` only the characters and the key are
//! checked, not the month or the birth place.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether the number is a definitive NIR or a temporary one (NIA/NNP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NirKind {
    /// Sex digit 1 or 2.
    Nir,
    /// Sex digit 7 or 8: temporary number (NNP, NIA).
    Temporary,
}

/// A structurally valid NIR, normalised (no separators, upper-case, 13 or 15 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nir {
    normalized: String,
    kind: NirKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NirError {
    #[error("a NIR has 13 characters (without key) or 15 (with key)")]
    BadLength,
    #[error("a NIR contains only digits, except 2A/2B for Corsica in the birth department")]
    BadCharacter,
    #[error("the first digit (sex) must be 1 or 2 (or 7/8 for a temporary number)")]
    BadSex,
    #[error("birth month must be 01-12, or 20-99 when unknown")]
    BadMonth,
    #[error("birth department is not a valid code")]
    BadDepartment,
    #[error("the control key does not match the number")]
    KeyMismatch,
}

impl NirError {
    pub fn code(&self) -> &'static str {
        match self {
            NirError::BadLength => "nir.bad_length",
            NirError::BadCharacter => "nir.bad_character",
            NirError::BadSex => "nir.bad_sex",
            NirError::BadMonth => "nir.bad_month",
            NirError::BadDepartment => "nir.bad_department",
            NirError::KeyMismatch => "nir.key_mismatch",
        }
    }
}

/// Characters ignored in identifiers typed by people: spaces, dots, dashes, tabs, NBSP.
pub(crate) fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '.' | '-' | '\t' | '\u{a0}' | '\u{202f}')
}

/// Computes the 2-digit key (1..=97) of a 13-character NIR body.
/// Returns `None` when the body is not 13 characters of digits (with optional `2A`/`2B` at
/// positions 6–7).
pub fn nir_key(body: &str) -> Option<u8> {
    let b = body.as_bytes();
    if b.len() != 13 {
        return None;
    }
    let mut n: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let d = match (i, c) {
            (5, b'2') if matches!(b[6], b'A' | b'a' | b'B' | b'b') => 1,
            (6, b'A' | b'a') if b[5] == b'2' => 9,
            (6, b'B' | b'b') if b[5] == b'2' => 8,
            (_, c) if c.is_ascii_digit() => u64::from(c - b'0'),
            _ => return None,
        };
        n = n * 10 + d;
    }
    // 97 - (n mod 97) is in 1..=97.
    u8::try_from(97 - n % 97).ok()
}

impl Nir {
    /// Parses and validates a NIR (see the module documentation for the rules).
    pub fn parse(input: &str) -> Result<Nir, NirError> {
        let s: String = input
            .chars()
            .filter(|c| !is_separator(*c))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let len = s.chars().count();
        if len != 13 && len != 15 {
            return Err(NirError::BadLength);
        }
        let b = s.as_bytes();
        if b.len() != len {
            // non-ASCII characters
            return Err(NirError::BadCharacter);
        }
        let corsica = b[5] == b'2' && matches!(b[6], b'A' | b'B');
        for (i, c) in b.iter().enumerate() {
            let ok = c.is_ascii_digit() || (corsica && i == 6);
            if !ok {
                return Err(NirError::BadCharacter);
            }
        }
        let kind = match b[0] {
            b'1' | b'2' => NirKind::Nir,
            b'7' | b'8' => NirKind::Temporary,
            _ => return Err(NirError::BadSex),
        };
        if kind == NirKind::Nir {
            let month = two_digits(b[3], b[4]);
            if month == 0 || (13..=19).contains(&month) {
                return Err(NirError::BadMonth);
            }
            if !corsica && two_digits(b[5], b[6]) == 0 {
                return Err(NirError::BadDepartment);
            }
        }
        if len == 15 {
            let key = two_digits(b[13], b[14]);
            if nir_key(&s[..13]) != Some(key) {
                return Err(NirError::KeyMismatch);
            }
        }
        Ok(Nir {
            normalized: s,
            kind,
        })
    }

    /// Normalised form: 15 characters when a key was given, 13 otherwise.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The 13-character body (without key).
    pub fn body(&self) -> &str {
        &self.normalized[..13]
    }

    /// The key, given or computed.
    pub fn key(&self) -> u8 {
        if self.normalized.len() == 15 {
            two_digits(
                self.normalized.as_bytes()[13],
                self.normalized.as_bytes()[14],
            )
        } else {
            nir_key(self.body()).unwrap_or(0)
        }
    }

    /// Whether the input carried its key.
    pub fn has_key(&self) -> bool {
        self.normalized.len() == 15
    }

    /// The full 15-character form, with the key computed when it was not given.
    pub fn with_key(&self) -> String {
        format!("{}{:02}", self.body(), self.key())
    }

    pub fn kind(&self) -> NirKind {
        self.kind
    }

    pub fn is_temporary(&self) -> bool {
        self.kind == NirKind::Temporary
    }

    /// 1 (man) or 2 (woman) for a NIR; `None` for a temporary number.
    pub fn sex_digit(&self) -> Option<u8> {
        match self.kind {
            NirKind::Nir => Some(self.normalized.as_bytes()[0] - b'0'),
            NirKind::Temporary => None,
        }
    }

    /// Two-digit birth year (`None` for temporary numbers).
    pub fn birth_year_2(&self) -> Option<u8> {
        let b = self.normalized.as_bytes();
        (self.kind == NirKind::Nir).then(|| two_digits(b[1], b[2]))
    }

    /// Birth month 1..=12, `None` when unknown (20–99) or for temporary numbers.
    pub fn birth_month(&self) -> Option<u8> {
        let b = self.normalized.as_bytes();
        let m = two_digits(b[3], b[4]);
        (self.kind == NirKind::Nir && (1..=12).contains(&m)).then_some(m)
    }

    /// Birth department as written in the NIR: `2A`, `2B`, `01`..`96`, `97x`/`98x` (3 digits),
    /// or `99` (born abroad). `None` for temporary numbers.
    pub fn birth_department(&self) -> Option<&str> {
        if self.kind != NirKind::Nir {
            return None;
        }
        let place = &self.normalized[5..7];
        if place == "97" || place == "98" {
            Some(&self.normalized[5..8])
        } else {
            Some(place)
        }
    }

    /// Whether a birth date is consistent with the year and month encoded in the NIR.
    /// Always true for temporary numbers; the month is ignored when unknown.
    pub fn matches_birth_date(&self, birth: NaiveDate) -> bool {
        let Some(yy) = self.birth_year_2() else {
            return true;
        };
        if birth.year().rem_euclid(100) != i32::from(yy) {
            return false;
        }
        match self.birth_month() {
            Some(m) => birth.month() == u32::from(m),
            None => true,
        }
    }
}

impl fmt::Display for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

impl std::str::FromStr for Nir {
    type Err = NirError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Nir::parse(s)
    }
}

fn two_digits(a: u8, b: u8) -> u8 {
    (a.wrapping_sub(b'0'))
        .wrapping_mul(10)
        .wrapping_add(b.wrapping_sub(b'0'))
}

// ---------------------------------------------------------------------------------------------
// Birth dates
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BirthDateError {
    #[error("birth date is in the future")]
    InFuture,
    #[error("age is below the minimum plausible age")]
    TooYoung,
    #[error("age is above the maximum plausible age")]
    TooOld,
    #[error("the stated age does not match the birth date")]
    AgeMismatch,
}

impl BirthDateError {
    pub fn code(&self) -> &'static str {
        match self {
            BirthDateError::InFuture => "birth_date.in_future",
            BirthDateError::TooYoung => "birth_date.too_young",
            BirthDateError::TooOld => "birth_date.too_old",
            BirthDateError::AgeMismatch => "birth_date.age_mismatch",
        }
    }
}

/// Age in completed years on `today` (0 when `birth` is after `today`).
/// A person born on 29 February has their birthday on 1 March in common years.
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> u32 {
    if birth > today {
        return 0;
    }
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

/// Birth date not in the future and age (in completed years on `today`) within
/// `min_age..=max_age`.
pub fn check_birth_date(
    birth: NaiveDate,
    today: NaiveDate,
    min_age: u32,
    max_age: u32,
) -> Result<(), BirthDateError> {
    if birth > today {
        return Err(BirthDateError::InFuture);
    }
    let age = age_on(birth, today);
    if age < min_age {
        return Err(BirthDateError::TooYoung);
    }
    if age > max_age {
        return Err(BirthDateError::TooOld);
    }
    Ok(())
}

/// A child's stated age must equal the age computed from the birth date on `today`.
pub fn check_child_age(age: u32, birth: NaiveDate, today: NaiveDate) -> Result<(), BirthDateError> {
    if birth > today {
        return Err(BirthDateError::InFuture);
    }
    if age_on(birth, today) != age {
        return Err(BirthDateError::AgeMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    #[test]
    fn domain_examples() {
        let n = Nir::parse("255081416802538").expect("valid");
        assert_eq!(n.as_str(), "255081416802538");
        assert_eq!(n.kind(), NirKind::Nir);
        assert_eq!(n.key(), 38);
        assert_eq!(
            Nir::parse("2 55 08 14 168 025 00"),
            Err(NirError::KeyMismatch)
        );
        assert!(Nir::parse("253072B07300470").is_ok());
        assert!(Nir::parse("253072A07300443").is_ok());
        assert!(Nir::parse("253072a07300443").is_ok());
        assert_eq!(
            Nir::parse("253072a07300443").map(|n| n.as_str().to_string()),
            Ok("253072A07300443".to_string())
        );
    }

    #[test]
    fn corsica_substitution_is_numeric() {
        assert_eq!(nir_key("253072A073004"), Some(43));
        assert_eq!(nir_key("253072B073004"), Some(70));
        // swapping A and B changes the key
        assert_eq!(Nir::parse("253072B07300443"), Err(NirError::KeyMismatch));
    }

    #[test]
    fn without_key() {
        let n = Nir::parse("2550814168025").expect("13 chars ok");
        assert!(!n.has_key());
        assert_eq!(n.as_str(), "2550814168025");
        assert_eq!(n.with_key(), "255081416802538");
    }

    #[test]
    fn separators() {
        assert!(Nir::parse("2.55.08.14.168.025.38").is_ok());
        assert!(Nir::parse("2-55-08-14-168-025-38").is_ok());
        assert!(Nir::parse(" 2 55 08 14 168 025 38 ").is_ok());
    }

    #[test]
    fn lengths() {
        assert_eq!(Nir::parse(""), Err(NirError::BadLength));
        assert_eq!(Nir::parse("25508141680253"), Err(NirError::BadLength));
        assert_eq!(Nir::parse("2550814168025381"), Err(NirError::BadLength));
        assert_eq!(Nir::parse("25508141680"), Err(NirError::BadLength));
    }

    #[test]
    fn characters() {
        assert_eq!(Nir::parse("25508141680X538"), Err(NirError::BadCharacter));
        assert_eq!(Nir::parse("255081416802é"), Err(NirError::BadCharacter));
        assert_eq!(Nir::parse("255082C16802538"), Err(NirError::BadCharacter));
        assert_eq!(Nir::parse("255083A16802538"), Err(NirError::BadCharacter));
        assert_eq!(Nir::parse("2550814168025AB"), Err(NirError::BadCharacter));
    }

    #[test]
    fn sex_digit() {
        for s in ["0", "3", "4", "5", "6", "9"] {
            let body = format!("{s}550814168025");
            assert_eq!(Nir::parse(&body), Err(NirError::BadSex), "{body}");
        }
        let t = Nir::parse("7550814168025").expect("temporary");
        assert!(t.is_temporary());
        assert_eq!(t.sex_digit(), None);
        let t = Nir::parse("8123456789012").expect("NNP shape");
        assert_eq!(t.kind(), NirKind::Temporary);
        // NNP: no birth-date semantics, months like 00 are fine
        assert!(Nir::parse("7100012345678").is_ok());
    }

    #[test]
    fn months() {
        for m in 1..=12 {
            let body = format!("155{m:02}14168025");
            assert!(Nir::parse(&body).is_ok(), "{body}");
        }
        for m in 20..=99 {
            let body = format!("155{m:02}14168025");
            assert!(Nir::parse(&body).is_ok(), "{body}");
        }
        for m in [0, 13, 14, 15, 16, 17, 18, 19] {
            let body = format!("155{m:02}14168025");
            assert_eq!(Nir::parse(&body), Err(NirError::BadMonth), "{body}");
        }
    }

    #[test]
    fn departments() {
        assert_eq!(Nir::parse("1550800168025"), Err(NirError::BadDepartment));
        let overseas = Nir::parse("1550897123025").expect("971");
        assert_eq!(overseas.birth_department(), Some("971"));
        let abroad = Nir::parse("1550899350025").expect("abroad");
        assert_eq!(abroad.birth_department(), Some("99"));
        assert_eq!(
            Nir::parse("1550820004025")
                .expect("old Corsica")
                .birth_department(),
            Some("20")
        );
        assert_eq!(
            Nir::parse("253072A07300443")
                .expect("2A")
                .birth_department(),
            Some("2A")
        );
    }

    #[test]
    fn accessors() {
        let n = Nir::parse("255081416802538").expect("valid");
        assert_eq!(n.sex_digit(), Some(2));
        assert_eq!(n.birth_year_2(), Some(55));
        assert_eq!(n.birth_month(), Some(8));
        assert!(n.matches_birth_date(d(1955, 8, 12)));
        assert!(!n.matches_birth_date(d(1955, 9, 12)));
        assert!(!n.matches_birth_date(d(1956, 8, 12)));
        let unknown_month = Nir::parse("2553014168025").expect("valid");
        assert_eq!(unknown_month.birth_month(), None);
        assert!(unknown_month.matches_birth_date(d(1955, 3, 1)));
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(NirError::KeyMismatch.code(), "nir.key_mismatch");
        assert_eq!(NirError::BadLength.code(), "nir.bad_length");
        assert_eq!(NirError::BadSex.code(), "nir.bad_sex");
        assert_eq!(NirError::BadMonth.code(), "nir.bad_month");
        assert_eq!(NirError::BadDepartment.code(), "nir.bad_department");
        assert_eq!(NirError::BadCharacter.code(), "nir.bad_character");
    }

    #[test]
    fn birth_dates() {
        let today = d(2025, 6, 15);
        assert_eq!(check_birth_date(d(1980, 1, 1), today, 0, 120), Ok(()));
        assert_eq!(
            check_birth_date(d(2025, 6, 16), today, 0, 120),
            Err(BirthDateError::InFuture)
        );
        assert_eq!(check_birth_date(d(2025, 6, 15), today, 0, 120), Ok(()));
        assert_eq!(
            check_birth_date(d(1900, 1, 1), today, 0, 120),
            Err(BirthDateError::TooOld)
        );
        assert_eq!(
            check_birth_date(d(2010, 1, 1), today, 18, 120),
            Err(BirthDateError::TooYoung)
        );
        assert_eq!(age_on(d(2007, 6, 16), today), 17);
        assert_eq!(age_on(d(2007, 6, 15), today), 18);
        assert_eq!(check_birth_date(d(2007, 6, 15), today, 18, 120), Ok(()));
        assert_eq!(age_on(d(2004, 2, 29), d(2025, 2, 28)), 20);
        assert_eq!(age_on(d(2004, 2, 29), d(2025, 3, 1)), 21);
        assert_eq!(check_child_age(6, d(2019, 1, 10), today), Ok(()));
        assert_eq!(
            check_child_age(5, d(2019, 1, 10), today),
            Err(BirthDateError::AgeMismatch)
        );
        assert_eq!(
            check_child_age(0, d(2026, 1, 10), today),
            Err(BirthDateError::InFuture)
        );
        assert_eq!(BirthDateError::InFuture.code(), "birth_date.in_future");
    }

    fn body_strategy() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just('1'), Just('2')],
            0u8..100,
            prop_oneof![1u8..13, 20u8..100],
            prop_oneof![
                (1u8..100).prop_map(|d| format!("{d:02}")),
                Just("2A".to_string()),
                Just("2B".to_string())
            ],
            0u16..1000,
            0u16..1000,
        )
            .prop_map(|(s, y, m, dep, c, o)| format!("{s}{y:02}{m:02}{dep}{c:03}{o:03}"))
    }

    proptest! {
        #[test]
        fn body_with_computed_key_validates(body in body_strategy()) {
            let key = nir_key(&body).expect("13 chars");
            prop_assert!((1..=97).contains(&key));
            let full = format!("{body}{key:02}");
            prop_assert!(Nir::parse(&full).is_ok());
            prop_assert!(Nir::parse(&body).is_ok());
        }

        #[test]
        fn altering_one_digit_breaks_the_key(body in body_strategy(), pos in 0usize..15, delta in 1u8..10) {
            let key = nir_key(&body).expect("13 chars");
            let full = format!("{body}{key:02}");
            let mut bytes = full.into_bytes();
            prop_assume!(bytes[pos].is_ascii_digit());
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let altered = String::from_utf8(bytes).expect("ascii");
            prop_assert!(Nir::parse(&altered).is_err(), "{}", altered);
        }

        #[test]
        fn separators_never_change_the_result(body in body_strategy(), seps in proptest::collection::vec(prop_oneof![Just(" "), Just("."), Just("-"), Just("")], 15)) {
            let key = nir_key(&body).expect("13 chars");
            let full = format!("{body}{key:02}");
            let noisy: String = full.chars().zip(seps.iter()).map(|(c, s)| format!("{c}{s}")).collect();
            prop_assert_eq!(Nir::parse(&noisy), Nir::parse(&full));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = Nir::parse(&s);
            let _ = nir_key(&s);
        }

        #[test]
        fn never_panics_on_near_nirs(s in "[0-9A-Ba-b .-]{10,20}") {
            let _ = Nir::parse(&s);
        }

        #[test]
        fn child_age_consistent(y in 2000i32..2025, m in 1u32..13, day in 1u32..29) {
            let today = d(2025, 6, 15);
            let birth = d(y, m, day);
            let age = age_on(birth, today);
            prop_assert_eq!(check_child_age(age, birth, today), Ok(()));
            prop_assert_eq!(check_birth_date(birth, today, age, age), Ok(()));
        }
    }
}
