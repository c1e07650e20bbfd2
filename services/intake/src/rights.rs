//! The rights of the people called, as the funds exercise them (`RightsService`): subject
//! access across every service, rectification, and the retention purge run across services.
//!
//! Intake alone can turn an identifier (NIR, PS number, SIRET) into the person key and the
//! contact ids. It asks every other service's `PersonDataService` (with a short-lived service
//! token) for what it holds, and answers one JSON document. Vault fields are opened for the
//! export — the person's own data going to their fund — and never logged.

use crate::submission::{self, reason};
use crate::vault::Vault;
use crate::State;
use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, Outbox};
use cnmas_domain::person::Identity;
use cnmas_domain::theme::{Field, Population, Theme};
use cnmas_proto::common::{PostalAddress, Reason};
use cnmas_proto::intake::contact_submission::{Person, ThemeFields};
use cnmas_proto::intake::{
    AmeliActivationFields, ChildDentalExamFields, ContactDetails, ContactSubmission, Employer,
    FluVaccinationFields, HealthProfessional, InsuredPerson, TeleservicesFields,
};
use cnmas_proto::rights::person_data_service_client::PersonDataServiceClient;
use cnmas_proto::rights::{
    self as pb, person_identifier::Id, rights_service_server::RightsService,
};
use cnmas_proto::support::{derived_id, envelope, from_timestamp, timestamp};
use cnmas_runtime::auth::{principal, Bearer, Principal, Role};
use cnmas_runtime::rights::{
    delete_campaign_rows, item, ExpiredCampaign, PersonData, Purged, Retention,
};
use prost::Message;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

const SERVICE: &str = crate::SERVICE;

/// Where the other services' `PersonDataService` answers (`CNMAS_CONSENT_URL`,
/// `CNMAS_SCHEDULER_URL`, `CNMAS_DIALER_URL`, `CNMAS_RESULTS_URL`).
#[derive(Debug, Clone)]
pub struct Peers {
    pub consent: String,
    pub scheduler: String,
    pub dialer: String,
    pub results: String,
}

impl Peers {
    pub fn from_env() -> Self {
        use cnmas_runtime::config::var_or;
        Peers {
            consent: var_or("CNMAS_CONSENT_URL", "http://127.0.0.1:50052"),
            scheduler: var_or("CNMAS_SCHEDULER_URL", "http://127.0.0.1:50053"),
            dialer: var_or("CNMAS_DIALER_URL", "http://127.0.0.1:50054"),
            results: var_or("CNMAS_RESULTS_URL", "http://127.0.0.1:50055"),
        }
    }

    /// Lazy channels, one per service, in export order.
    pub fn channels(&self) -> anyhow::Result<Vec<(&'static str, Channel)>> {
        let mut out = Vec::new();
        for (name, url, var) in [
            ("consent", &self.consent, "CNMAS_CONSENT_URL"),
            ("scheduler", &self.scheduler, "CNMAS_SCHEDULER_URL"),
            ("dialer-queue", &self.dialer, "CNMAS_DIALER_URL"),
            ("results", &self.results, "CNMAS_RESULTS_URL"),
        ] {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("{var}: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .connect_lazy();
            out.push((name, channel));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Intake's own PersonData: the vault, the card audit, the rectification audit.

pub struct IntakeData {
    pub vault: Vault,
}

fn open_fields(
    vault: &Vault,
    contact_id: Uuid,
    row: &sqlx::postgres::PgRow,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let plain = vault
        .open(
            row.get("key_id"),
            contact_id.as_bytes(),
            row.get("nonce"),
            row.get("sealed"),
        )
        .map_err(|e| sqlx::Error::Protocol(format!("vault: {e}")))?;
    serde_json::from_slice(&plain).map_err(|e| sqlx::Error::Protocol(format!("vault json: {e}")))
}

#[tonic::async_trait]
impl PersonData for IntakeData {
    async fn export(
        &self,
        pool: &PgPool,
        _person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<pb::DataItem>, sqlx::Error> {
        let fund = fund.unwrap_or_default();
        let mut items = Vec::new();
        let rows = sqlx::query(
            "SELECT contact_id, campaign_id, fund_code, submission_ref, theme, territory,
                    department, key_id, nonce, sealed, created_at
             FROM contacts WHERE contact_id = ANY($1) AND ($2 = '' OR fund_code = $2)
             ORDER BY created_at",
        )
        .bind(contact_ids)
        .bind(fund)
        .fetch_all(pool)
        .await?;
        let mut mine = Vec::new();
        for r in &rows {
            let contact_id: Uuid = r.get("contact_id");
            mine.push(contact_id);
            let mut fields = open_fields(&self.vault, contact_id, r)?;
            // The provisional AMELI code is a credential: its presence is shown, never its
            // value (the fund issued it; an export file must not carry it).
            if let Some(code) = fields.get_mut(Field::AmeliProvisionalCode.code()) {
                *code = "(credential, not exported)".into();
            }
            let last = sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT max(at) FROM rectification_audit WHERE contact_id = $1",
            )
            .bind(contact_id)
            .fetch_one(pool)
            .await?;
            items.push(item(
                SERVICE,
                "contacts",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(contact_id),
                Some(r.get("created_at")),
                last,
                json!({"submission_ref": r.get::<String, _>("submission_ref"),
                       "theme": r.get::<String, _>("theme"),
                       "territory": r.get::<String, _>("territory"),
                       "department": r.get::<String, _>("department"),
                       "fields": fields}),
            ));
        }
        for r in sqlx::query(
            "SELECT a.contact_id, a.campaign_id, a.agent_id, a.action, a.at, c.fund_code
             FROM card_audit a JOIN contacts c ON c.contact_id = a.contact_id
             WHERE a.contact_id = ANY($1) ORDER BY a.at",
        )
        .bind(&mine)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "card_audit",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                Some(r.get("at")),
                None,
                json!({"agent_id": r.get::<String, _>("agent_id"),
                       "action": r.get::<String, _>("action")}),
            ));
        }
        for r in sqlx::query(
            "SELECT contact_id, campaign_id, fund_code, actor, fields_changed, reason, at
             FROM rectification_audit WHERE contact_id = ANY($1) ORDER BY at",
        )
        .bind(&mine)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "rectification_audit",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                Some(r.get("at")),
                None,
                json!({"actor": r.get::<String, _>("actor"),
                       "fields_changed": r.get::<Vec<String>, _>("fields_changed"),
                       "reason": r.get::<String, _>("reason")}),
            ));
        }
        Ok(items)
    }

    async fn purge_campaign(
        &self,
        tx: &mut PgConnection,
        campaign: &ExpiredCampaign,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        let id = campaign.campaign_id;
        // The audits go with the data they are about: they cover its whole life.
        let mut out =
            delete_campaign_rows(tx, id, &["card_audit", "rectification_audit", "contacts"])
                .await?;
        // The per-row rejection reports of the campaign's file imports (fund references).
        let rows = sqlx::query(
            "DELETE FROM import_rejections r USING imports i
             WHERE i.fund_code = r.fund_code AND i.import_id = r.import_id
               AND i.campaign_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        out.push(Purged {
            campaign_id: Some(id),
            table: "import_rejections",
            rows,
        });
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Rectification: stored fields ⇄ a submission, so the intake rules validate the result.

/// The field codes a fund may name (`address` is accepted for `postal_address`).
fn field_of(code: &str) -> Option<Field> {
    const ALL: [Field; 21] = [
        Field::Nir,
        Field::LastName,
        Field::FirstName,
        Field::BirthDate,
        Field::PostalAddress,
        Field::Postcode,
        Field::Phone,
        Field::Email,
        Field::ChildLastName,
        Field::ChildFirstName,
        Field::ChildAge,
        Field::ChildBirthDate,
        Field::FluVaccinated,
        Field::EbdEntitlementEnd,
        Field::AmeliProvisionalCode,
        Field::PsNumber,
        Field::PracticeSoftware,
        Field::TeleservicesUsageRate,
        Field::CompanyName,
        Field::Siret,
        Field::CorrespondentName,
    ];
    let code = if code == "address" {
        "postal_address"
    } else {
        code
    };
    ALL.into_iter().find(|f| f.code() == code)
}

/// Rebuilds the submission a contact's stored fields came from (the validation normalises
/// again, so a value that passed once passes again).
fn to_submission(
    submission_ref: &str,
    theme: Theme,
    stored: &BTreeMap<String, String>,
) -> ContactSubmission {
    let get = |f: Field| stored.get(f.code()).cloned().unwrap_or_default();
    let person = match theme.population() {
        Population::Insured => Person::Insured(InsuredPerson {
            nir: get(Field::Nir),
            last_name: get(Field::LastName),
            first_name: get(Field::FirstName),
            birth_date: get(Field::BirthDate),
        }),
        Population::HealthProfessional => Person::Professional(HealthProfessional {
            ps_number: get(Field::PsNumber),
            last_name: get(Field::LastName),
            first_name: get(Field::FirstName),
        }),
        Population::Employer => Person::Employer(Employer {
            company_name: get(Field::CompanyName),
            siret: get(Field::Siret),
            correspondent_name: get(Field::CorrespondentName),
        }),
    };
    let address = get(Field::PostalAddress);
    let postcode = get(Field::Postcode);
    let postal_address = (!address.is_empty() || !postcode.is_empty()).then(|| PostalAddress {
        lines: address.split('\n').map(str::to_string).collect(),
        postcode,
        city: String::new(),
    });
    let theme_fields = match theme {
        Theme::FluVaccination => Some(ThemeFields::FluVaccination(FluVaccinationFields {
            flu_vaccinated: stored
                .get(Field::FluVaccinated.code())
                .and_then(|v| v.parse().ok()),
        })),
        Theme::ChildDentalExam => Some(ThemeFields::ChildDentalExam(ChildDentalExamFields {
            child_last_name: get(Field::ChildLastName),
            child_first_name: get(Field::ChildFirstName),
            child_age: stored
                .get(Field::ChildAge.code())
                .and_then(|v| v.parse().ok()),
            child_birth_date: get(Field::ChildBirthDate),
            ebd_entitlement_end: get(Field::EbdEntitlementEnd),
        })),
        Theme::AmeliActivation => Some(ThemeFields::AmeliActivation(AmeliActivationFields {
            provisional_code: get(Field::AmeliProvisionalCode),
        })),
        Theme::TeleservicesProfessional => Some(ThemeFields::Teleservices(TeleservicesFields {
            practice_software: get(Field::PracticeSoftware),
            teleservices_usage_rate: stored
                .get(Field::TeleservicesUsageRate.code())
                .and_then(|v| v.parse().ok()),
        })),
        Theme::EmployerOffer => None,
    };
    ContactSubmission {
        submission_ref: submission_ref.to_string(),
        person: Some(person),
        contact_details: Some(ContactDetails {
            phone: get(Field::Phone),
            email: get(Field::Email),
            postal_address,
        }),
        theme_fields,
    }
}

/// Checks the requested changes' names and values that cannot be read at all. The values are
/// then validated with the theme's rules by [`submission::validate`].
fn check_changes(changes: &HashMap<String, String>) -> Result<Vec<(Field, String)>, Vec<Reason>> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    if changes.is_empty() {
        errs.push(reason(
            "fields",
            "rectification.empty",
            "name at least one field to correct",
        ));
    }
    for (k, v) in changes {
        let key = k.trim();
        match field_of(key) {
            Some(f) => {
                let v = v.trim();
                if v.chars().count() > 2000 {
                    errs.push(reason(
                        &format!("fields.{key}"),
                        "text.too_long",
                        "at most 2000 characters",
                    ));
                } else {
                    out.push((f, v.to_string()));
                }
            }
            None => errs.push(reason(
                &format!("fields.{}", key.chars().take(40).collect::<String>()),
                "rectification.unknown_field",
                "not a field code (see the theme table: last_name, phone, postcode, …)",
            )),
        }
    }
    out.sort();
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// A gRPC INVALID_ARGUMENT naming every field and rule, with the reasons as details.
fn rejected(reasons: Vec<Reason>) -> Status {
    let message = reasons
        .iter()
        .map(|r| format!("{}: {}: {}", r.field, r.rule, r.message))
        .collect::<Vec<_>>()
        .join("; ");
    let details = pb::RectificationRejected { reasons }.encode_to_vec();
    Status::with_details(Code::InvalidArgument, message, details.into())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "rights API failure");
    Status::internal("internal error")
}

fn identity_of(person: Option<&pb::PersonIdentifier>) -> Result<(Identity, &'static str), Status> {
    let bad = |field: &str, e: cnmas_domain::person::IdentityError| {
        rejected(vec![reason(field, e.code(), e.to_string())])
    };
    match person.and_then(|p| p.id.as_ref()) {
        Some(Id::Nir(n)) => Ok((Identity::nir(n).map_err(|e| bad("person.nir", e))?, "nir")),
        Some(Id::PsNumber(n)) => Ok((
            Identity::ps(n).map_err(|e| bad("person.ps_number", e))?,
            "ps_number",
        )),
        Some(Id::Siret(n)) => Ok((
            Identity::siret(n).map_err(|e| bad("person.siret", e))?,
            "siret",
        )),
        None => Err(rejected(vec![reason(
            "person",
            "required",
            "a NIR, PS number or SIRET is required",
        )])),
    }
}

/// The fund a request may act for: a fund token acts for its own fund only (another fund's
/// code is refused without saying whether that fund holds the person); admins and auditors for
/// the fund named, or every fund when none is.
fn acting_fund(who: &Principal, requested: &str) -> Result<Option<String>, Status> {
    let requested = requested.trim();
    match who.role {
        Role::Fund => match who.fund.as_deref() {
            Some(own) if requested.is_empty() || requested == own => Ok(Some(own.to_string())),
            _ => Err(Status::permission_denied(
                "fund_code: fund.scope: a fund exercises rights for its own persons only",
            )),
        },
        _ if requested.is_empty() => Ok(None),
        _ => Ok(Some(requested.to_string())),
    }
}

pub(crate) struct RightsApi {
    pub(crate) state: Arc<State>,
    pub(crate) data: Arc<IntakeData>,
    pub(crate) peers: Vec<(&'static str, Channel)>,
    pub(crate) retention: Retention,
}

impl RightsApi {
    fn service_token(&self) -> Result<String, Status> {
        self.state
            .base
            .auth
            .issue(
                Role::Service,
                SERVICE,
                None,
                None,
                chrono::Duration::minutes(5),
            )
            .map_err(internal)
    }

    fn peer(
        &self,
        channel: &Channel,
    ) -> Result<PersonDataServiceClient<InterceptedService<Channel, Bearer>>, Status> {
        Ok(PersonDataServiceClient::with_interceptor(
            channel.clone(),
            Bearer(self.service_token()?),
        ))
    }
}

/// A peer that did not answer: the export is refused rather than silently incomplete.
fn unavailable(service: &str, e: Status) -> Status {
    tracing::warn!(peer = service, code = ?e.code(), "a service did not answer a rights request");
    Status::unavailable(format!(
        "{service}: rights.service_unavailable: the service did not answer; nothing was changed, retry later"
    ))
}

#[tonic::async_trait]
impl RightsService for RightsApi {
    async fn export_person_data(
        &self,
        req: Request<pb::SubjectAccessRequest>,
    ) -> Result<Response<pb::SubjectAccessExport>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Admin, Role::Auditor])?;
        let r = req.into_inner();
        let fund = acting_fund(&who, &r.fund_code)?;
        let (identity, kind) = identity_of(r.person.as_ref())?;
        let person_key = self.state.keyer.key(&identity);
        let pool = &self.state.base.pool;
        let contact_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT contact_id FROM contacts
             WHERE decode(person_key, 'hex') = decode($1, 'hex') AND ($2 = '' OR fund_code = $2)",
        )
        .bind(&person_key)
        .bind(fund.as_deref().unwrap_or_default())
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        let mut items = self
            .data
            .export(pool, &person_key, &contact_ids, fund.as_deref())
            .await
            .map_err(internal)?;
        let request = pb::ExportPersonDataRequest {
            person_key: person_key.clone(),
            contact_ids: contact_ids.iter().map(Uuid::to_string).collect(),
            fund_code: fund.clone().unwrap_or_default(),
        };
        let calls = self.peers.iter().map(|(name, channel)| {
            let request = request.clone();
            async move {
                let mut client = self.peer(channel)?;
                client
                    .export_person_data(request)
                    .await
                    .map(|r| r.into_inner().items)
                    .map_err(|e| unavailable(name, e))
            }
        });
        for answer in futures::future::join_all(calls).await {
            items.extend(answer?);
        }
        let generated_at = Utc::now();
        let document = json!({
            "format": "cnmas.subject_access.v1",
            "generated_at": generated_at.to_rfc3339(),
            "requested_by": {"subject": who.subject, "role": format!("{:?}", who.role).to_lowercase()},
            "fund_code": fund,
            "identifier_kind": kind,
            "person_key": person_key,
            "contacts": contact_ids.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            "items": items.iter().map(|i| json!({
                "service": i.service, "kind": i.kind,
                "campaign_id": Some(&i.campaign_id).filter(|c| !c.is_empty()),
                "fund_code": Some(&i.fund_code).filter(|c| !c.is_empty()),
                "contact_id": Some(&i.contact_id).filter(|c| !c.is_empty()),
                "recorded_at": i.recorded_at.as_ref().and_then(from_timestamp).map(|t| t.to_rfc3339()),
                "updated_at": i.updated_at.as_ref().and_then(from_timestamp).map(|t| t.to_rfc3339()),
                "data": serde_json::from_str::<serde_json::Value>(&i.data_json).unwrap_or_default(),
            })).collect::<Vec<_>>(),
        });
        // Who asked for whose data, without the data (the identifier stays out of the log).
        tracing::info!(subject = %who.subject, items = items.len(), "subject access export");
        metrics::counter!("cnmas_rights_exports_total").increment(1);
        Ok(Response::new(pb::SubjectAccessExport {
            json: document.to_string(),
            items,
            generated_at: Some(timestamp(generated_at)),
        }))
    }

    async fn rectify_person_data(
        &self,
        req: Request<pb::RectifyRequest>,
    ) -> Result<Response<pb::RectifyResponse>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Admin])?;
        let r = req.into_inner();
        let fund = acting_fund(&who, &r.fund_code)?.ok_or_else(|| {
            rejected(vec![reason(
                "fund_code",
                "required",
                "the fund whose contacts are corrected",
            )])
        })?;
        let (identity, _) = identity_of(r.person.as_ref())?;
        let changes = check_changes(&r.fields).map_err(rejected)?;
        let why = r.reason.trim();
        if why.chars().count() > 200 || why.chars().any(char::is_control) {
            return Err(rejected(vec![reason(
                "reason",
                "text.too_long",
                "at most 200 characters, no control characters",
            )]));
        }
        let campaign =
            match r.campaign_id.trim() {
                "" => None,
                c => Some(Uuid::parse_str(c).map_err(|_| {
                    rejected(vec![reason("campaign_id", "uuid", "not a campaign id")])
                })?),
            };
        let person_key = self.state.keyer.key(&identity);
        let fund_territory = self
            .state
            .funds
            .lookup(&fund)
            .map(|f| f.department.territory())
            .unwrap_or(cnmas_domain::geo::Territory::FR);
        let today = Utc::now()
            .with_timezone(&chrono_tz::Europe::Paris)
            .date_naive();

        let mut tx = self.state.base.pool.begin().await.map_err(internal)?;
        let rows = sqlx::query(
            "SELECT contact_id, campaign_id, submission_ref, theme, territory, department,
                    priority_key, key_id, nonce, sealed,
                    ameli_code_erased_at IS NOT NULL AS code_erased
             FROM contacts WHERE decode(person_key, 'hex') = decode($1, 'hex') AND fund_code = $2
               AND ($3::uuid IS NULL OR campaign_id = $3)
             ORDER BY created_at FOR UPDATE",
        )
        .bind(&person_key)
        .bind(&fund)
        .bind(campaign)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        if rows.is_empty() {
            return Err(Status::not_found(
                "person: rights.unknown_person: no contact of this person for this fund",
            ));
        }
        let mut outbox = Outbox::new();
        let mut answer = Vec::new();
        let mut reasons = Vec::new();
        for row in rows {
            let contact_id: Uuid = row.get("contact_id");
            let campaign_id: Uuid = row.get("campaign_id");
            let theme =
                Theme::from_code(row.get("theme")).ok_or_else(|| internal("stored theme"))?;
            let not_allowed: Vec<Reason> = changes
                .iter()
                .filter(|(f, _)| !theme.spec().allows(*f))
                .map(|(f, _)| {
                    reason(
                        &format!("fields.{}", f.code()),
                        "theme.field_not_allowed",
                        format!("the theme {} does not carry this field", theme.code()),
                    )
                })
                .collect();
            if !not_allowed.is_empty() {
                reasons.extend(not_allowed);
                continue;
            }
            // The provisional AMELI code is erased when its campaign ends; it is not brought back.
            let code_erased: bool = row.get("code_erased");
            let ameli = Field::AmeliProvisionalCode;
            if code_erased && changes.iter().any(|(f, _)| *f == ameli) {
                reasons.push(reason(
                    "fields.ameli_provisional_code",
                    "rectification.credential_erased",
                    "the provisional code was erased when its campaign ended",
                ));
                continue;
            }
            let old = open_fields(&self.state.vault, contact_id, &row).map_err(internal)?;
            let mut new = old.clone();
            for (f, v) in &changes {
                if v.is_empty() {
                    new.remove(f.code());
                } else {
                    new.insert(f.code().to_string(), v.clone());
                }
            }
            // A required field cannot be emptied (the submission form would let an empty name
            // through as "present").
            let present: Vec<Field> = new
                .iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .filter_map(|(k, _)| field_of(k))
                .collect();
            let missing: Vec<Reason> = theme
                .spec()
                .check_fields(&present)
                .into_iter()
                .filter(|e| changes.iter().any(|(f, _)| *f == e.field()))
                .map(|e| {
                    reason(
                        &format!("fields.{}", e.field().code()),
                        e.code(),
                        e.to_string(),
                    )
                })
                .collect();
            if !missing.is_empty() {
                reasons.extend(missing);
                continue;
            }
            let submission_ref: String = row.get("submission_ref");
            // An erased code stays erased: the rules, which require it, see a stand-in.
            let mut checked = new.clone();
            if code_erased {
                checked.insert(ameli.code().to_string(), "ERASED".into());
            }
            let valid = match submission::validate(
                &to_submission(&submission_ref, theme, &checked),
                theme,
                fund_territory,
                today,
            ) {
                Ok(v) => v,
                Err(rs) => {
                    reasons.extend(rs);
                    continue;
                }
            };
            let stored: BTreeMap<String, String> = valid
                .fields
                .iter()
                .filter(|(k, _)| !(code_erased && **k == ameli))
                .map(|(k, v)| (k.code().to_string(), v.clone()))
                .collect();
            let fields_changed: Vec<String> = {
                let mut keys: Vec<&String> = stored.keys().chain(old.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .filter(|k| stored.get(*k) != old.get(*k))
                    .cloned()
                    .collect()
            };
            if fields_changed.is_empty() {
                answer.push(pb::RectifiedContact {
                    contact_id: contact_id.to_string(),
                    campaign_id: campaign_id.to_string(),
                    fields_changed,
                });
                continue;
            }
            let new_key = self.state.keyer.key(&valid.identity);
            let plaintext = serde_json::to_vec(&stored).map_err(internal)?;
            let (key_id, nonce, sealed) = self
                .state
                .vault
                .seal(contact_id.as_bytes(), &plaintext)
                .map_err(internal)?;
            let updated = sqlx::query(
                "UPDATE contacts SET person_key = $2, territory = $3, department = $4,
                     priority_key = $5, key_id = $6, nonce = $7, sealed = $8
                 WHERE contact_id = $1
                   AND NOT EXISTS (SELECT 1 FROM contacts o WHERE o.campaign_id = $9
                                   AND decode(o.person_key, 'hex') = decode($2, 'hex')
                                   AND o.contact_id <> $1)",
            )
            .bind(contact_id)
            .bind(&new_key)
            .bind(valid.territory.code())
            .bind(&valid.department)
            .bind(valid.priority_key)
            .bind(&key_id)
            .bind(&nonce)
            .bind(&sealed)
            .bind(campaign_id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
            if updated == 0 {
                reasons.push(reason(
                    "person",
                    "contact.duplicate_person",
                    "the corrected identifier is already another contact of the campaign",
                ));
                continue;
            }
            sqlx::query(
                "INSERT INTO rectification_audit (contact_id, campaign_id, fund_code, actor,
                     fields_changed, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(contact_id)
            .bind(campaign_id)
            .bind(&fund)
            .bind(&who.subject)
            .bind(&fields_changed)
            .bind(why)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            let time_zone = match cnmas_domain::geo::Department::parse(&valid.department) {
                Ok(d) => d.time_zone(),
                Err(_) => valid.territory.time_zone(),
            };
            let event_id = Uuid::new_v4().to_string();
            outbox.push(
                subjects::event(SERVICE, "contact_rectified"),
                &event_id,
                &pb::ContactRectified {
                    envelope: Some(envelope(
                        event_id.clone(),
                        &fund,
                        &campaign_id.to_string(),
                        &derived_id(&["rectification", &contact_id.to_string()]),
                        Utc::now(),
                    )),
                    contact_id: contact_id.to_string(),
                    fields_changed: fields_changed.clone(),
                    territory: valid.territory.code().to_string(),
                    department: valid.department.clone(),
                    time_zone: time_zone.name().to_string(),
                    priority_key: valid.priority_key,
                    previous_person_key: if new_key != person_key {
                        person_key.clone()
                    } else {
                        String::new()
                    },
                    person_key: new_key,
                },
            );
            answer.push(pb::RectifiedContact {
                contact_id: contact_id.to_string(),
                campaign_id: campaign_id.to_string(),
                fields_changed,
            });
        }
        if !reasons.is_empty() {
            // All or nothing: one contact refused leaves every contact as it was.
            reasons.dedup();
            return Err(rejected(reasons));
        }
        outbox.flush(&mut tx).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.state.base.relay.wake();
        tracing::info!(subject = %who.subject, contacts = answer.len(), "rectification recorded");
        metrics::counter!("cnmas_rights_rectifications_total").increment(answer.len() as u64);
        Ok(Response::new(pb::RectifyResponse { contacts: answer }))
    }

    async fn purge_expired(
        &self,
        req: Request<pb::PurgeExpiredRequest>,
    ) -> Result<Response<pb::PurgeAllResponse>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Admin])?;
        let dry_run = req.get_ref().dry_run;
        let now = Utc::now();
        let own = cnmas_runtime::rights::run_purge(
            &self.state.base,
            self.data.as_ref(),
            &self.retention,
            now,
            &who.subject,
            dry_run,
        )
        .await
        .map_err(internal)?;
        let mut services = vec![pb::PurgeExpiredResponse {
            service: SERVICE.into(),
            dry_run,
            at: Some(timestamp(now)),
            purged: cnmas_runtime::rights::purged_to_proto(SERVICE, &own),
        }];
        // Each service logs its purge under the operator who asked (the service token carries
        // intake as subject, so the operator is passed on as the token's subject).
        let token = self
            .state
            .base
            .auth
            .issue(
                Role::Service,
                &who.subject,
                None,
                None,
                chrono::Duration::minutes(5),
            )
            .map_err(internal)?;
        for (name, channel) in &self.peers {
            let mut client =
                PersonDataServiceClient::with_interceptor(channel.clone(), Bearer(token.clone()));
            let r = client
                .purge_expired(pb::PurgeExpiredRequest { dry_run })
                .await
                .map_err(|e| unavailable(name, e))?;
            services.push(r.into_inner());
        }
        Ok(Response::new(pb::PurgeAllResponse { services }))
    }

    async fn list_purges(
        &self,
        req: Request<pb::ListPurgesRequest>,
    ) -> Result<Response<pb::ListPurgesResponse>, Status> {
        principal(&req)?.require(&[Role::Auditor, Role::Admin])?;
        let r = req.into_inner();
        let mut purges = cnmas_runtime::rights::list_purges(&self.state.base, &r).await?;
        for (name, channel) in &self.peers {
            let mut client = self.peer(channel)?;
            let answer = client
                .list_purges(r.clone())
                .await
                .map_err(|e| unavailable(name, e))?;
            purges.extend(answer.into_inner().purges);
        }
        purges.sort_by(|a, b| {
            let t = |p: &pb::PurgeRecord| p.at.as_ref().map(|t| (t.seconds, t.nanos));
            t(b).cmp(&t(a))
        });
        Ok(Response::new(pb::ListPurgesResponse { purges }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnmas_domain::geo::Territory;

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 28).expect("a date")
    }

    /// What the vault would hold for `submission`.
    fn stored(submission: &ContactSubmission, theme: Theme) -> BTreeMap<String, String> {
        submission::validate(submission, theme, Territory::FR, today())
            .expect("a valid contact")
            .fields
            .into_iter()
            .map(|(k, v)| (k.code().to_string(), v))
            .collect()
    }

    /// A contact rebuilt from the vault validates to exactly the same fields: correcting one
    /// field never changes another.
    fn round_trips(submission: ContactSubmission, theme: Theme) {
        let first = stored(&submission, theme);
        let again = stored(&to_submission("ref-1", theme, &first), theme);
        assert_eq!(first, again, "{theme:?}");
    }

    #[test]
    fn stored_contacts_of_every_population_revalidate_unchanged() {
        round_trips(
            ContactSubmission {
                submission_ref: "ref-1".into(),
                person: Some(Person::Insured(InsuredPerson {
                    nir: "2 55 08 14 168 025 38".into(),
                    last_name: "Martin".into(),
                    first_name: "Jeanne".into(),
                    birth_date: "1955-08-14".into(),
                })),
                contact_details: Some(ContactDetails {
                    phone: "0690 12 34 56".into(),
                    email: "jeanne@example.fr".into(),
                    postal_address: Some(PostalAddress {
                        lines: vec!["12 rue des Palmiers".into(), "Bât. B".into()],
                        postcode: "97110".into(),
                        city: "Pointe-à-Pitre".into(),
                    }),
                }),
                theme_fields: Some(ThemeFields::FluVaccination(FluVaccinationFields {
                    flu_vaccinated: Some(true),
                })),
            },
            Theme::FluVaccination,
        );
        round_trips(
            ContactSubmission {
                submission_ref: "ref-1".into(),
                person: Some(Person::Employer(Employer {
                    company_name: "Boulangerie du Port".into(),
                    siret: "35600000049837".into(),
                    correspondent_name: "M. Durand".into(),
                })),
                contact_details: Some(ContactDetails {
                    phone: "01 44 55 66 77".into(),
                    email: String::new(),
                    postal_address: None,
                }),
                theme_fields: None,
            },
            Theme::EmployerOffer,
        );
    }

    #[test]
    fn changes_are_named_by_field_code_and_checked() {
        let ok = HashMap::from([
            ("phone".to_string(), " 0690 12 34 56 ".to_string()),
            ("address".to_string(), "1 rue X".to_string()),
        ]);
        assert_eq!(
            check_changes(&ok).expect("known fields"),
            vec![
                (Field::PostalAddress, "1 rue X".to_string()),
                (Field::Phone, "0690 12 34 56".to_string()),
            ]
        );
        let bad = HashMap::from([("shoe_size".to_string(), "42".to_string())]);
        let errs = check_changes(&bad).expect_err("unknown field");
        assert_eq!(errs[0].field, "fields.shoe_size");
        assert_eq!(errs[0].rule, "rectification.unknown_field");
        let errs = check_changes(&HashMap::new()).expect_err("nothing to change");
        assert_eq!(errs[0].rule, "rectification.empty");
    }

    #[test]
    fn a_fund_acts_for_itself_only() {
        let fund = Principal {
            subject: "cpam-751".into(),
            role: Role::Fund,
            fund: Some("751".into()),
            agent: None,
        };
        assert_eq!(acting_fund(&fund, "").expect("own"), Some("751".into()));
        assert_eq!(acting_fund(&fund, "751").expect("own"), Some("751".into()));
        assert_eq!(
            acting_fund(&fund, "971").expect_err("another fund").code(),
            Code::PermissionDenied
        );
        let auditor = Principal {
            role: Role::Auditor,
            fund: None,
            ..fund
        };
        assert_eq!(acting_fund(&auditor, "").expect("any"), None);
        assert_eq!(
            acting_fund(&auditor, "971").expect("any"),
            Some("971".into())
        );
    }
}
