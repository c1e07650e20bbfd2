//! Pragmatic e-mail syntax check (not full RFC 5322: no quoted local parts, comments or IP
//! literals, no internationalised addresses).
//!
//! Rules: surrounding whitespace is trimmed; exactly one `@`; local part 1–64 characters of
//! `A-Z a-z 0-9 ! # $ % & ' * + / = ? ^ _ ` { | } ~ - .` without a leading, trailing or doubled
//! dot; domain of at least two dot-separated labels, each 1–63 characters of `[A-Za-z0-9-]` not
//! starting or ending with `-`, the last label not all digits; whole address ≤ 254 characters.
//! Normalised form: trimmed, domain lower-cased, local part kept as typed (it may be
//! case-sensitive).

use once_cell::sync::Lazy;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Email(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than 254 characters")]
    TooLong,
    #[error("the address has no @")]
    MissingAt,
    #[error("the address has more than one @")]
    MultipleAt,
    #[error("the part before @ is empty")]
    EmptyLocal,
    #[error("the part before @ is longer than 64 characters")]
    LocalTooLong,
    #[error("the part before @ contains a forbidden character or misplaced dot")]
    BadLocal,
    #[error("the domain needs at least one dot")]
    DomainWithoutDot,
    #[error("a domain label is empty, too long, or contains a forbidden character")]
    BadDomain,
}

impl EmailError {
    pub fn code(&self) -> &'static str {
        match self {
            EmailError::Empty => "email.empty",
            EmailError::TooLong => "email.too_long",
            EmailError::MissingAt => "email.missing_at",
            EmailError::MultipleAt => "email.multiple_at",
            EmailError::EmptyLocal => "email.empty_local",
            EmailError::LocalTooLong => "email.local_too_long",
            EmailError::BadLocal => "email.bad_local",
            EmailError::DomainWithoutDot => "email.domain_without_dot",
            EmailError::BadDomain => "email.bad_domain",
        }
    }
}

static LOCAL_RE: Lazy<Regex> = Lazy::new(|| {
    Regex::new(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
        .unwrap_or_else(|e| panic!("constant regex: {e}"))
});

static LABEL_RE: Lazy<Regex> = Lazy::new(|| {
    Regex::new(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
        .unwrap_or_else(|e| panic!("constant regex: {e}"))
});

impl Email {
    pub fn parse(input: &str) -> Result<Email, EmailError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        let mut parts = s.split('@');
        let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(d), None) => (l, d),
            (Some(_), None, _) => return Err(EmailError::MissingAt),
            _ => return Err(EmailError::MultipleAt),
        };
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        if local.chars().count() > 64 {
            return Err(EmailError::LocalTooLong);
        }
        if !LOCAL_RE.is_match(local) {
            return Err(EmailError::BadLocal);
        }
        if !domain.contains('.') {
            return Err(EmailError::DomainWithoutDot);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if !labels.iter().all(|l| LABEL_RE.is_match(l)) {
            return Err(EmailError::BadDomain);
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(EmailError::BadDomain);
        }
        Ok(Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or("")
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> String {
        Email::parse(s)
            .map(|e| e.to_string())
            .unwrap_or_else(|e| format!("ERR {}", e.code()))
    }

    #[test]
    fn valid_addresses() {
        assert_eq!(ok("  Jean.Dupont@Example.FR "), "Jean.Dupont@example.fr");
        assert_eq!(ok("a@b.co"), "a@b.co");
        assert_eq!(
            ok("first+tag@sub.domain.assurance-maladie.fr"),
            "first+tag@sub.domain.assurance-maladie.fr"
        );
        assert_eq!(ok("o'neil@x.ie"), "o'neil@x.ie");
        assert_eq!(ok("x_y-z@a1.b2.com"), "x_y-z@a1.b2.com");
        let e = Email::parse("Jean@Example.fr").expect("valid");
        assert_eq!(e.local_part(), "Jean");
        assert_eq!(e.domain(), "example.fr");
    }

    #[test]
    fn invalid_addresses() {
        assert_eq!(ok(""), "ERR email.empty");
        assert_eq!(ok("   "), "ERR email.empty");
        assert_eq!(ok("jean.dupont.fr"), "ERR email.missing_at");
        assert_eq!(ok("a@b@c.fr"), "ERR email.multiple_at");
        assert_eq!(ok("@c.fr"), "ERR email.empty_local");
        assert_eq!(
            ok(&format!("{}@c.fr", "a".repeat(65))),
            "ERR email.local_too_long"
        );
        assert_eq!(
            ok(&format!("{}@c.fr", "a".repeat(64))),
            format!("{}@c.fr", "a".repeat(64))
        );
        assert_eq!(ok(".a@c.fr"), "ERR email.bad_local");
        assert_eq!(ok("a.@c.fr"), "ERR email.bad_local");
        assert_eq!(ok("a..b@c.fr"), "ERR email.bad_local");
        assert_eq!(ok("jean dupont@c.fr"), "ERR email.bad_local");
        assert_eq!(ok("jéan@c.fr"), "ERR email.bad_local");
        assert_eq!(ok("a@localhost"), "ERR email.domain_without_dot");
        assert_eq!(ok("a@"), "ERR email.domain_without_dot");
        assert_eq!(ok("a@-x.fr"), "ERR email.bad_domain");
        assert_eq!(ok("a@x-.fr"), "ERR email.bad_domain");
        assert_eq!(ok("a@x..fr"), "ERR email.bad_domain");
        assert_eq!(ok("a@.x.fr"), "ERR email.bad_domain");
        assert_eq!(ok("a@x.fr."), "ERR email.bad_domain");
        assert_eq!(ok("a@x_y.fr"), "ERR email.bad_domain");
        assert_eq!(ok("a@1.2.3.4"), "ERR email.bad_domain");
        assert_eq!(ok("a@exämple.fr"), "ERR email.bad_domain");
        assert_eq!(
            ok(&format!("a@{}.fr", "b".repeat(64))),
            "ERR email.bad_domain"
        );
        assert_eq!(
            ok(&format!("a@{}.fr", "b".repeat(63))),
            format!("a@{}.fr", "b".repeat(63))
        );
        let long = format!("a@{}.fr", vec!["b".repeat(60); 5].join("."));
        assert_eq!(ok(&long), "ERR email.too_long");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = Email::parse(&s);
        }

        #[test]
        fn generated_valid(local in "[a-z0-9]{1,20}(\\.[a-z0-9_+-]{1,10}){0,2}", domain in "[a-z0-9]{1,20}(-[a-z0-9]{1,5})?", tld in "[a-z]{2,6}") {
            let addr = format!("{local}@{domain}.{tld}");
            prop_assert_eq!(Email::parse(&addr).map(|e| e.to_string()), Ok(addr.clone()));
            let upper = format!("  {local}@{}.{}  ", domain.to_uppercase(), tld.to_uppercase());
            prop_assert_eq!(Email::parse(&upper).map(|e| e.to_string()), Ok(addr));
        }
    }
}
