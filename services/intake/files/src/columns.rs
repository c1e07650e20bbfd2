//! The columns of a contact file and the theme field each fills (the README's import table).

use crate::{Encoding, FileError, Limits, RowError};
use cnmas_domain::theme::{Field, Population, Theme};
use cnmas_proto::common::PostalAddress;
use cnmas_proto::intake::{
    contact_submission::{Person, ThemeFields},
    AmeliActivationFields, ChildDentalExamFields, ContactDetails, ContactSubmission, Employer,
    FluVaccinationFields, HealthProfessional, InsuredPerson, TeleservicesFields,
};

/// Column names (lower case in the header, any order) and the field each fills;
/// `submission_ref` fills none (the fund's own reference, else one derived from the row).
pub const COLUMNS: [(&str, Option<Field>); 23] = [
    ("submission_ref", None),
    ("nir", Some(Field::Nir)),
    ("last_name", Some(Field::LastName)),
    ("first_name", Some(Field::FirstName)),
    ("birth_date", Some(Field::BirthDate)),
    ("phone", Some(Field::Phone)),
    ("email", Some(Field::Email)),
    ("address", Some(Field::PostalAddress)),
    ("city", Some(Field::PostalAddress)),
    ("postcode", Some(Field::Postcode)),
    ("flu_vaccinated", Some(Field::FluVaccinated)),
    ("child_last_name", Some(Field::ChildLastName)),
    ("child_first_name", Some(Field::ChildFirstName)),
    ("child_age", Some(Field::ChildAge)),
    ("child_birth_date", Some(Field::ChildBirthDate)),
    ("ebd_entitlement_end", Some(Field::EbdEntitlementEnd)),
    ("ameli_provisional_code", Some(Field::AmeliProvisionalCode)),
    ("ps_number", Some(Field::PsNumber)),
    ("practice_software", Some(Field::PracticeSoftware)),
    (
        "teleservices_usage_rate",
        Some(Field::TeleservicesUsageRate),
    ),
    ("company_name", Some(Field::CompanyName)),
    ("siret", Some(Field::Siret)),
    ("correspondent_name", Some(Field::CorrespondentName)),
];

/// The column that fills `field` (the address is named after its `address` column).
pub fn column_of(field: Field) -> &'static str {
    COLUMNS
        .iter()
        .find(|(_, f)| *f == Some(field))
        .map(|(c, _)| *c)
        .unwrap_or("")
}

/// The columns of one file, checked against its campaign's theme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    theme: Theme,
    /// The column at each position of the header.
    names: Vec<&'static str>,
}

impl ColumnMap {
    /// Checks a header: every column known, allowed by the theme and given once, and every
    /// field the theme requires present.
    pub fn from_header(cells: &[String], theme: Theme) -> Result<Self, FileError> {
        let spec = theme.spec();
        let mut names: Vec<&'static str> = Vec::with_capacity(cells.len());
        for (i, cell) in cells.iter().enumerate() {
            let cell = cell.trim().trim_start_matches('\u{feff}').to_lowercase();
            let Some(&(name, field)) = COLUMNS.iter().find(|(c, _)| *c == cell) else {
                return Err(FileError::UnknownColumn {
                    position: i + 1,
                    accepted: COLUMNS.map(|c| c.0).join(", "),
                });
            };
            if field.is_some_and(|f| !spec.allows(f)) {
                return Err(FileError::ColumnNotAllowed {
                    column: name,
                    theme: theme.code(),
                });
            }
            if names.contains(&name) {
                return Err(FileError::DuplicateColumn(name));
            }
            names.push(name);
        }
        let missing: Vec<&str> = spec
            .required
            .iter()
            .filter(|&&f| {
                !names
                    .iter()
                    .any(|n| COLUMNS.iter().any(|(c, cf)| c == n && *cf == Some(f)))
            })
            .map(|&f| column_of(f))
            .collect();
        if !missing.is_empty() {
            return Err(FileError::MissingColumns {
                theme: theme.code(),
                missing: missing.join(", "),
            });
        }
        Ok(ColumnMap { theme, names })
    }

    /// The same map from the column names it was stored as (a resumed upload).
    pub fn from_names(names: &[String], theme: Theme) -> Result<Self, FileError> {
        Self::from_header(names, theme)
    }

    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    pub fn theme(&self) -> Theme {
        self.theme
    }

    /// Builds the contact of row `row` from its cells' bytes. Without a `submission_ref`
    /// column (or with it empty) the reference is `<ref_prefix>-<row>`, so sending the file
    /// again yields the same references.
    pub fn contact(
        &self,
        row: u64,
        cells: &[Vec<u8>],
        encoding: Encoding,
        limits: Limits,
        ref_prefix: &str,
    ) -> Result<ContactSubmission, RowError> {
        let bad = |column: &str, rule: &'static str, message: String| RowError {
            row,
            column: column.to_string(),
            rule,
            message,
        };
        if cells.len() != self.names.len() {
            return Err(bad(
                "",
                "csv.columns",
                format!(
                    "{} cells where the header has {}",
                    cells.len(),
                    self.names.len()
                ),
            ));
        }
        let mut values: Vec<(&'static str, String)> = Vec::with_capacity(cells.len());
        for (name, cell) in self.names.iter().zip(cells) {
            let text = encoding.decode(cell).ok_or_else(|| {
                bad(
                    name,
                    "csv.encoding",
                    format!(
                        "not valid {}: declare the file's encoding (e.g. windows-1252)",
                        encoding.code()
                    ),
                )
            })?;
            if text.chars().count() > limits.max_field_chars {
                return Err(bad(
                    name,
                    "csv.field_too_long",
                    format!("at most {} characters", limits.max_field_chars),
                ));
            }
            values.push((name, text.trim().to_string()));
        }
        let get = |name: &str| -> String {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let submission_ref = match get("submission_ref") {
            r if r.is_empty() => format!("{ref_prefix}-{row}"),
            r => r,
        };
        let person = match self.theme.population() {
            Population::Insured => Person::Insured(InsuredPerson {
                nir: get("nir"),
                last_name: get("last_name"),
                first_name: get("first_name"),
                birth_date: iso_date(&get("birth_date")),
            }),
            Population::HealthProfessional => Person::Professional(HealthProfessional {
                ps_number: get("ps_number"),
                last_name: get("last_name"),
                first_name: get("first_name"),
            }),
            Population::Employer => Person::Employer(Employer {
                company_name: get("company_name"),
                siret: get("siret"),
                correspondent_name: get("correspondent_name"),
            }),
        };
        let theme_fields = match self.theme {
            Theme::FluVaccination => Some(ThemeFields::FluVaccination(FluVaccinationFields {
                flu_vaccinated: yes_no(&get("flu_vaccinated")).ok_or_else(|| {
                    bad(
                        "flu_vaccinated",
                        "csv.boolean",
                        "expected oui or non".into(),
                    )
                })?,
            })),
            Theme::ChildDentalExam => Some(ThemeFields::ChildDentalExam(ChildDentalExamFields {
                child_last_name: get("child_last_name"),
                child_first_name: get("child_first_name"),
                child_age: match get("child_age") {
                    a if a.is_empty() => None,
                    a => Some(a.parse().map_err(|_| {
                        bad("child_age", "csv.number", "a whole number of years".into())
                    })?),
                },
                child_birth_date: iso_date(&get("child_birth_date")),
                ebd_entitlement_end: iso_date(&get("ebd_entitlement_end")),
            })),
            Theme::AmeliActivation => Some(ThemeFields::AmeliActivation(AmeliActivationFields {
                provisional_code: get("ameli_provisional_code"),
            })),
            Theme::TeleservicesProfessional => {
                Some(ThemeFields::Teleservices(TeleservicesFields {
                    practice_software: get("practice_software"),
                    teleservices_usage_rate: match get("teleservices_usage_rate") {
                        r if r.is_empty() => None,
                        r => Some(
                            r.replace(',', ".")
                                .parse()
                                .ok()
                                .filter(|v: &f64| v.is_finite())
                                .ok_or_else(|| {
                                    bad(
                                        "teleservices_usage_rate",
                                        "csv.number",
                                        "a decimal number such as 0,35".into(),
                                    )
                                })?,
                        ),
                    },
                }))
            }
            Theme::EmployerOffer => None,
        };
        let lines: Vec<String> = get("address")
            .split('|')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Ok(ContactSubmission {
            submission_ref,
            person: Some(person),
            contact_details: Some(ContactDetails {
                phone: get("phone"),
                email: get("email"),
                postal_address: Some(PostalAddress {
                    lines,
                    postcode: get("postcode"),
                    city: get("city"),
                }),
            }),
            theme_fields,
        })
    }
}

/// `YYYY-MM-DD` stays; `DD/MM/YYYY` (French spreadsheets) becomes `YYYY-MM-DD`; anything else
/// is left for the validation to refuse.
pub fn iso_date(s: &str) -> String {
    let s = s.trim();
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [d, m, y]
            if y.len() == 4
                && (1..=2).contains(&d.len())
                && (1..=2).contains(&m.len())
                && s.bytes().all(|b| b.is_ascii_digit() || b == b'/') =>
        {
            format!("{y}-{m:0>2}-{d:0>2}")
        }
        _ => s.to_string(),
    }
}

/// `None` for anything but the usual yes/no spellings; `Some(None)` for an empty cell.
fn yes_no(s: &str) -> Option<Option<bool>> {
    match s.trim().to_lowercase().as_str() {
        "" => Some(None),
        "oui" | "o" | "yes" | "y" | "true" | "vrai" | "1" => Some(Some(true)),
        "non" | "n" | "no" | "false" | "faux" | "0" => Some(Some(false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    fn bytes(cells: &[&str]) -> Vec<Vec<u8>> {
        cells.iter().map(|c| c.as_bytes().to_vec()).collect()
    }

    const FLU: [&str; 7] = [
        "NIR",
        "last_name",
        "first_name",
        "birth_date",
        "phone",
        "postcode",
        "flu_vaccinated",
    ];

    #[test]
    fn headers_are_checked_against_the_theme() {
        assert!(ColumnMap::from_header(&header(&FLU), Theme::FluVaccination).is_ok());
        let e =
            ColumnMap::from_header(&header(&["nir", "siret"]), Theme::FluVaccination).unwrap_err();
        assert_eq!(e.code(), "csv.column_not_allowed");
        // An unknown column is named by its position: the header may be a row of data.
        let e = ColumnMap::from_header(&header(&["nir", "2550814168025"]), Theme::FluVaccination)
            .unwrap_err();
        assert_eq!(e.code(), "csv.unknown_column");
        assert!(!e.to_string().contains("2550814168025"));
        let e =
            ColumnMap::from_header(&header(&["nir", "NIR"]), Theme::FluVaccination).unwrap_err();
        assert_eq!(e.code(), "csv.duplicate_column");
        let e =
            ColumnMap::from_header(&header(&["nir", "phone"]), Theme::FluVaccination).unwrap_err();
        assert_eq!(e.code(), "csv.missing_column");
        assert!(e.to_string().contains("last_name"), "{e}");
        for t in Theme::ALL {
            let all: Vec<String> = COLUMNS
                .iter()
                .filter(|(_, f)| f.is_none_or(|f| t.spec().allows(f)))
                .map(|(c, _)| c.to_string())
                .collect();
            let map = ColumnMap::from_header(&all, t).unwrap();
            assert_eq!(ColumnMap::from_names(&all, t).unwrap(), map);
        }
    }

    #[test]
    fn rows_become_contacts() {
        let map = ColumnMap::from_header(&header(&FLU), Theme::FluVaccination).unwrap();
        let row = bytes(&[
            "2 55 08 14 168 025 38",
            "Martin",
            "Jeanne",
            "14/08/1955",
            "06 12 34 56 78",
            "75011",
            "non",
        ]);
        let c = map
            .contact(2, &row, Encoding::Utf8, Limits::default(), "iabc")
            .unwrap();
        assert_eq!(c.submission_ref, "iabc-2");
        match c.person {
            Some(Person::Insured(p)) => assert_eq!(p.birth_date, "1955-08-14"),
            other => panic!("{other:?}"),
        }
        let bad = bytes(&["x", "M", "J", "", "", "", "peut-être"]);
        let e = map
            .contact(3, &bad, Encoding::Utf8, Limits::default(), "iabc")
            .unwrap_err();
        assert_eq!(
            (e.row, e.column.as_str(), e.rule),
            (3, "flu_vaccinated", "csv.boolean")
        );
        let short = bytes(&["x", "M"]);
        let e = map
            .contact(4, &short, Encoding::Utf8, Limits::default(), "i")
            .unwrap_err();
        assert_eq!(e.rule, "csv.columns");
        let mut latin = bytes(&["x", "M", "J", "", "", "", ""]);
        latin[2] = b"J\xE9r\xF4me".to_vec();
        let e = map
            .contact(5, &latin, Encoding::Utf8, Limits::default(), "i")
            .unwrap_err();
        assert_eq!((e.column.as_str(), e.rule), ("first_name", "csv.encoding"));
        let c = map
            .contact(5, &latin, Encoding::Windows1252, Limits::default(), "i")
            .unwrap();
        match c.person {
            Some(Person::Insured(p)) => assert_eq!(p.first_name, "Jérôme"),
            other => panic!("{other:?}"),
        }
        let mut long = bytes(&["x", "M", "J", "", "", "", ""]);
        long[1] = "é".repeat(1001).into_bytes();
        let e = map
            .contact(6, &long, Encoding::Utf8, Limits::default(), "i")
            .unwrap_err();
        assert_eq!(
            (e.column.as_str(), e.rule),
            ("last_name", "csv.field_too_long")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(iso_date("14/08/1955"), "1955-08-14");
        assert_eq!(iso_date("1/8/1955"), "1955-08-01");
        assert_eq!(iso_date("1955-08-14"), "1955-08-14");
        assert_eq!(iso_date("a/b/cdef"), "a/b/cdef");
    }
}
