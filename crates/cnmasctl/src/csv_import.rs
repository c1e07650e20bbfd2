//! `cnmasctl submit`: reads a fund's CSV file (`;` or `,`, UTF-8 with or without BOM, or
//! Windows-1252), maps its columns to the campaign theme's fields and publishes the contacts to
//! the fund's `cnmas.in.v1.<fund>.contact` subject. Intake validates every row and answers each
//! rejection on `cnmas.out.v1.<fund>.rejection`.
//!
//! Sending the same file again creates nothing new: message ids and row references derive from
//! the file's content.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use cnmas_bus::{subjects, Namespace, Publisher};
use cnmas_domain::theme::{Field, Population, Theme};
use cnmas_proto::common::PostalAddress;
use cnmas_proto::intake::{
    contact_submission::{Person, ThemeFields},
    AmeliActivationFields, ChildDentalExamFields, ContactDetails, ContactSubmission, Employer,
    FluVaccinationFields, HealthProfessional, InsuredPerson, SubmitContacts, TeleservicesFields,
};
use cnmas_proto::scheduler::campaign_service_client::CampaignServiceClient;
use cnmas_proto::support::{derived_id, envelope, theme_from_proto};
use cnmas_runtime::auth::Bearer;
use cnmas_runtime::config::var_or;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[arg(long)]
    fund: String,
    #[arg(long)]
    campaign: String,
    #[arg(long)]
    file: std::path::PathBuf,
    /// Contacts per message.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// Files larger than this are refused (split them).
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Any one cell longer than this is refused.
pub const MAX_CELL_CHARS: usize = 1000;

/// Column names, as the README's import table lists them, and the field each fills.
pub const COLUMNS: [(&str, Option<Field>); 22] = [
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
];

/// `correspondent_name` is the 23rd column; kept apart so the table above stays aligned.
const CORRESPONDENT: &str = "correspondent_name";

/// Decodes the file: UTF-8 (a BOM is dropped), else Windows-1252.
pub fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    }
}

/// `;` unless the header line has more commas than semicolons.
pub fn delimiter(text: &str) -> u8 {
    let header = text.lines().next().unwrap_or_default();
    if header.matches(',').count() > header.matches(';').count() {
        b','
    } else {
        b';'
    }
}

/// `YYYY-MM-DD` stays; `DD/MM/YYYY` (French spreadsheets) becomes `YYYY-MM-DD`.
pub fn iso_date(s: &str) -> String {
    let s = s.trim();
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [d, m, y] if y.len() == 4 && d.len() <= 2 && m.len() <= 2 => {
            format!("{y}-{:0>2}-{:0>2}", m, d)
        }
        _ => s.to_string(),
    }
}

fn bool_cell(s: &str) -> Result<Option<bool>, String> {
    match s.trim().to_lowercase().as_str() {
        "" => Ok(None),
        "oui" | "o" | "yes" | "y" | "true" | "vrai" | "1" => Ok(Some(true)),
        "non" | "n" | "no" | "false" | "faux" | "0" => Ok(Some(false)),
        _ => Err("expected oui/non".into()),
    }
}

/// A row the CLI could not even build (intake never sees it).
#[derive(Debug, PartialEq)]
pub struct RowError {
    pub row: usize,
    pub column: String,
    pub rule: &'static str,
    pub message: String,
}

/// Checks the header against the theme and returns the column positions.
pub fn columns(header: &csv::StringRecord, theme: Theme) -> Result<HashMap<String, usize>> {
    let spec = theme.spec();
    let mut positions = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}').to_lowercase();
        let field = if name == CORRESPONDENT {
            Some(Field::CorrespondentName)
        } else {
            match COLUMNS.iter().find(|(c, _)| *c == name) {
                Some((_, f)) => *f,
                None => bail!(
                    "column {name:?} is unknown; accepted: {}, {CORRESPONDENT}",
                    COLUMNS.map(|c| c.0).join(", ")
                ),
            }
        };
        if let Some(f) = field {
            if !spec.allows(f) {
                bail!(
                    "column {name:?} is not allowed by the theme {} (data minimisation): remove it",
                    theme.code()
                );
            }
        }
        if positions.insert(name.clone(), i).is_some() {
            bail!("column {name:?} appears twice");
        }
    }
    Ok(positions)
}

/// Builds one contact from a row.
pub fn contact(
    theme: Theme,
    cols: &HashMap<String, usize>,
    record: &csv::StringRecord,
    row: usize,
    file_tag: &str,
) -> Result<ContactSubmission, RowError> {
    let get = |name: &str| -> String {
        cols.get(name)
            .and_then(|&i| record.get(i))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for (name, &i) in cols {
        if record
            .get(i)
            .is_some_and(|v| v.chars().count() > MAX_CELL_CHARS)
        {
            return Err(RowError {
                row,
                column: name.clone(),
                rule: "csv.cell_too_long",
                message: format!("at most {MAX_CELL_CHARS} characters"),
            });
        }
    }
    let bad = |column: &str, rule: &'static str, message: String| RowError {
        row,
        column: column.into(),
        rule,
        message,
    };
    let submission_ref = match get("submission_ref") {
        r if r.is_empty() => format!("{file_tag}-{row}"),
        r => r,
    };
    let person = match theme.population() {
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
            correspondent_name: get(CORRESPONDENT),
        }),
    };
    let theme_fields = match theme {
        Theme::FluVaccination => Some(ThemeFields::FluVaccination(FluVaccinationFields {
            flu_vaccinated: bool_cell(&get("flu_vaccinated"))
                .map_err(|m| bad("flu_vaccinated", "csv.boolean", m))?,
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
        Theme::TeleservicesProfessional => Some(ThemeFields::Teleservices(TeleservicesFields {
            practice_software: get("practice_software"),
            teleservices_usage_rate: match get("teleservices_usage_rate") {
                r if r.is_empty() => None,
                r => Some(r.replace(',', ".").parse().map_err(|_| {
                    bad(
                        "teleservices_usage_rate",
                        "csv.number",
                        "a decimal number such as 0,35".into(),
                    )
                })?),
            },
        })),
        Theme::EmployerOffer => None,
    };
    let address: Vec<String> = get("address")
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
                lines: address,
                postcode: get("postcode"),
                city: get("city"),
            }),
        }),
        theme_fields,
    })
}

pub async fn submit(token: &str, a: SubmitArgs) -> Result<()> {
    let fund = cnmas_domain::fund::FundCode::parse(&a.fund).context("--fund")?;
    let batch = a.batch.clamp(1, 10_000);
    let meta = std::fs::metadata(&a.file).with_context(|| format!("{}", a.file.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("the file is larger than {MAX_FILE_BYTES} bytes: split it");
    }
    // The campaign's theme decides the columns; the fund's token must see the campaign.
    if token.is_empty() {
        bail!("a token is required: --token or CNMAS_TOKEN (see `cnmasctl token`)");
    }
    let scheduler = var_or("CNMAS_SCHEDULER_URL", "http://127.0.0.1:50053");
    let channel = tonic::transport::Channel::from_shared(scheduler.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the scheduler API at {scheduler}"))?;
    let campaign = CampaignServiceClient::with_interceptor(channel, Bearer(token.to_string()))
        .get_campaign(cnmas_proto::scheduler::GetCampaignRequest {
            campaign_id: a.campaign.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("campaign {}: {}", a.campaign, e.message()))?
        .into_inner();
    if campaign.fund_code != fund.as_str() {
        bail!("the campaign belongs to another fund");
    }
    let theme = theme_from_proto(campaign.theme).context("the campaign has no theme")?;

    let raw = std::fs::read(&a.file)?;
    let file_tag = format!("f{}", &hex::encode(Sha256::digest(&raw))[..12]);
    let text = decode(&raw);
    drop(raw);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter(&text))
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader.headers()?.clone();
    let cols = columns(&header, theme)?;

    let ns = Namespace::new(&var_or("CNMAS_NAMESPACE", "")).context("CNMAS_NAMESPACE")?;
    let nats_url = var_or("CNMAS_NATS_URL", "nats://127.0.0.1:4222");
    let nats = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("cannot reach NATS at {nats_url}"))?;
    let publisher = Publisher::new(async_nats::jetstream::new(nats), ns);
    let subject = subjects::fund_in(fund.as_str(), "contact");

    let (mut rows, mut local_errors, mut sent, mut messages) = (0usize, 0usize, 0usize, 0usize);
    let mut chunk: Vec<ContactSubmission> = Vec::with_capacity(batch);
    let mut pending = Vec::new();
    let flush = |chunk: &mut Vec<ContactSubmission>, n: usize| {
        let event_id = derived_id(&["file", &a.campaign, &file_tag, &n.to_string()]);
        let msg = SubmitContacts {
            envelope: Some(envelope(
                event_id.clone(),
                fund.as_str(),
                &a.campaign,
                &file_tag,
                Utc::now(),
            )),
            contacts: std::mem::take(chunk),
        };
        (
            subject.clone(),
            event_id,
            None,
            Bytes::from(msg.encode_to_vec()),
        )
    };
    for (i, record) in reader.records().enumerate() {
        let row = i + 2; // the header is row 1
        rows += 1;
        let record = match record {
            Ok(r) if r.len() == header.len() => r,
            Ok(r) => {
                local_errors += 1;
                report(&RowError {
                    row,
                    column: String::new(),
                    rule: "csv.columns",
                    message: format!("{} cells where the header has {}", r.len(), header.len()),
                });
                continue;
            }
            Err(e) => {
                local_errors += 1;
                report(&RowError {
                    row,
                    column: String::new(),
                    rule: "csv.syntax",
                    message: e.to_string(),
                });
                continue;
            }
        };
        match contact(theme, &cols, &record, row, &file_tag) {
            Ok(c) => {
                chunk.push(c);
                sent += 1;
            }
            Err(e) => {
                local_errors += 1;
                report(&e);
            }
        }
        if chunk.len() >= batch {
            pending.push(flush(&mut chunk, messages));
            messages += 1;
            if pending.len() >= 64 {
                publisher.publish_all(std::mem::take(&mut pending)).await?;
            }
        }
    }
    if !chunk.is_empty() {
        pending.push(flush(&mut chunk, messages));
        messages += 1;
    }
    publisher.publish_all(pending).await?;
    println!(
        "{}",
        serde_json::json!({
            "file": a.file.display().to_string(), "rows": rows, "sent": sent,
            "refused_locally": local_errors, "messages": messages,
            "rejections": format!("cnmas.out.v1.{fund}.rejection (cnmasctl results tail --fund {fund} --kind rejection)"),
        })
    );
    Ok(())
}

fn report(e: &RowError) {
    eprintln!(
        "{}",
        serde_json::json!({"row": e.row, "column": e.column, "rule": e.rule, "message": e.message})
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_and_bom_are_decoded() {
        assert_eq!(decode(b"\xEF\xBB\xBFnom;pr\xC3\xA9nom"), "nom;prénom");
        assert_eq!(decode(b"nom;pr\xE9nom"), "nom;prénom");
    }

    #[test]
    fn delimiters_and_dates() {
        assert_eq!(delimiter("a;b;c\n1,2;3;4"), b';');
        assert_eq!(delimiter("a,b,c"), b',');
        assert_eq!(iso_date("14/08/1955"), "1955-08-14");
        assert_eq!(iso_date("1/8/1955"), "1955-08-01");
        assert_eq!(iso_date("1955-08-14"), "1955-08-14");
    }

    #[test]
    fn columns_must_be_known_and_allowed_by_the_theme() {
        let h = csv::StringRecord::from(vec!["submission_ref", "NIR", "phone"]);
        assert!(columns(&h, Theme::FluVaccination).is_ok());
        let h = csv::StringRecord::from(vec!["nir", "siret"]);
        let e = columns(&h, Theme::FluVaccination).unwrap_err().to_string();
        assert!(e.contains("not allowed"), "{e}");
        let h = csv::StringRecord::from(vec!["nir", "shoe_size"]);
        assert!(columns(&h, Theme::FluVaccination).is_err());
        let h = csv::StringRecord::from(vec!["nir", "nir"]);
        assert!(columns(&h, Theme::FluVaccination).is_err());
    }

    #[test]
    fn rows_become_contacts() {
        let h = csv::StringRecord::from(vec![
            "nir",
            "last_name",
            "first_name",
            "birth_date",
            "phone",
            "postcode",
            "flu_vaccinated",
        ]);
        let cols = columns(&h, Theme::FluVaccination).unwrap();
        let r = csv::StringRecord::from(vec![
            "2 55 08 14 168 025 38",
            "Martin",
            "Jeanne",
            "14/08/1955",
            "06 12 34 56 78",
            "75011",
            "non",
        ]);
        let c = contact(Theme::FluVaccination, &cols, &r, 2, "fabc").unwrap();
        assert_eq!(c.submission_ref, "fabc-2");
        match c.person {
            Some(Person::Insured(p)) => assert_eq!(p.birth_date, "1955-08-14"),
            other => panic!("{other:?}"),
        }
        let bad = csv::StringRecord::from(vec!["x", "M", "J", "", "", "", "peut-être"]);
        let e = contact(Theme::FluVaccination, &cols, &bad, 3, "fabc").unwrap_err();
        assert_eq!((e.row, e.rule), (3, "csv.boolean"));
    }
}
