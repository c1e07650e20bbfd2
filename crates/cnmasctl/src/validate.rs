//! `cnmasctl validate <kind> [VALUE ...]`: checks identifiers, phone numbers, e-mail addresses and
//! postal codes with the domain rules and prints one JSON object per value, in input order.
//!
//! Values come from the arguments, or one per line on standard input when none are given (an
//! empty line is an invalid value; a trailing `\r` is stripped). The exit status is 0 even when
//! values are invalid.
//!
//! Output keys, in this order: `kind`, `input`, `valid`, `normalized`, `reason` (null, or
//! `{"code", "message"}`), then for phones `line_type`, `territory`, `time_zone` and for postal
//! codes `department`, `territory`, `time_zone` (null when invalid).

use std::io::{BufWriter, Read, Write};

use anyhow::Context;
use cnmas_domain::company::{Siren, Siret};
use cnmas_domain::email::Email;
use cnmas_domain::geo::{Department, Postcode};
use cnmas_domain::nir::Nir;
use cnmas_domain::phone::FrenchPhone;
use cnmas_domain::professional::{Adeli, Rpps};
use serde::Serialize;

/// What to validate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// NIR (13 characters, or 15 with key)
    Nir,
    /// SIREN (9 digits, Luhn)
    Siren,
    /// SIRET (14 digits, Luhn, La Poste exception)
    Siret,
    /// RPPS (11 digits)
    Rpps,
    /// ADELI or Assurance Maladie PS number (9 digits)
    Adeli,
    /// French phone number (metropolitan or overseas), normalised to E.164
    Phone,
    /// E-mail address
    Email,
    /// French postal code, with its department and time zone
    Postcode,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Nir => "nir",
            Kind::Siren => "siren",
            Kind::Siret => "siret",
            Kind::Rpps => "rpps",
            Kind::Adeli => "adeli",
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::Postcode => "postcode",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// kind: nir|siren|siret|rpps|adeli|phone|email|postcode
    #[arg(value_enum)]
    pub kind: Kind,
    /// The person's department (e.g. 75, 2A, 971, 976), used to resolve ambiguous phone numbers.
    #[arg(long)]
    pub department: Option<String>,
    /// Values to check; one per line on standard input when none are given.
    pub values: Vec<String>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct Reason {
    code: &'static str,
    message: String,
}

/// One output line. Kind-specific fields are `None` (omitted) for other kinds, `Some(None)`
/// (null) when the value is invalid.
#[derive(Serialize, Debug, PartialEq, Eq)]
struct Outcome {
    kind: &'static str,
    input: String,
    valid: bool,
    normalized: Option<String>,
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_type: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    department: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    territory: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<Option<&'static str>>,
}

impl Outcome {
    fn new(kind: Kind, input: &str, result: Result<String, Reason>) -> Self {
        let (valid, normalized, reason) = match result {
            Ok(n) => (true, Some(n), None),
            Err(r) => (false, None, Some(r)),
        };
        Outcome {
            kind: kind.as_str(),
            input: input.to_string(),
            valid,
            normalized,
            reason,
            line_type: None,
            department: None,
            territory: None,
            time_zone: None,
        }
    }
}

fn reason<E: std::fmt::Display>(code: &'static str, err: E) -> Reason {
    Reason {
        code,
        message: err.to_string(),
    }
}

/// Validates one value. `department` is the person's department (phones only).
fn validate_one(kind: Kind, department: Option<&Department>, input: &str) -> Outcome {
    match kind {
        Kind::Nir => Outcome::new(
            kind,
            input,
            Nir::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Siren => Outcome::new(
            kind,
            input,
            Siren::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Siret => Outcome::new(
            kind,
            input,
            Siret::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Rpps => Outcome::new(
            kind,
            input,
            Rpps::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Adeli => Outcome::new(
            kind,
            input,
            Adeli::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Email => Outcome::new(
            kind,
            input,
            Email::parse(input)
                .map(|n| n.as_str().to_string())
                .map_err(|e| reason(e.code(), e)),
        ),
        Kind::Phone => {
            let home = department.map(|d| d.territory());
            match FrenchPhone::parse(input, home) {
                Ok(p) => {
                    let mut o = Outcome::new(kind, input, Ok(p.e164().to_string()));
                    o.line_type = Some(Some(p.line_type().as_str()));
                    o.territory = Some(Some(p.territory().code()));
                    o.time_zone = Some(Some(p.time_zone().name()));
                    o
                }
                Err(e) => {
                    let mut o = Outcome::new(kind, input, Err(reason(e.code(), e)));
                    o.line_type = Some(None);
                    o.territory = Some(None);
                    o.time_zone = Some(None);
                    o
                }
            }
        }
        Kind::Postcode => {
            let parsed = Postcode::parse(input).and_then(|p| p.department().map(|d| (p, d)));
            match parsed {
                Ok((p, d)) => {
                    let mut o = Outcome::new(kind, input, Ok(p.as_str().to_string()));
                    o.department = Some(Some(d.code().to_string()));
                    o.territory = Some(Some(d.territory().code()));
                    o.time_zone = Some(Some(d.time_zone().name()));
                    o
                }
                Err(e) => {
                    let mut o = Outcome::new(kind, input, Err(reason(e.code(), e)));
                    o.department = Some(None);
                    o.territory = Some(None);
                    o.time_zone = Some(None);
                    o
                }
            }
        }
    }
}

/// Splits standard input into values: one per line, a final newline does not start a new value,
/// a trailing `\r` is stripped, empty lines are kept (they are invalid values).
fn split_lines(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect()
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let department = match args.department.as_deref() {
        Some(code) => {
            Some(Department::parse(code).map_err(|e| anyhow::anyhow!("--department: {e}"))?)
        }
        None => None,
    };
    let values = if args.values.is_empty() {
        let mut raw = Vec::new();
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("reading values from standard input")?;
        split_lines(&String::from_utf8_lossy(&raw))
    } else {
        args.values
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for value in &values {
        let outcome = validate_one(args.kind, department.as_ref(), value);
        serde_json::to_writer(&mut out, &outcome).context("writing JSON")?;
        out.write_all(b"\n").context("writing output")?;
    }
    out.flush().context("writing output")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: Kind, dep: Option<&str>, input: &str) -> String {
        let d = dep.map(|c| Department::parse(c).expect("test department"));
        serde_json::to_string(&validate_one(kind, d.as_ref(), input)).expect("serialisable")
    }

    #[test]
    fn phone_line_matches_contract() {
        assert_eq!(
            line(Kind::Phone, None, "0690 12 34 56"),
            r#"{"kind":"phone","input":"0690 12 34 56","valid":true,"normalized":"+590690123456","reason":null,"line_type":"mobile","territory":"GP","time_zone":"America/Guadeloupe"}"#
        );
        assert_eq!(
            line(Kind::Phone, Some("978"), "0690 12 34 56"),
            r#"{"kind":"phone","input":"0690 12 34 56","valid":true,"normalized":"+590690123456","reason":null,"line_type":"mobile","territory":"MF","time_zone":"America/Marigot"}"#
        );
        assert_eq!(
            line(Kind::Phone, Some("976"), "0269 61 23 45"),
            r#"{"kind":"phone","input":"0269 61 23 45","valid":true,"normalized":"+262269612345","reason":null,"line_type":"fixed","territory":"YT","time_zone":"Indian/Mayotte"}"#
        );
        let bad = line(Kind::Phone, None, "+269 321 23 45");
        assert_eq!(
            bad,
            r#"{"kind":"phone","input":"+269 321 23 45","valid":false,"normalized":null,"reason":{"code":"phone.not_french","message":"the number is not a French metropolitan or served overseas number"},"line_type":null,"territory":null,"time_zone":null}"#
        );
    }

    #[test]
    fn nir_lines() {
        assert_eq!(
            line(Kind::Nir, None, "2 55 08 14 168 025 38"),
            r#"{"kind":"nir","input":"2 55 08 14 168 025 38","valid":true,"normalized":"255081416802538","reason":null}"#
        );
        let bad = line(Kind::Nir, None, "2 55 08 14 168 025 00");
        assert!(
            bad.contains(r#""valid":false,"normalized":null,"reason":{"code":"nir.key_mismatch","#)
        );
        assert!(!bad.contains("line_type"));
        assert_eq!(
            line(Kind::Nir, None, "253072a073004"),
            r#"{"kind":"nir","input":"253072a073004","valid":true,"normalized":"253072A073004","reason":null}"#
        );
    }

    #[test]
    fn postcode_lines() {
        assert_eq!(
            line(Kind::Postcode, None, "97133"),
            r#"{"kind":"postcode","input":"97133","valid":true,"normalized":"97133","reason":null,"department":"977","territory":"BL","time_zone":"America/St_Barthelemy"}"#
        );
        assert_eq!(
            line(Kind::Postcode, None, "20 200"),
            r#"{"kind":"postcode","input":"20 200","valid":true,"normalized":"20200","reason":null,"department":"2B","territory":"FR","time_zone":"Europe/Paris"}"#
        );
        let bad = line(Kind::Postcode, None, "97500");
        assert!(bad.contains(r#""code":"postcode.not_served""#));
        assert!(bad.ends_with(r#""department":null,"territory":null,"time_zone":null}"#));
    }

    #[test]
    fn other_kinds() {
        assert!(line(Kind::Siren, None, "732 829 320").contains(r#""normalized":"732829320""#));
        assert!(line(Kind::Siret, None, "35600000049837").contains(r#""valid":true"#));
        assert!(line(Kind::Siret, None, "35600000049838").contains(r#""valid":false"#));
        assert!(line(Kind::Rpps, None, "10003456789").contains(r#""valid":true"#));
        assert!(line(Kind::Adeli, None, "751234567").contains(r#""valid":true"#));
        assert_eq!(
            line(Kind::Email, None, " Jean@Example.FR "),
            r#"{"kind":"email","input":" Jean@Example.FR ","valid":true,"normalized":"Jean@example.fr","reason":null}"#
        );
        assert!(line(Kind::Email, None, "").contains(r#""code":"email.empty""#));
    }

    #[test]
    fn messages_never_echo_the_value() {
        for (k, v) in [
            (Kind::Nir, "299999999999999"),
            (Kind::Phone, "+4479111234567"),
            (Kind::Email, "secret.person@nowhere"),
            (Kind::Siret, "12345678901234"),
        ] {
            let o = validate_one(k, None, v);
            let msg = o.reason.map(|r| r.message).unwrap_or_default();
            assert!(!msg.is_empty());
            assert!(!msg.contains(v));
        }
    }

    #[test]
    fn stdin_lines() {
        assert_eq!(split_lines(""), Vec::<String>::new());
        assert_eq!(split_lines("a\n"), vec!["a"]);
        assert_eq!(split_lines("a\r\nb"), vec!["a", "b"]);
        assert_eq!(split_lines("a\n\nb\n"), vec!["a", "", "b"]);
        assert_eq!(split_lines("\n"), vec![""]);
        assert_eq!(split_lines("a\n\n"), vec!["a", ""]);
    }
}
