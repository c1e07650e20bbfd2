//! Health-professional identifiers.
//!
//! * **RPPS**: 11 digits. Many published RPPS numbers end with a Luhn check digit, but no official
//!   document states it (DOMAIN.md: open question), so any 11 digits are accepted and
//!   [`Rpps::luhn_ok`] only reports whether the Luhn check holds.
//! * **ADELI** and the **Assurance Maladie PS number** (numéro PS / AM): 9 digits, treated as opaque
//!   digits (their inner structure — department, profession, order, key — is not relied upon).
//!
//! Input may contain spaces, dots, dashes, tabs or non-breaking spaces; normalised form is digits.

use crate::company::{luhn_valid, strip_separators};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PsNumberError {
    #[error("an RPPS number has 11 digits")]
    RppsBadLength,
    #[error("an RPPS number contains only digits")]
    RppsNotDigits,
    #[error("an ADELI or Assurance Maladie PS number has 9 digits")]
    AdeliBadLength,
    #[error("an ADELI or Assurance Maladie PS number contains only digits")]
    AdeliNotDigits,
}

impl PsNumberError {
    pub fn code(&self) -> &'static str {
        match self {
            PsNumberError::RppsBadLength => "rpps.bad_length",
            PsNumberError::RppsNotDigits => "rpps.not_digits",
            PsNumberError::AdeliBadLength => "adeli.bad_length",
            PsNumberError::AdeliNotDigits => "adeli.not_digits",
        }
    }
}

/// RPPS number (11 digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rpps(String);

impl Rpps {
    pub fn parse(input: &str) -> Result<Rpps, PsNumberError> {
        let s = strip_separators(input);
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(PsNumberError::RppsNotDigits);
        }
        if s.len() != 11 {
            return Err(PsNumberError::RppsBadLength);
        }
        Ok(Rpps(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the last digit is a Luhn check digit over the 11 digits. Informative only: the
    /// key is widely used but not officially documented, so a `false` does not invalidate.
    pub fn luhn_ok(&self) -> bool {
        luhn_valid(&self.0)
    }
}

impl fmt::Display for Rpps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// ADELI number or Assurance Maladie PS number (9 opaque digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Adeli(String);

/// The Assurance Maladie PS number has the same shape as an ADELI number.
pub type AmPsNumber = Adeli;

impl Adeli {
    pub fn parse(input: &str) -> Result<Adeli, PsNumberError> {
        let s = strip_separators(input);
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(PsNumberError::AdeliNotDigits);
        }
        if s.len() != 9 {
            return Err(PsNumberError::AdeliBadLength);
        }
        Ok(Adeli(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Adeli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Any PS number: 11 digits → RPPS, 9 digits → ADELI / AM PS number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PsNumber {
    Rpps(Rpps),
    Adeli(Adeli),
}

impl PsNumber {
    pub fn parse(input: &str) -> Result<PsNumber, PsNumberError> {
        let s = strip_separators(input);
        if s.len() == 11 {
            Rpps::parse(&s).map(PsNumber::Rpps)
        } else {
            Adeli::parse(&s).map(PsNumber::Adeli)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PsNumber::Rpps(r) => r.as_str(),
            PsNumber::Adeli(a) => a.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rpps() {
        let r = Rpps::parse("10003 456 789").expect("11 digits");
        assert_eq!(r.as_str(), "10003456789");
        assert_eq!(Rpps::parse("1000345678"), Err(PsNumberError::RppsBadLength));
        assert_eq!(
            Rpps::parse("100034567890"),
            Err(PsNumberError::RppsBadLength)
        );
        assert_eq!(
            Rpps::parse("1000345678A"),
            Err(PsNumberError::RppsNotDigits)
        );
        assert_eq!(Rpps::parse(""), Err(PsNumberError::RppsBadLength));
        let k = crate::company::luhn_check_digit("1000345678").expect("digits");
        assert!(Rpps::parse(&format!("1000345678{k}"))
            .expect("digits")
            .luhn_ok());
        let wrong = (k + 1) % 10;
        let r = Rpps::parse(&format!("1000345678{wrong}")).expect("any 11 digits");
        assert!(!r.luhn_ok());
        assert_eq!(PsNumberError::RppsBadLength.code(), "rpps.bad_length");
    }

    #[test]
    fn adeli() {
        assert_eq!(
            Adeli::parse("75 1 23456 7").map(|a| a.to_string()),
            Ok("751234567".into())
        );
        assert_eq!(Adeli::parse("75123456"), Err(PsNumberError::AdeliBadLength));
        assert_eq!(
            Adeli::parse("7512345A7"),
            Err(PsNumberError::AdeliNotDigits)
        );
        assert_eq!(PsNumberError::AdeliNotDigits.code(), "adeli.not_digits");
    }

    #[test]
    fn any_ps_number() {
        assert!(matches!(
            PsNumber::parse("10003456789"),
            Ok(PsNumber::Rpps(_))
        ));
        assert!(matches!(
            PsNumber::parse("751234567"),
            Ok(PsNumber::Adeli(_))
        ));
        assert!(PsNumber::parse("7512").is_err());
    }

    proptest! {
        #[test]
        fn any_11_digits_is_rpps(s in "[0-9]{11}") {
            prop_assert!(Rpps::parse(&s).is_ok());
        }

        #[test]
        fn any_9_digits_is_adeli(s in "[0-9]{9}") {
            prop_assert!(Adeli::parse(&s).is_ok());
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = Rpps::parse(&s);
            let _ = Adeli::parse(&s);
            let _ = PsNumber::parse(&s);
        }
    }
}
