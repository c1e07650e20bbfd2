//! SIREN (9 digits, Luhn) and SIRET (14 digits: SIREN + 5-digit establishment number, Luhn over
//! the 14 digits), with the La Poste exception: the establishments of La Poste (SIREN
//! `356000000`) carry SIRETs whose digit sum is a multiple of 5 instead of a Luhn key (the head
//! office `35600000000048` satisfies Luhn).
//!
//! Input may contain spaces, dots, dashes, tabs or non-breaking spaces (e.g. `732 829 320 00074`);
//! the normalised form is digits only.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The SIREN of La Poste.
pub const LA_POSTE_SIREN: &str = "356000000";

/// Luhn check over a string of ASCII digits (false when any character is not a digit or the
/// string is empty).
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Computes the Luhn check digit to append to `payload` (`None` if not all digits).
pub fn luhn_check_digit(payload: &str) -> Option<u8> {
    if !payload.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (0u8..10).find(|d| luhn_valid(&format!("{payload}{d}")))
}

pub(crate) fn strip_separators(input: &str) -> String {
    input
        .chars()
        .filter(|c| !crate::nir::is_separator(*c))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Siren(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SirenError {
    #[error("a SIREN has 9 digits")]
    BadLength,
    #[error("a SIREN contains only digits")]
    NotDigits,
    #[error("the SIREN fails the Luhn check")]
    Luhn,
}

impl SirenError {
    pub fn code(&self) -> &'static str {
        match self {
            SirenError::BadLength => "siren.bad_length",
            SirenError::NotDigits => "siren.not_digits",
            SirenError::Luhn => "siren.luhn",
        }
    }
}

impl Siren {
    pub fn parse(input: &str) -> Result<Siren, SirenError> {
        let s = strip_separators(input);
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(SirenError::NotDigits);
        }
        if s.len() != 9 {
            return Err(SirenError::BadLength);
        }
        if !luhn_valid(&s) {
            return Err(SirenError::Luhn);
        }
        Ok(Siren(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Siren {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Siret(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SiretError {
    #[error("a SIRET has 14 digits")]
    BadLength,
    #[error("a SIRET contains only digits")]
    NotDigits,
    #[error("the first 9 digits are not a valid SIREN")]
    BadSiren,
    #[error("the SIRET fails the Luhn check")]
    Luhn,
    #[error("a La Poste SIRET must have a digit sum that is a multiple of 5")]
    LaPosteSum,
}

impl SiretError {
    pub fn code(&self) -> &'static str {
        match self {
            SiretError::BadLength => "siret.bad_length",
            SiretError::NotDigits => "siret.not_digits",
            SiretError::BadSiren => "siret.bad_siren",
            SiretError::Luhn => "siret.luhn",
            SiretError::LaPosteSum => "siret.la_poste_sum",
        }
    }
}

impl Siret {
    pub fn parse(input: &str) -> Result<Siret, SiretError> {
        let s = strip_separators(input);
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(SiretError::NotDigits);
        }
        if s.len() != 14 {
            return Err(SiretError::BadLength);
        }
        if !luhn_valid(&s[..9]) {
            return Err(SiretError::BadSiren);
        }
        if s.starts_with(LA_POSTE_SIREN) && s != "35600000000048" {
            let sum: u32 = s.bytes().map(|b| u32::from(b - b'0')).sum();
            if !sum.is_multiple_of(5) {
                return Err(SiretError::LaPosteSum);
            }
        } else if !luhn_valid(&s) {
            return Err(SiretError::Luhn);
        }
        Ok(Siret(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn siren(&self) -> Siren {
        Siren(self.0[..9].to_string())
    }

    /// The 5-digit establishment number (NIC).
    pub fn nic(&self) -> &str {
        &self.0[9..]
    }
}

impl fmt::Display for Siret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn luhn_basics() {
        assert!(luhn_valid("732829320"));
        assert!(!luhn_valid("732829321"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("12a"));
        assert_eq!(luhn_check_digit("73282932"), Some(0));
        assert_eq!(luhn_check_digit("7a"), None);
    }

    #[test]
    fn sirens() {
        assert_eq!(
            Siren::parse("732 829 320").map(|s| s.to_string()),
            Ok("732829320".into())
        );
        assert!(Siren::parse("552100554").is_ok());
        assert!(Siren::parse("356000000").is_ok());
        assert_eq!(Siren::parse("732829321"), Err(SirenError::Luhn));
        assert_eq!(Siren::parse("73282932"), Err(SirenError::BadLength));
        assert_eq!(Siren::parse("7328293200"), Err(SirenError::BadLength));
        assert_eq!(Siren::parse(""), Err(SirenError::BadLength));
        assert_eq!(Siren::parse("73282932O"), Err(SirenError::NotDigits));
        assert_eq!(Siren::parse("７32829320"), Err(SirenError::NotDigits));
        assert_eq!(SirenError::Luhn.code(), "siren.luhn");
    }

    #[test]
    fn sirets() {
        let s = Siret::parse("732 829 320 00074").expect("valid");
        assert_eq!(s.as_str(), "73282932000074");
        assert_eq!(s.siren().as_str(), "732829320");
        assert_eq!(s.nic(), "00074");
        assert_eq!(Siret::parse("73282932000075"), Err(SiretError::Luhn));
        assert_eq!(Siret::parse("7328293200007"), Err(SiretError::BadLength));
        assert_eq!(Siret::parse("7328293200007x"), Err(SiretError::NotDigits));
        // first 9 digits not a SIREN (even if the 14 pass Luhn)
        let bad_siren_payload = "7328293210007";
        let d = luhn_check_digit(bad_siren_payload).expect("digits");
        let candidate = format!("{bad_siren_payload}{d}");
        assert!(luhn_valid(&candidate));
        assert_eq!(Siret::parse(&candidate), Err(SiretError::BadSiren));
        assert_eq!(SiretError::Luhn.code(), "siret.luhn");
    }

    #[test]
    fn la_poste() {
        assert!(Siret::parse("35600000000048").is_ok());
        assert!(Siret::parse("35600000049837").is_ok());
        assert_eq!(Siret::parse("35600000049838"), Err(SiretError::LaPosteSum));
        assert!(Siret::parse("35600000000100").is_ok());
        assert_eq!(SiretError::LaPosteSum.code(), "siret.la_poste_sum");
    }

    proptest! {
        #[test]
        fn generated_sirens_validate(payload in "[0-9]{8}") {
            let d = luhn_check_digit(&payload).expect("digits");
            let siren = format!("{payload}{d}");
            prop_assert!(Siren::parse(&siren).is_ok());
            let wrong = format!("{payload}{}", (d + 1) % 10);
            prop_assert_eq!(Siren::parse(&wrong), Err(SirenError::Luhn));
        }

        #[test]
        fn generated_sirets_validate(payload in "[0-9]{8}", nic in "[0-9]{4}") {
            let d = luhn_check_digit(&payload).expect("digits");
            let siren = format!("{payload}{d}");
            prop_assume!(siren != LA_POSTE_SIREN);
            let body = format!("{siren}{nic}");
            let k = luhn_check_digit(&body).expect("digits");
            let siret = format!("{body}{k}");
            prop_assert!(Siret::parse(&siret).is_ok());
            let wrong = format!("{body}{}", (k + 1) % 10);
            prop_assert_eq!(Siret::parse(&wrong), Err(SiretError::Luhn));
        }

        #[test]
        fn formatting_noise_is_ignored(payload in "[0-9]{8}", seps in proptest::collection::vec(prop_oneof![Just(" "), Just("."), Just("")], 9)) {
            let d = luhn_check_digit(&payload).expect("digits");
            let siren = format!("{payload}{d}");
            let noisy: String = siren.chars().zip(seps.iter()).map(|(c, s)| format!("{c}{s}")).collect();
            prop_assert_eq!(Siren::parse(&noisy), Siren::parse(&siren));
        }

        #[test]
        fn la_poste_rule(nic in "[0-9]{5}") {
            let s = format!("{LA_POSTE_SIREN}{nic}");
            let sum: u32 = s.bytes().map(|b| u32::from(b - b'0')).sum();
            let expected = sum.is_multiple_of(5) || s == "35600000000048";
            prop_assert_eq!(Siret::parse(&s).is_ok(), expected);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = Siren::parse(&s);
            let _ = Siret::parse(&s);
            let _ = luhn_valid(&s);
            let _ = luhn_check_digit(&s);
        }
    }
}
