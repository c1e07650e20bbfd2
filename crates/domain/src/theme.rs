//! Themes: each campaign is built from one, and the theme decides which population it calls
//! and exactly which personal fields may be exchanged (data minimisation, DOMAIN.md).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Population {
    Insured,
    HealthProfessional,
    Employer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    FluVaccination,
    ChildDentalExam,
    AmeliActivation,
    TeleservicesProfessional,
    EmployerOffer,
}

/// Every personal field a contact may carry, whatever its theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Nir,
    LastName,
    FirstName,
    BirthDate,
    PostalAddress,
    Postcode,
    Phone,
    Email,
    ChildLastName,
    ChildFirstName,
    ChildAge,
    ChildBirthDate,
    FluVaccinated,
    EbdEntitlementEnd,
    AmeliProvisionalCode,
    PsNumber,
    PracticeSoftware,
    TeleservicesUsageRate,
    CompanyName,
    Siret,
    CorrespondentName,
}

impl Field {
    pub fn code(self) -> &'static str {
        match self {
            Field::Nir => "nir",
            Field::LastName => "last_name",
            Field::FirstName => "first_name",
            Field::BirthDate => "birth_date",
            Field::PostalAddress => "postal_address",
            Field::Postcode => "postcode",
            Field::Phone => "phone",
            Field::Email => "email",
            Field::ChildLastName => "child_last_name",
            Field::ChildFirstName => "child_first_name",
            Field::ChildAge => "child_age",
            Field::ChildBirthDate => "child_birth_date",
            Field::FluVaccinated => "flu_vaccinated",
            Field::EbdEntitlementEnd => "ebd_entitlement_end",
            Field::AmeliProvisionalCode => "ameli_provisional_code",
            Field::PsNumber => "ps_number",
            Field::PracticeSoftware => "practice_software",
            Field::TeleservicesUsageRate => "teleservices_usage_rate",
            Field::CompanyName => "company_name",
            Field::Siret => "siret",
            Field::CorrespondentName => "correspondent_name",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a theme declares: its population and which fields are required or merely allowed.
/// A field in neither list is refused, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThemeSpec {
    pub theme: Theme,
    pub label_fr: &'static str,
    pub population: Population,
    pub required: &'static [Field],
    pub optional: &'static [Field],
}

use Field::*;

const SPECS: [ThemeSpec; 5] = [
    ThemeSpec {
        theme: Theme::FluVaccination,
        label_fr: "Rappel de la vaccination contre la grippe",
        population: Population::Insured,
        required: &[Nir, LastName, FirstName, BirthDate, Phone],
        optional: &[PostalAddress, Postcode, Email, FluVaccinated],
    },
    ThemeSpec {
        theme: Theme::ChildDentalExam,
        label_fr: "Examen bucco-dentaire de l'enfant (M'T dents)",
        population: Population::Insured,
        required: &[
            Nir,
            LastName,
            FirstName,
            Phone,
            ChildFirstName,
            ChildBirthDate,
            EbdEntitlementEnd,
        ],
        optional: &[
            BirthDate,
            PostalAddress,
            Postcode,
            Email,
            ChildLastName,
            ChildAge,
        ],
    },
    ThemeSpec {
        theme: Theme::AmeliActivation,
        label_fr: "Activation du compte ameli",
        population: Population::Insured,
        required: &[Nir, LastName, FirstName, Phone, AmeliProvisionalCode],
        optional: &[BirthDate, PostalAddress, Postcode, Email],
    },
    ThemeSpec {
        theme: Theme::TeleservicesProfessional,
        label_fr: "Téléservices pour les professionnels de santé",
        population: Population::HealthProfessional,
        required: &[PsNumber, LastName, Phone],
        optional: &[
            FirstName,
            PostalAddress,
            Postcode,
            Email,
            PracticeSoftware,
            TeleservicesUsageRate,
        ],
    },
    ThemeSpec {
        theme: Theme::EmployerOffer,
        label_fr: "Offre de services aux employeurs",
        population: Population::Employer,
        required: &[CompanyName, Siret, Phone],
        optional: &[CorrespondentName, PostalAddress, Postcode, Email],
    },
];

impl Theme {
    pub const ALL: [Theme; 5] = [
        Theme::FluVaccination,
        Theme::ChildDentalExam,
        Theme::AmeliActivation,
        Theme::TeleservicesProfessional,
        Theme::EmployerOffer,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Theme::FluVaccination => "flu_vaccination",
            Theme::ChildDentalExam => "child_dental_exam",
            Theme::AmeliActivation => "ameli_activation",
            Theme::TeleservicesProfessional => "teleservices_professional",
            Theme::EmployerOffer => "employer_offer",
        }
    }

    pub fn from_code(code: &str) -> Option<Theme> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn spec(self) -> &'static ThemeSpec {
        // SPECS is declared in the same order as Theme::ALL; the test below holds it so.
        &SPECS[self as usize]
    }

    pub fn population(self) -> Population {
        self.spec().population
    }
}

impl fmt::Display for Theme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a set of fields does not fit a theme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldRuleError {
    #[error("field `{0}` is required by the theme")]
    Missing(Field),
    #[error("field `{0}` is not allowed by the theme")]
    NotAllowed(Field),
}

impl FieldRuleError {
    pub fn code(&self) -> &'static str {
        match self {
            FieldRuleError::Missing(_) => "theme.field_required",
            FieldRuleError::NotAllowed(_) => "theme.field_not_allowed",
        }
    }

    pub fn field(&self) -> Field {
        match self {
            FieldRuleError::Missing(f) | FieldRuleError::NotAllowed(f) => *f,
        }
    }
}

impl ThemeSpec {
    pub fn allows(&self, field: Field) -> bool {
        self.required.contains(&field) || self.optional.contains(&field)
    }

    /// Checks the fields present in a submission against the theme, reporting every breach.
    pub fn check_fields(&self, present: &[Field]) -> Vec<FieldRuleError> {
        let mut errors: Vec<FieldRuleError> = present
            .iter()
            .filter(|f| !self.allows(**f))
            .map(|f| FieldRuleError::NotAllowed(*f))
            .collect();
        errors.extend(
            self.required
                .iter()
                .filter(|f| !present.contains(f))
                .map(|f| FieldRuleError::Missing(*f)),
        );
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_in_theme_order_and_codes_round_trip() {
        for t in Theme::ALL {
            assert_eq!(t.spec().theme, t);
            assert_eq!(Theme::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn every_theme_requires_a_phone_and_never_overlaps_required_and_optional() {
        for t in Theme::ALL {
            let s = t.spec();
            assert!(s.required.contains(&Field::Phone), "{t}");
            for f in s.required {
                assert!(
                    !s.optional.contains(f),
                    "{t}: {f} both required and optional"
                );
            }
        }
    }

    #[test]
    fn ameli_code_only_in_ameli_theme_and_employer_fields_only_for_employers() {
        for t in Theme::ALL {
            assert_eq!(
                t.spec().allows(Field::AmeliProvisionalCode),
                t == Theme::AmeliActivation
            );
            assert_eq!(
                t.spec().allows(Field::Siret),
                t.population() == Population::Employer
            );
            assert_eq!(
                t.spec().allows(Field::Nir),
                t.population() == Population::Insured
            );
        }
    }

    #[test]
    fn check_fields_reports_missing_and_not_allowed() {
        let errs = Theme::FluVaccination.spec().check_fields(&[
            Field::Nir,
            Field::LastName,
            Field::Phone,
            Field::Siret,
        ]);
        assert_eq!(
            errs,
            vec![
                FieldRuleError::NotAllowed(Field::Siret),
                FieldRuleError::Missing(Field::FirstName),
                FieldRuleError::Missing(Field::BirthDate),
            ]
        );
        assert!(Theme::EmployerOffer
            .spec()
            .check_fields(&[Field::CompanyName, Field::Siret, Field::Phone])
            .is_empty());
    }
}
