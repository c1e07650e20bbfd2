//! Turns a fund's `ContactSubmission` into a validated, normalised contact for the vault, or the
//! complete list of reasons it was refused (field, rule, message — never the value).

use chrono::NaiveDate;
use cnmas_domain::company::Siret;
use cnmas_domain::email::Email;
use cnmas_domain::geo::{Postcode, Territory};
use cnmas_domain::nir::{self, Nir};
use cnmas_domain::person::Identity;
use cnmas_domain::phone::FrenchPhone;
use cnmas_domain::professional::PsNumber;
use cnmas_domain::theme::{Field, Population, Theme};
use cnmas_proto::common::Reason;
use cnmas_proto::intake::ContactSubmission;
use cnmas_proto::intake::{contact_submission::Person, contact_submission::ThemeFields};
use std::collections::BTreeMap;

/// A contact that passed every rule of its theme.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidContact {
    pub submission_ref: String,
    /// The normalised identifier from which the person key is derived.
    pub identity: Identity,
    /// Normalised personal fields, exactly those the theme allows; sealed in the vault.
    pub fields: BTreeMap<Field, String>,
    pub territory: Territory,
    /// Empty when no postcode was given.
    pub department: String,
    /// Smaller is called first (theme-defined).
    pub priority_key: i64,
}

const MAX_NAME: usize = 100;
const MAX_TEXT: usize = 300;

pub fn reason(field: &str, rule: &str, message: impl Into<String>) -> Reason {
    Reason {
        field: field.to_string(),
        rule: rule.to_string(),
        message: message.into(),
    }
}

/// The fund's reference: 1–64 characters of `[A-Za-z0-9._:-]`.
pub fn check_ref(r: &str) -> Result<(), Reason> {
    if !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(())
    } else {
        Err(reason(
            "submission_ref",
            "submission_ref.format",
            "1 to 64 characters of letters, digits, '.', '_', ':' or '-'",
        ))
    }
}

fn present(s: &str) -> bool {
    !s.trim().is_empty()
}

/// The fields the submission carries, as the theme table names them.
fn fields_present(c: &ContactSubmission) -> Vec<Field> {
    let mut f = Vec::new();
    match &c.person {
        Some(Person::Insured(p)) => {
            f.push(Field::Nir);
            f.push(Field::LastName);
            f.push(Field::FirstName);
            if present(&p.birth_date) {
                f.push(Field::BirthDate);
            }
        }
        Some(Person::Professional(p)) => {
            f.push(Field::PsNumber);
            f.push(Field::LastName);
            if present(&p.first_name) {
                f.push(Field::FirstName);
            }
        }
        Some(Person::Employer(e)) => {
            f.push(Field::CompanyName);
            f.push(Field::Siret);
            if present(&e.correspondent_name) {
                f.push(Field::CorrespondentName);
            }
        }
        None => {}
    }
    if let Some(d) = &c.contact_details {
        if present(&d.phone) {
            f.push(Field::Phone);
        }
        if present(&d.email) {
            f.push(Field::Email);
        }
        if let Some(a) = &d.postal_address {
            if a.lines.iter().any(|l| present(l)) || present(&a.city) {
                f.push(Field::PostalAddress);
            }
            if present(&a.postcode) {
                f.push(Field::Postcode);
            }
        }
    }
    match &c.theme_fields {
        Some(ThemeFields::FluVaccination(t)) if t.flu_vaccinated.is_some() => {
            f.push(Field::FluVaccinated);
        }
        Some(ThemeFields::ChildDentalExam(t)) => {
            if present(&t.child_last_name) {
                f.push(Field::ChildLastName);
            }
            if present(&t.child_first_name) {
                f.push(Field::ChildFirstName);
            }
            if t.child_age.is_some() {
                f.push(Field::ChildAge);
            }
            if present(&t.child_birth_date) {
                f.push(Field::ChildBirthDate);
            }
            if present(&t.ebd_entitlement_end) {
                f.push(Field::EbdEntitlementEnd);
            }
        }
        Some(ThemeFields::AmeliActivation(t)) if present(&t.provisional_code) => {
            f.push(Field::AmeliProvisionalCode);
        }
        Some(ThemeFields::Teleservices(t)) => {
            if present(&t.practice_software) {
                f.push(Field::PracticeSoftware);
            }
            if t.teleservices_usage_rate.is_some() {
                f.push(Field::TeleservicesUsageRate);
            }
        }
        _ => {}
    }
    f
}

/// Where each field sits in the message, for the reasons.
pub fn path(field: Field) -> &'static str {
    match field {
        Field::Nir => "insured.nir",
        Field::LastName => "person.last_name",
        Field::FirstName => "person.first_name",
        Field::BirthDate => "insured.birth_date",
        Field::PostalAddress => "contact_details.postal_address",
        Field::Postcode => "contact_details.postal_address.postcode",
        Field::Phone => "contact_details.phone",
        Field::Email => "contact_details.email",
        Field::ChildLastName => "child_dental_exam.child_last_name",
        Field::ChildFirstName => "child_dental_exam.child_first_name",
        Field::ChildAge => "child_dental_exam.child_age",
        Field::ChildBirthDate => "child_dental_exam.child_birth_date",
        Field::FluVaccinated => "flu_vaccination.flu_vaccinated",
        Field::EbdEntitlementEnd => "child_dental_exam.ebd_entitlement_end",
        Field::AmeliProvisionalCode => "ameli_activation.provisional_code",
        Field::PsNumber => "professional.ps_number",
        Field::PracticeSoftware => "teleservices.practice_software",
        Field::TeleservicesUsageRate => "teleservices.teleservices_usage_rate",
        Field::CompanyName => "employer.company_name",
        Field::Siret => "employer.siret",
        Field::CorrespondentName => "employer.correspondent_name",
    }
}

fn text(field: Field, value: &str, max: usize, errs: &mut Vec<Reason>) -> String {
    let v = value.trim();
    if v.chars().count() > max {
        errs.push(reason(
            path(field),
            "text.too_long",
            format!("at most {max} characters"),
        ));
    } else if v.chars().any(char::is_control) {
        errs.push(reason(
            path(field),
            "text.control_character",
            "control characters are not allowed",
        ));
    }
    v.to_string()
}

fn date(field: Field, value: &str, errs: &mut Vec<Reason>) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
        Ok(d) => Some(d),
        Err(_) => {
            errs.push(reason(
                path(field),
                "date.format",
                "expected a date as YYYY-MM-DD",
            ));
            None
        }
    }
}

/// Days since 0001-01-01, a sortable priority.
fn day_number(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce())
}

use chrono::Datelike;

/// Validates one submission for a campaign of `theme`, run by a fund whose territory is
/// `fund_territory` (the default territory when no postcode is given).
pub fn validate(
    c: &ContactSubmission,
    theme: Theme,
    fund_territory: Territory,
    today: NaiveDate,
) -> Result<ValidContact, Vec<Reason>> {
    let mut errs = Vec::new();
    if let Err(r) = check_ref(&c.submission_ref) {
        errs.push(r);
    }
    let spec = theme.spec();
    let population = match &c.person {
        Some(Person::Insured(_)) => Some(Population::Insured),
        Some(Person::Professional(_)) => Some(Population::HealthProfessional),
        Some(Person::Employer(_)) => Some(Population::Employer),
        None => None,
    };
    if population != Some(spec.population) {
        errs.push(reason(
            "person",
            "theme.population",
            format!(
                "the theme {} calls {:?}; give the matching person block",
                theme.code(),
                spec.population
            ),
        ));
        return Err(errs);
    }
    let present = fields_present(c);
    for e in spec.check_fields(&present) {
        errs.push(reason(path(e.field()), e.code(), e.to_string()));
    }
    // Fields the theme does not allow are refused above and never read below.
    let allowed = |f: Field| spec.allows(f) && present.contains(&f);

    let mut fields = BTreeMap::new();
    let mut identity = None;
    let mut birth_date = None;

    // Territory first: it decides how a national-form phone number is read.
    let mut territory = fund_territory;
    let mut department = String::new();
    let details = c.contact_details.clone().unwrap_or_default();
    let address = details.postal_address.clone().unwrap_or_default();
    if allowed(Field::Postcode) {
        match Postcode::parse(&address.postcode).and_then(|p| Ok((p.clone(), p.department()?))) {
            Ok((p, d)) => {
                territory = d.territory();
                department = d.code().to_string();
                fields.insert(Field::Postcode, p.as_str().to_string());
            }
            Err(e) => errs.push(reason(path(Field::Postcode), e.code(), e.to_string())),
        }
    }
    if allowed(Field::PostalAddress) {
        let mut lines: Vec<String> = address
            .lines
            .iter()
            .map(|l| text(Field::PostalAddress, l, MAX_TEXT, &mut errs))
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() > 6 {
            errs.push(reason(
                path(Field::PostalAddress),
                "address.too_many_lines",
                "at most 6 lines",
            ));
        }
        let city = text(Field::PostalAddress, &address.city, MAX_NAME, &mut errs);
        if !city.is_empty() {
            lines.push(city);
        }
        fields.insert(Field::PostalAddress, lines.join("\n"));
    }

    match &c.person {
        Some(Person::Insured(p)) => {
            match Nir::parse(&p.nir) {
                Ok(n) => {
                    identity = Some(Identity::Nir(n.body().to_string()));
                    fields.insert(Field::Nir, n.as_str().to_string());
                }
                Err(e) => errs.push(reason(path(Field::Nir), e.code(), e.to_string())),
            }
            if allowed(Field::BirthDate) {
                if let Some(d) = date(Field::BirthDate, &p.birth_date, &mut errs) {
                    match nir::check_birth_date(d, today, 0, 120) {
                        Ok(()) => {
                            birth_date = Some(d);
                            fields.insert(Field::BirthDate, d.to_string());
                        }
                        Err(e) => {
                            errs.push(reason(path(Field::BirthDate), e.code(), e.to_string()))
                        }
                    }
                }
            }
            name_fields(
                &mut fields,
                &mut errs,
                &p.last_name,
                &p.first_name,
                &allowed,
            );
        }
        Some(Person::Professional(p)) => {
            match PsNumber::parse(&p.ps_number) {
                Ok(n) => {
                    identity = Some(Identity::Ps(n.as_str().to_string()));
                    fields.insert(Field::PsNumber, n.as_str().to_string());
                }
                Err(e) => errs.push(reason(path(Field::PsNumber), e.code(), e.to_string())),
            }
            name_fields(
                &mut fields,
                &mut errs,
                &p.last_name,
                &p.first_name,
                &allowed,
            );
        }
        Some(Person::Employer(e)) => {
            match Siret::parse(&e.siret) {
                Ok(s) => {
                    identity = Some(Identity::Siret(s.as_str().to_string()));
                    fields.insert(Field::Siret, s.as_str().to_string());
                }
                Err(err) => errs.push(reason(path(Field::Siret), err.code(), err.to_string())),
            }
            let company = text(Field::CompanyName, &e.company_name, MAX_TEXT, &mut errs);
            fields.insert(Field::CompanyName, company);
            if allowed(Field::CorrespondentName) {
                let n = text(
                    Field::CorrespondentName,
                    &e.correspondent_name,
                    MAX_NAME,
                    &mut errs,
                );
                fields.insert(Field::CorrespondentName, n);
            }
        }
        None => {}
    }

    if allowed(Field::Phone) {
        match FrenchPhone::parse(&details.phone, Some(territory)) {
            Ok(p) => {
                fields.insert(Field::Phone, p.e164().to_string());
            }
            Err(e) => errs.push(reason(path(Field::Phone), e.code(), e.to_string())),
        }
    }
    if allowed(Field::Email) {
        match Email::parse(&details.email) {
            Ok(e) => {
                fields.insert(Field::Email, e.as_str().to_string());
            }
            Err(e) => errs.push(reason(path(Field::Email), e.code(), e.to_string())),
        }
    }

    let mut priority_key = 0;
    match &c.theme_fields {
        Some(ThemeFields::FluVaccination(t)) => {
            if let (true, Some(v)) = (allowed(Field::FluVaccinated), t.flu_vaccinated) {
                fields.insert(Field::FluVaccinated, v.to_string());
            }
            // Oldest first.
            priority_key = birth_date.map(day_number).unwrap_or(i64::MAX / 2);
        }
        Some(ThemeFields::ChildDentalExam(t)) => {
            if allowed(Field::ChildFirstName) {
                let v = text(
                    Field::ChildFirstName,
                    &t.child_first_name,
                    MAX_NAME,
                    &mut errs,
                );
                fields.insert(Field::ChildFirstName, v);
            }
            if allowed(Field::ChildLastName) {
                let v = text(
                    Field::ChildLastName,
                    &t.child_last_name,
                    MAX_NAME,
                    &mut errs,
                );
                fields.insert(Field::ChildLastName, v);
            }
            let child_birth = if allowed(Field::ChildBirthDate) {
                date(Field::ChildBirthDate, &t.child_birth_date, &mut errs)
            } else {
                None
            };
            if let Some(b) = child_birth {
                // The dental exam is offered from 3 to 24 years old.
                match nir::check_birth_date(b, today, 2, 25) {
                    Ok(()) => {
                        fields.insert(Field::ChildBirthDate, b.to_string());
                    }
                    Err(e) => {
                        errs.push(reason(path(Field::ChildBirthDate), e.code(), e.to_string()))
                    }
                }
                if let (true, Some(age)) = (allowed(Field::ChildAge), t.child_age) {
                    match nir::check_child_age(age, b, today) {
                        Ok(()) => {
                            fields.insert(Field::ChildAge, age.to_string());
                        }
                        Err(e) => errs.push(reason(path(Field::ChildAge), e.code(), e.to_string())),
                    }
                }
            }
            if allowed(Field::EbdEntitlementEnd) {
                if let Some(end) = date(Field::EbdEntitlementEnd, &t.ebd_entitlement_end, &mut errs)
                {
                    fields.insert(Field::EbdEntitlementEnd, end.to_string());
                    // Nearest end of entitlement first.
                    priority_key = day_number(end);
                }
            }
        }
        Some(ThemeFields::AmeliActivation(t)) if allowed(Field::AmeliProvisionalCode) => {
            let code = t.provisional_code.trim();
            if code.len() > 32 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                errs.push(reason(
                    path(Field::AmeliProvisionalCode),
                    "ameli_code.format",
                    "1 to 32 letters or digits",
                ));
            } else {
                fields.insert(Field::AmeliProvisionalCode, code.to_string());
            }
        }
        Some(ThemeFields::Teleservices(t)) => {
            if allowed(Field::PracticeSoftware) {
                let v = text(
                    Field::PracticeSoftware,
                    &t.practice_software,
                    MAX_NAME,
                    &mut errs,
                );
                fields.insert(Field::PracticeSoftware, v);
            }
            if let (true, Some(rate)) = (
                allowed(Field::TeleservicesUsageRate),
                t.teleservices_usage_rate,
            ) {
                if (0.0..=1.0).contains(&rate) {
                    fields.insert(Field::TeleservicesUsageRate, format!("{rate}"));
                    // Least users of tele-services first.
                    priority_key = (rate * 10_000.0) as i64;
                } else {
                    errs.push(reason(
                        path(Field::TeleservicesUsageRate),
                        "rate.range",
                        "a rate between 0.0 and 1.0",
                    ));
                }
            }
        }
        _ => {}
    }

    match identity {
        Some(identity) if errs.is_empty() => Ok(ValidContact {
            submission_ref: c.submission_ref.clone(),
            identity,
            fields,
            territory,
            department,
            priority_key,
        }),
        _ => Err(errs),
    }
}

fn name_fields(
    fields: &mut BTreeMap<Field, String>,
    errs: &mut Vec<Reason>,
    last: &str,
    first: &str,
    allowed: &dyn Fn(Field) -> bool,
) {
    if allowed(Field::LastName) {
        let v = text(Field::LastName, last, MAX_NAME, errs);
        fields.insert(Field::LastName, v);
    }
    if allowed(Field::FirstName) {
        let v = text(Field::FirstName, first, MAX_NAME, errs);
        fields.insert(Field::FirstName, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnmas_proto::common::PostalAddress;
    use cnmas_proto::intake::{
        AmeliActivationFields, ContactDetails, Employer, FluVaccinationFields, InsuredPerson,
    };

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    fn flu(nir: &str, phone: &str, postcode: &str) -> ContactSubmission {
        ContactSubmission {
            submission_ref: "row-1".into(),
            person: Some(Person::Insured(InsuredPerson {
                nir: nir.into(),
                last_name: "Martin".into(),
                first_name: "Jeanne".into(),
                birth_date: "1955-08-14".into(),
            })),
            contact_details: Some(ContactDetails {
                phone: phone.into(),
                email: String::new(),
                postal_address: Some(PostalAddress {
                    lines: vec![],
                    postcode: postcode.into(),
                    city: String::new(),
                }),
            }),
            theme_fields: Some(ThemeFields::FluVaccination(FluVaccinationFields {
                flu_vaccinated: Some(false),
            })),
        }
    }

    #[test]
    fn a_good_contact_is_normalised_and_located() {
        let c = validate(
            &flu("2 55 08 14 168 025 38", "0690 12 34 56", "97110"),
            Theme::FluVaccination,
            Territory::FR,
            today(),
        )
        .unwrap();
        assert_eq!(c.identity, Identity::Nir("2550814168025".to_string()));
        assert_eq!(c.fields[&Field::Nir], "255081416802538");
        assert_eq!(c.fields[&Field::Phone], "+590690123456");
        assert_eq!(c.territory, Territory::GP);
        assert_eq!(c.department, "971");
        assert!(c.priority_key > 0);
    }

    #[test]
    fn every_fault_is_reported_with_field_and_rule() {
        let errs = validate(
            &flu("2 55 08 14 168 025 00", "+44 20 7946 0000", "75001"),
            Theme::FluVaccination,
            Territory::FR,
            today(),
        )
        .unwrap_err();
        let rules: Vec<_> = errs
            .iter()
            .map(|r| (r.field.as_str(), r.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("insured.nir", "nir.key_mismatch"),
                ("contact_details.phone", "phone.not_french")
            ]
        );
        // Reasons never echo the value.
        assert!(errs.iter().all(|r| !r.message.contains("7946")));
    }

    #[test]
    fn fields_the_theme_does_not_allow_are_refused() {
        let mut c = flu("255081416802538", "0612345678", "75001");
        c.theme_fields = Some(ThemeFields::AmeliActivation(AmeliActivationFields {
            provisional_code: "ABC123".into(),
        }));
        let errs = validate(&c, Theme::FluVaccination, Territory::FR, today()).unwrap_err();
        assert_eq!(errs[0].field, "ameli_activation.provisional_code");
        assert_eq!(errs[0].rule, "theme.field_not_allowed");
    }

    #[test]
    fn population_must_match_the_theme() {
        let mut c = flu("255081416802538", "0612345678", "75001");
        c.person = Some(Person::Employer(Employer {
            company_name: "ACME".into(),
            siret: "35600000049837".into(),
            correspondent_name: String::new(),
        }));
        let errs = validate(&c, Theme::FluVaccination, Territory::FR, today()).unwrap_err();
        assert_eq!(errs[0].rule, "theme.population");
    }

    #[test]
    fn the_fund_territory_applies_without_a_postcode() {
        let mut c = flu("255081416802538", "0262 12 34 56", "");
        c.contact_details.as_mut().unwrap().postal_address = None;
        let v = validate(&c, Theme::FluVaccination, Territory::RE, today()).unwrap();
        assert_eq!(v.territory, Territory::RE);
        assert_eq!(v.fields[&Field::Phone], "+262262123456");
        assert_eq!(v.department, "");
    }

    #[test]
    fn references_are_checked() {
        assert!(check_ref("row-1").is_ok());
        assert!(check_ref("").is_err());
        assert!(check_ref("a b").is_err());
        assert!(check_ref(&"x".repeat(65)).is_err());
    }
}
