//! Subject and stream names. The contract (README "Subjects") is:
//! `cnmas.in.v1.<fund>.<kind>` (funds publish), `cnmas.evt.v1.<service>.<event>` (internal),
//! `cnmas.out.v1.<fund>.<kind>` (funds consume), `cnmas.dlq.v1.<service>.<consumer>`.

use std::fmt;

/// A prefix for every subject, stream and consumer. Empty in production; `[A-Za-z0-9_-]{1,32}`
/// otherwise (e.g. one per test, or `staging`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace(String);

#[derive(Debug, thiserror::Error)]
#[error("namespace must be 0-32 characters of [A-Za-z0-9_-]")]
pub struct BadNamespace;

impl Namespace {
    pub fn new(ns: &str) -> Result<Self, BadNamespace> {
        if ns.len() <= 32
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(Namespace(ns.to_string()))
        } else {
            Err(BadNamespace)
        }
    }

    /// A fresh random namespace, for tests.
    pub fn random() -> Self {
        Namespace(
            format!("t{}", uuid::Uuid::new_v4().simple())
                .chars()
                .take(20)
                .collect(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full subject for a contract subject.
    pub fn subject(&self, subject: &str) -> String {
        if self.0.is_empty() {
            subject.to_string()
        } else {
            format!("{}.{}", self.0, subject)
        }
    }

    /// Removes the namespace from a received subject.
    pub fn strip<'a>(&self, subject: &'a str) -> &'a str {
        if self.0.is_empty() {
            subject
        } else {
            subject
                .strip_prefix(self.0.as_str())
                .and_then(|s| s.strip_prefix('.'))
                .unwrap_or(subject)
        }
    }

    /// Stream names cannot contain dots; they get `<NS>_` in front.
    pub fn stream(&self, base: &str) -> String {
        if self.0.is_empty() {
            format!("CNMAS_{base}")
        } else {
            format!("{}_CNMAS_{base}", self.0)
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fund publishes here (`kind`: `contact`, `consent`).
pub fn fund_in(fund: &str, kind: &str) -> String {
    format!("cnmas.in.v1.{fund}.{kind}")
}

/// A fund consumes here (`kind`: `result`, `rejection`, `follow_up`, `contact_change`).
pub fn fund_out(fund: &str, kind: &str) -> String {
    format!("cnmas.out.v1.{fund}.{kind}")
}

/// Internal events of a service.
pub fn event(service: &str, event: &str) -> String {
    format!("cnmas.evt.v1.{service}.{event}")
}

/// Where a consumer's poison messages go.
pub fn dead_letter(service: &str, consumer: &str) -> String {
    format!("cnmas.dlq.v1.{service}.{consumer}")
}

/// The `<fund>` token of a `cnmas.in.v1.<fund>.<kind>` or `cnmas.out.v1.<fund>.<kind>` subject.
pub fn fund_of(subject: &str) -> Option<&str> {
    let mut parts = subject.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("cnmas"), Some("in" | "out"), Some("v1"), Some(fund)) => Some(fund),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_subjects_and_streams() {
        let ns = Namespace::new("t1").unwrap();
        assert_eq!(
            ns.subject(&fund_in("751", "contact")),
            "t1.cnmas.in.v1.751.contact"
        );
        assert_eq!(
            ns.strip("t1.cnmas.in.v1.751.contact"),
            "cnmas.in.v1.751.contact"
        );
        assert_eq!(ns.stream("IN"), "t1_CNMAS_IN");
        let prod = Namespace::default();
        assert_eq!(
            prod.subject("cnmas.out.v1.751.result"),
            "cnmas.out.v1.751.result"
        );
        assert_eq!(prod.stream("OUT"), "CNMAS_OUT");
        assert!(Namespace::new("a.b").is_err());
        assert!(Namespace::new("*").is_err());
        assert!(Namespace::random().as_str().len() <= 20);
    }

    #[test]
    fn fund_token() {
        assert_eq!(fund_of("cnmas.in.v1.751.contact"), Some("751"));
        assert_eq!(fund_of("cnmas.out.v1.971.result"), Some("971"));
        assert_eq!(fund_of("cnmas.evt.v1.intake.contact_accepted"), None);
    }
}
