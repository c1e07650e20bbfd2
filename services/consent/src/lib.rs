//! Consent: the opt-in / opt-out register per person key, channel and scope. It clears or
//! suppresses every accepted contact before it is planned, and announces every change so
//! planned and queued calls of a person who opted out are withdrawn.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, BatchHandler, ConsumerSpec, HandlerError, Incoming, Outbox, Verdict};
use cnmas_domain::outcome::Channel;
use cnmas_domain::person::{Identity, PersonKeyer};
use cnmas_domain::theme::Theme;
use cnmas_proto::common::{ConsentChange, Reason};
use cnmas_proto::consent::{
    person_consent::Identifier, ConsentChanged, ContactCleared, ContactSuppressed, ContactsCleared,
    UpdateConsents,
};
use cnmas_proto::dialer::InterviewCompleted;
use cnmas_proto::intake::{ContactRejected, ContactsAccepted};
use cnmas_proto::support::{
    channel_from_proto, channel_to_proto, derived_id, envelope, from_timestamp, theme_from_proto,
    theme_to_proto,
};
use cnmas_runtime::config::var;
use cnmas_runtime::service::{Base, Running};
use cnmas_runtime::CommonConfig;
use prost::Message;
use sqlx::{PgConnection, Row};
use std::collections::HashSet;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod rights;

pub const SERVICE: &str = "consent";

#[derive(Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `CNMAS_PERSON_KEY_SECRET`: the same secret as intake's, to key the funds' opt-outs.
    pub person_key_secret: String,
    /// Retention periods and purge schedule (`CNMAS_RETENTION_*`, `CNMAS_PURGE_INTERVAL_SECONDS`).
    pub retention: cnmas_runtime::rights::Retention,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Ok(Config {
            common: CommonConfig::from_env()?,
            person_key_secret: var("CNMAS_PERSON_KEY_SECRET")
                .context("CNMAS_PERSON_KEY_SECRET is required")?,
            retention: cnmas_runtime::rights::Retention::from_env()?,
        })
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let keyer = PersonKeyer::new(&config.person_key_secret)?;
    let base = Base::boot(
        SERVICE,
        &config.common,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "consent_accepted",
            "cnmas.evt.v1.intake.contacts_accepted",
        ),
        Arc::new(Screening),
    );
    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "consent_calls",
            "cnmas.evt.v1.dialer.interview_completed",
        ),
        Arc::new(CallConsents),
    );
    base.spawn_consumer(
        ConsumerSpec::new(SERVICE, "consent_funds", "cnmas.in.v1.*.consent"),
        Arc::new(FundConsents { keyer }),
    );
    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "consent_rectifications",
            "cnmas.evt.v1.intake.contact_rectified",
        ),
        Arc::new(rights::Rectifications),
    );
    let person_data = cnmas_runtime::rights::start(
        &base,
        Arc::new(rights::ConsentData),
        config.retention,
        "consent_closures",
    );
    let router = tonic::transport::Server::builder().add_service(person_data);
    let grpc = base.serve_grpc(config.common.grpc_addr, router).await?;
    let http = base.serve_http(config.common.http_addr, None).await?;
    Ok(base.running(Some(grpc), http))
}

/// `*` or a theme code.
fn scope_of(all_themes: bool, theme: Option<Theme>) -> Option<String> {
    match (all_themes, theme) {
        (true, _) => Some("*".into()),
        (false, Some(t)) => Some(t.code().into()),
        (false, None) => None,
    }
}

/// Clears or suppresses each accepted contact against the register.
struct Screening;

/// Columns of the `decisions` rows written by one batch.
#[derive(Default)]
struct DecisionRows {
    contact_ids: Vec<Uuid>,
    campaign_ids: Vec<Uuid>,
    person_keys: Vec<String>,
    themes: Vec<String>,
    decisions: Vec<String>,
}

impl BatchHandler for Screening {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = vec![Verdict::Done; batch.len()];
        let mut accepted = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match ContactsAccepted::decode(m.payload.clone()) {
                Ok(set) => accepted.extend(set.contacts),
                Err(e) => verdicts[i] = Verdict::DeadLetter(format!("undecodable: {e}")),
            }
        }
        let mut cleared = Vec::with_capacity(accepted.len());
        let keys: Vec<&str> = accepted.iter().map(|a| a.person_key.as_str()).collect();
        let opted_out: HashSet<(String, String)> = sqlx::query(
            "SELECT person_key, scope FROM register
             WHERE person_key = ANY($1) AND channel = 'phone' AND opted_out",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.get("person_key"), r.get("scope")))
        .collect();

        let mut rows = DecisionRows::default();
        for a in accepted {
            let env = a.envelope.clone().unwrap_or_default();
            let (Ok(contact_id), Ok(campaign_id)) = (
                Uuid::parse_str(&a.contact_id),
                Uuid::parse_str(&env.campaign_id),
            ) else {
                continue;
            };
            let theme = theme_from_proto(a.theme)
                .map(Theme::code)
                .unwrap_or_default();
            let suppressed = opted_out.contains(&(a.person_key.clone(), "*".into()))
                || opted_out.contains(&(a.person_key.clone(), theme.to_string()));
            let now = Utc::now();
            let envelope_of = |event_id: &str| {
                Some(envelope(
                    event_id.to_string(),
                    &env.fund_code,
                    &env.campaign_id,
                    &env.event_id,
                    now,
                ))
            };
            if suppressed {
                let event_id = derived_id(&["suppressed", &a.contact_id]);
                outbox.push(
                    subjects::event(SERVICE, "contact_suppressed"),
                    &event_id,
                    &ContactSuppressed {
                        envelope: envelope_of(&event_id),
                        contact_id: a.contact_id.clone(),
                        channel: channel_to_proto(Channel::Phone) as i32,
                        reason: "consent.opted_out".into(),
                    },
                );
            } else {
                let event_id = derived_id(&["cleared", &a.contact_id]);
                cleared.push(ContactCleared {
                    envelope: envelope_of(&event_id),
                    contact_id: a.contact_id.clone(),
                    person_key: a.person_key.clone(),
                    theme: a.theme,
                    territory: a.territory.clone(),
                    department: a.department.clone(),
                    time_zone: a.time_zone.clone(),
                    priority_key: a.priority_key,
                });
            }
            rows.contact_ids.push(contact_id);
            rows.campaign_ids.push(campaign_id);
            rows.person_keys.push(a.person_key);
            rows.themes.push(theme.to_string());
            rows.decisions
                .push(if suppressed { "suppressed" } else { "cleared" }.to_string());
        }
        outbox.push_set(
            &subjects::event(SERVICE, "contacts_cleared"),
            cleared,
            |contacts| ContactsCleared { contacts },
        );
        if !rows.contact_ids.is_empty() {
            sqlx::query(
                "INSERT INTO decisions (contact_id, campaign_id, person_key, theme, decision)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(rows.contact_ids)
            .bind(rows.campaign_ids)
            .bind(rows.person_keys)
            .bind(rows.themes)
            .bind(rows.decisions)
            .execute(&mut *tx)
            .await?;
        }
        Ok(verdicts)
    }
}

/// One change of the register, from a fund or a call.
struct Change {
    person_key: String,
    channel: Channel,
    scope: String,
    theme: Option<Theme>,
    opted_out: bool,
    all_themes: bool,
    source: &'static str,
    fund_code: String,
    evidence: String,
    at: DateTime<Utc>,
    cause: String,
}

/// Records changes (the latest wins per person, channel and scope) and announces each.
async fn apply(
    tx: &mut PgConnection,
    changes: Vec<Change>,
    outbox: &mut Outbox,
) -> Result<(), HandlerError> {
    for (i, c) in changes.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO register (person_key, channel, scope, opted_out, source, fund_code,
                 evidence, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (person_key, channel, scope) DO UPDATE SET
                 opted_out = EXCLUDED.opted_out, source = EXCLUDED.source,
                 fund_code = EXCLUDED.fund_code, evidence = EXCLUDED.evidence,
                 changed_at = EXCLUDED.changed_at
             WHERE register.changed_at <= EXCLUDED.changed_at",
        )
        .bind(&c.person_key)
        .bind(c.channel.code())
        .bind(&c.scope)
        .bind(c.opted_out)
        .bind(c.source)
        .bind(&c.fund_code)
        .bind(&c.evidence)
        .bind(c.at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO register_history (person_key, channel, scope, opted_out, source,
                 fund_code, evidence, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.person_key)
        .bind(c.channel.code())
        .bind(&c.scope)
        .bind(c.opted_out)
        .bind(c.source)
        .bind(&c.fund_code)
        .bind(&c.evidence)
        .bind(c.at)
        .execute(&mut *tx)
        .await?;
        let event_id = derived_id(&["consent_changed", &c.cause, &i.to_string()]);
        outbox.push(
            subjects::event(SERVICE, "consent_changed"),
            &event_id,
            &ConsentChanged {
                envelope: Some(envelope(
                    event_id.clone(),
                    &c.fund_code,
                    "",
                    &c.cause,
                    Utc::now(),
                )),
                person_key: c.person_key,
                change: Some(ConsentChange {
                    channel: channel_to_proto(c.channel) as i32,
                    opted_out: c.opted_out,
                    all_themes: c.all_themes,
                }),
                theme: c.theme.map(theme_to_proto).unwrap_or_default() as i32,
                source: c.source.into(),
            },
        );
        metrics::counter!("cnmas_consent_changes_total", "source" => c.source).increment(1);
    }
    Ok(())
}

/// Opt-ins and opt-outs a person expressed during a call.
struct CallConsents;

impl BatchHandler for CallConsents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = vec![Verdict::Done; batch.len()];
        let mut changes = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let Ok(interview) = InterviewCompleted::decode(m.payload.clone()) else {
                verdicts[i] = Verdict::DeadLetter("undecodable InterviewCompleted".into());
                continue;
            };
            let env = interview.envelope.clone().unwrap_or_default();
            let at = env
                .occurred_at
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or_else(Utc::now);
            let theme = theme_from_proto(interview.theme);
            for c in &interview.consent_changes {
                let (Some(channel), Some(scope)) =
                    (channel_from_proto(c.channel), scope_of(c.all_themes, theme))
                else {
                    continue;
                };
                changes.push(Change {
                    person_key: interview.person_key.clone(),
                    channel,
                    scope,
                    theme,
                    opted_out: c.opted_out,
                    all_themes: c.all_themes,
                    source: "call",
                    fund_code: env.fund_code.clone(),
                    evidence: format!("attempt:{}", interview.attempt_id),
                    at,
                    cause: m.event_id.clone(),
                });
            }
        }
        apply(tx, changes, outbox).await?;
        Ok(verdicts)
    }
}

/// Opt-ins and opt-outs pushed by the funds.
struct FundConsents {
    keyer: PersonKeyer,
}

fn reject(outbox: &mut Outbox, fund: &str, cause: &str, index: u32, reasons: Vec<Reason>) {
    let event_id = derived_id(&["consent_rejection", cause, &index.to_string()]);
    outbox.push(
        subjects::fund_out(fund, "rejection"),
        &event_id,
        &ContactRejected {
            envelope: Some(envelope(event_id.clone(), fund, "", cause, Utc::now())),
            submission_ref: String::new(),
            reasons,
            index,
        },
    );
}

fn reason(field: &str, rule: &str, message: &str) -> Reason {
    Reason {
        field: field.into(),
        rule: rule.into(),
        message: message.into(),
    }
}

impl BatchHandler for FundConsents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut changes = Vec::new();
        for m in batch {
            let fund = subjects::fund_of(&m.subject)
                .unwrap_or_default()
                .to_string();
            let Ok(update) = UpdateConsents::decode(m.payload.clone()) else {
                reject(
                    outbox,
                    &fund,
                    &m.event_id,
                    0,
                    vec![reason(
                        "message",
                        "message.undecodable",
                        "not an UpdateConsents message",
                    )],
                );
                continue;
            };
            let env = update.envelope.clone().unwrap_or_default();
            if env.fund_code != fund {
                reject(
                    outbox,
                    &fund,
                    &m.event_id,
                    0,
                    vec![reason(
                        "envelope.fund_code",
                        "fund.subject_mismatch",
                        "the envelope's fund code must be the <fund> of the subject",
                    )],
                );
                continue;
            }
            let at = env
                .occurred_at
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or_else(Utc::now);
            for (index, p) in update.consents.iter().enumerate() {
                let index = index as u32;
                let identity = match &p.identifier {
                    Some(Identifier::Nir(n)) => Identity::nir(n),
                    Some(Identifier::PsNumber(n)) => Identity::ps(n),
                    Some(Identifier::Siret(n)) => Identity::siret(n),
                    None => {
                        reject(
                            outbox,
                            &fund,
                            &m.event_id,
                            index,
                            vec![reason(
                                "identifier",
                                "required",
                                "a NIR, PS number or SIRET is required",
                            )],
                        );
                        continue;
                    }
                };
                let identity = match identity {
                    Ok(i) => i,
                    Err(e) => {
                        reject(
                            outbox,
                            &fund,
                            &m.event_id,
                            index,
                            vec![reason("identifier", e.code(), &e.to_string())],
                        );
                        continue;
                    }
                };
                let change = p.change.unwrap_or_default();
                let theme = theme_from_proto(p.theme);
                let (Some(channel), Some(scope)) = (
                    channel_from_proto(change.channel),
                    scope_of(change.all_themes, theme),
                ) else {
                    reject(
                        outbox,
                        &fund,
                        &m.event_id,
                        index,
                        vec![reason(
                            "change",
                            "consent.scope",
                            "a channel, and a theme unless all_themes, are required",
                        )],
                    );
                    continue;
                };
                if p.evidence.chars().count() > 200 {
                    reject(
                        outbox,
                        &fund,
                        &m.event_id,
                        index,
                        vec![reason(
                            "evidence",
                            "text.too_long",
                            "at most 200 characters",
                        )],
                    );
                    continue;
                }
                changes.push(Change {
                    person_key: self.keyer.key(&identity),
                    channel,
                    scope,
                    theme,
                    opted_out: change.opted_out,
                    all_themes: change.all_themes,
                    source: "fund",
                    fund_code: fund.clone(),
                    evidence: p.evidence.trim().to_string(),
                    at,
                    cause: format!("{}:{index}", m.event_id),
                });
            }
        }
        apply(tx, changes, outbox).await?;
        Ok(vec![Verdict::Done; batch.len()])
    }
}
