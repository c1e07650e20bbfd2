//! The two consumers of intake: the campaign projection, and the funds' contact submissions.

use crate::submission::{self, reason, ValidContact};
use crate::State;
use chrono::{NaiveDate, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_domain::geo::Territory;
use cnmas_domain::theme::Theme;
use cnmas_proto::common::Reason;
use cnmas_proto::intake::{
    ContactAccepted, ContactRejected, ContactSubmission, ContactsAccepted, SubmitContacts,
};
use cnmas_proto::scheduler::{CampaignChanged, CampaignState};
use cnmas_proto::support::{derived_id, envelope, theme_to_proto};
use prost::Message;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Keeps intake's view of each campaign (fund, theme, state) from `CampaignChanged`.
pub struct CampaignProjection;

impl BatchHandler for CampaignProjection {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        _outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for m in batch {
            let Ok(event) = CampaignChanged::decode(m.payload.clone()) else {
                verdicts.push(Verdict::DeadLetter("undecodable CampaignChanged".into()));
                continue;
            };
            let Some(c) = event.campaign else {
                verdicts.push(Verdict::DeadLetter(
                    "CampaignChanged without campaign".into(),
                ));
                continue;
            };
            let (Ok(id), Some(theme)) = (
                Uuid::parse_str(&c.campaign_id),
                cnmas_proto::support::theme_from_proto(c.theme),
            ) else {
                verdicts.push(Verdict::DeadLetter(
                    "CampaignChanged with bad id or theme".into(),
                ));
                continue;
            };
            let state = match CampaignState::try_from(c.state).unwrap_or_default() {
                CampaignState::Draft => "draft",
                CampaignState::Active => "active",
                CampaignState::Paused => "paused",
                CampaignState::Completed => "completed",
                CampaignState::Cancelled => "cancelled",
                CampaignState::Unspecified => "unknown",
            };
            let ends_on = NaiveDate::parse_from_str(&c.ends_on, "%Y-%m-%d").ok();
            // Snapshots may arrive out of order: keep the highest version.
            sqlx::query(
                "INSERT INTO campaigns (campaign_id, fund_code, theme, state, ends_on, version)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (campaign_id) DO UPDATE SET state = EXCLUDED.state,
                     ends_on = EXCLUDED.ends_on, version = EXCLUDED.version
                 WHERE campaigns.version < EXCLUDED.version",
            )
            .bind(id)
            .bind(&c.fund_code)
            .bind(theme.code())
            .bind(state)
            .bind(ends_on)
            .bind(c.version as i64)
            .execute(&mut *tx)
            .await?;
            verdicts.push(Verdict::Done);
        }
        Ok(verdicts)
    }
}

/// How long a submission for a campaign intake has not heard of yet is retried before it is
/// rejected (the campaign's creation may still be on its way).
const UNKNOWN_CAMPAIGN_DELIVERIES: i64 = 5;

pub struct ContactIntake {
    pub state: Arc<State>,
}

struct KnownCampaign {
    fund_code: String,
    theme: Theme,
    state: String,
}

/// Where submissions come from: one campaign of one fund, through one message or one file.
pub(crate) struct Origin {
    pub campaign_id: Uuid,
    pub fund_code: String,
    pub theme: Theme,
    /// The fund's territory: it reads national phone numbers when no postcode is given.
    pub fund_territory: Territory,
    /// The message's event id or the file import's key: the events' correlation, and part of
    /// the rejections' ids (so re-applying the same input yields the same ids).
    pub correlation: String,
    /// From a file: reasons name the file's columns (`nir`) rather than message fields.
    pub file: bool,
}

/// One submission to admit, and its position (index in its message, or row in its file).
pub(crate) struct Item<'a> {
    pub origin: &'a Origin,
    pub index: u32,
    pub submission: &'a ContactSubmission,
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Accepted,
    /// Same reference already in the campaign: nothing new, nothing said.
    AlreadyReceived,
    /// The same person under another reference.
    Duplicate(Vec<Reason>),
    Rejected(Vec<Reason>),
}

/// A contact that passed validation, waiting for the duplicate checks.
struct Candidate {
    campaign_id: Uuid,
    fund_code: String,
    theme: Theme,
    contact: ValidContact,
    person_key: String,
    correlation: String,
    index: u32,
    /// Its position in the input, for its fate.
    slot: usize,
}

/// A reason as the fund's input names it: for a file, the column instead of the message field.
fn in_terms_of(file: bool, mut r: Reason) -> Reason {
    if file {
        if let Some((column, _)) = cnmas_intake_files::COLUMNS
            .iter()
            .find(|(_, f)| f.is_some_and(|f| submission::path(f) == r.field))
        {
            r.field = column.to_string();
        }
    }
    r
}

/// Validates, dedupes, seals and stores submissions of any origins in the caller's
/// transaction, queuing `ContactsAccepted` and the fund's `ContactRejected` events in `outbox`.
/// The one path for contacts from NATS messages and from files. Returns each one's fate.
pub(crate) async fn admit(
    state: &State,
    tx: &mut PgConnection,
    outbox: &mut Outbox,
    items: &[Item<'_>],
) -> Result<Vec<Fate>, HandlerError> {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let mut fates = vec![Fate::Accepted; items.len()];
    let mut candidates = Vec::new();
    for (slot, item) in items.iter().enumerate() {
        let o = item.origin;
        match submission::validate(item.submission, o.theme, o.fund_territory, today) {
            Ok(contact) => {
                let person_key = state.keyer.key(&contact.identity);
                candidates.push(Candidate {
                    campaign_id: o.campaign_id,
                    fund_code: o.fund_code.clone(),
                    theme: o.theme,
                    contact,
                    person_key,
                    correlation: o.correlation.clone(),
                    index: item.index,
                    slot,
                });
            }
            Err(reasons) => {
                let reasons: Vec<Reason> = reasons
                    .into_iter()
                    .map(|r| in_terms_of(o.file, r))
                    .collect();
                rejection(
                    outbox,
                    &o.fund_code,
                    &o.campaign_id.to_string(),
                    &o.correlation,
                    item.index,
                    &item.submission.submission_ref,
                    reasons.clone(),
                );
                fates[slot] = Fate::Rejected(reasons);
            }
        }
    }
    if !candidates.is_empty() {
        store(state, tx, candidates, outbox, &mut fates).await?;
    }
    Ok(fates)
}

pub(crate) fn rejection(
    outbox: &mut Outbox,
    fund: &str,
    campaign_id: &str,
    cause: &str,
    index: u32,
    submission_ref: &str,
    reasons: Vec<Reason>,
) {
    let event_id = derived_id(&["rejection", cause, &index.to_string()]);
    let event = ContactRejected {
        envelope: Some(envelope(
            event_id.clone(),
            fund,
            campaign_id,
            cause,
            Utc::now(),
        )),
        submission_ref: submission_ref.to_string(),
        reasons,
        index,
    };
    metrics::counter!("cnmas_intake_rejections_total").increment(1);
    outbox.push(subjects::fund_out(fund, "rejection"), &event_id, &event);
}

impl BatchHandler for ContactIntake {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = vec![Verdict::Done; batch.len()];
        let decoded: Vec<Option<SubmitContacts>> = batch
            .iter()
            .map(|m| SubmitContacts::decode(m.payload.clone()).ok())
            .collect();
        let campaign_ids: Vec<Uuid> = decoded
            .iter()
            .flatten()
            .filter_map(|s| s.envelope.as_ref())
            .filter_map(|e| Uuid::parse_str(&e.campaign_id).ok())
            .collect();
        let campaigns: HashMap<Uuid, KnownCampaign> = sqlx::query(
            "SELECT campaign_id, fund_code, theme, state FROM campaigns WHERE campaign_id = ANY($1)",
        )
        .bind(&campaign_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.get("campaign_id"),
                KnownCampaign {
                    fund_code: r.get("fund_code"),
                    theme: Theme::from_code(r.get("theme"))?,
                    state: r.get("state"),
                },
            ))
        })
        .collect();

        let mut accepted: Vec<(Origin, Vec<ContactSubmission>)> = Vec::new();
        for (i, (m, submission)) in batch.iter().zip(decoded).enumerate() {
            let subject_fund = subjects::fund_of(&m.subject)
                .unwrap_or_default()
                .to_string();
            let whole = |outbox: &mut Outbox, campaign: &str, r: Reason| {
                rejection(outbox, &subject_fund, campaign, &m.event_id, 0, "", vec![r]);
            };
            let Some(submission) = submission else {
                whole(
                    outbox,
                    "",
                    reason(
                        "message",
                        "message.undecodable",
                        "not a SubmitContacts protobuf message",
                    ),
                );
                continue;
            };
            let env = submission.envelope.clone().unwrap_or_default();
            if env.fund_code != subject_fund {
                whole(
                    outbox,
                    &env.campaign_id,
                    reason(
                        "envelope.fund_code",
                        "fund.subject_mismatch",
                        "the envelope's fund code must be the <fund> of the subject",
                    ),
                );
                continue;
            }
            if self.state.funds.lookup(&subject_fund).is_err() {
                whole(
                    outbox,
                    &env.campaign_id,
                    reason(
                        "envelope.fund_code",
                        "fund.unknown",
                        "not a known fund code",
                    ),
                );
                continue;
            }
            let Ok(campaign_id) = Uuid::parse_str(&env.campaign_id) else {
                whole(
                    outbox,
                    &env.campaign_id,
                    reason(
                        "envelope.campaign_id",
                        "campaign.bad_id",
                        "not a campaign id (UUID)",
                    ),
                );
                continue;
            };
            let campaign = match campaigns.get(&campaign_id) {
                Some(c) if c.fund_code == subject_fund => c,
                None if m.delivered < UNKNOWN_CAMPAIGN_DELIVERIES => {
                    verdicts[i] = Verdict::Retry(Duration::from_secs(1));
                    continue;
                }
                // Another fund's campaign is reported exactly like a missing one.
                _ => {
                    whole(
                        outbox,
                        &env.campaign_id,
                        reason(
                            "envelope.campaign_id",
                            "campaign.unknown",
                            "no such campaign for this fund",
                        ),
                    );
                    continue;
                }
            };
            if matches!(campaign.state.as_str(), "completed" | "cancelled") {
                whole(
                    outbox,
                    &env.campaign_id,
                    reason(
                        "envelope.campaign_id",
                        "campaign.closed",
                        "the campaign is over",
                    ),
                );
                continue;
            }
            let max = self.state.limits.max_contacts_per_message;
            if submission.contacts.len() > max {
                whole(
                    outbox,
                    &env.campaign_id,
                    reason(
                        "contacts",
                        "message.too_many_contacts",
                        format!("at most {max} contacts per message"),
                    ),
                );
                continue;
            }
            let fund_territory = self
                .state
                .funds
                .lookup(&subject_fund)
                .map(|f| f.department.territory())
                .unwrap_or(Territory::FR);
            accepted.push((
                Origin {
                    campaign_id,
                    fund_code: subject_fund.clone(),
                    theme: campaign.theme,
                    fund_territory,
                    correlation: m.event_id.clone(),
                    file: false,
                },
                submission.contacts,
            ));
        }
        let items: Vec<Item> = accepted
            .iter()
            .flat_map(|(origin, contacts)| {
                contacts
                    .iter()
                    .enumerate()
                    .map(move |(index, submission)| Item {
                        origin,
                        index: index as u32,
                        submission,
                    })
            })
            .collect();
        admit(&self.state, tx, outbox, &items).await?;
        Ok(verdicts)
    }
}

/// Drops what was already received (same reference: idempotent), rejects the same person
/// sent twice under different references, seals and stores the rest in one statement.
///
/// The store is tried first (`ON CONFLICT DO NOTHING`) and only the contacts it refused are
/// looked up, instead of looking every contact up before storing: new contacts are the rule,
/// and the lookup cost as much as the insert (decision 0008).
async fn store(
    state: &State,
    tx: &mut PgConnection,
    candidates: Vec<Candidate>,
    outbox: &mut Outbox,
    fates: &mut [Fate],
) -> Result<(), HandlerError> {
    let mut seen_refs = HashSet::new();
    let mut seen_people = HashSet::new();
    let mut rows: Rows = Rows::default();
    let mut sealed = Vec::with_capacity(candidates.len());
    // A person met again in this batch: an already-received contact or a duplicate, told apart
    // below with the stored references (not stored either way).
    let mut again = Vec::new();
    for c in candidates {
        if !seen_refs.insert((c.campaign_id, c.contact.submission_ref.clone())) {
            fates[c.slot] = Fate::AlreadyReceived;
            continue; // twice in this batch: nothing new, nothing to say
        }
        if !seen_people.insert((c.campaign_id, c.person_key.clone())) {
            again.push(c);
            continue;
        }
        // Time-ordered: every service keys its rows by contact id, and ordered keys are
        // appended to their indexes instead of landing on random pages (no secret: access to a
        // contact is by token, never by knowing its id).
        let contact_id = Uuid::now_v7();
        let fields: HashMap<&str, &str> = c
            .contact
            .fields
            .iter()
            .map(|(k, v)| (k.code(), v.as_str()))
            .collect();
        let plaintext =
            serde_json::to_vec(&fields).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let (key_id, nonce, cipher) = state
            .vault
            .seal(contact_id.as_bytes(), &plaintext)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        rows.push(contact_id, &c, key_id, nonce, cipher);
        sealed.push((contact_id, c));
    }
    let stored = rows.insert(tx).await?;

    // What the store refused, and the persons met again, are in the campaign already: under
    // the same reference (a message or file sent again: silently ignored) or under another one
    // (a duplicate, refused). The lookup sees the rows this transaction just stored.
    let refused: Vec<&Candidate> = sealed
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .map(|(_, c)| c)
        .chain(&again)
        .collect();
    let mut known_refs = HashSet::new();
    if !refused.is_empty() {
        let campaigns: Vec<Uuid> = refused.iter().map(|c| c.campaign_id).collect();
        let refs: Vec<&str> = refused
            .iter()
            .map(|c| c.contact.submission_ref.as_str())
            .collect();
        known_refs = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT c.campaign_id, c.submission_ref FROM contacts c
             JOIN UNNEST($1::uuid[], $2::text[]) AS x(k, r)
               ON c.campaign_id = x.k AND c.submission_ref = x.r",
        )
        .bind(&campaigns)
        .bind(&refs)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    }

    let mut not_stored = |c: &Candidate, outbox: &mut Outbox| {
        if known_refs.contains(&(c.campaign_id, c.contact.submission_ref.clone())) {
            fates[c.slot] = Fate::AlreadyReceived;
        } else {
            duplicate_person(outbox, c, fates);
        }
    };
    for c in &again {
        not_stored(c, outbox);
    }
    let mut accepted = Vec::with_capacity(stored.len());
    for (contact_id, c) in sealed {
        if !stored.contains(&contact_id) {
            not_stored(&c, outbox);
            continue;
        }
        let event_id = derived_id(&["accepted", &contact_id.to_string()]);
        let time_zone = match cnmas_domain::geo::Department::parse(&c.contact.department) {
            Ok(d) => d.time_zone(),
            Err(_) => c.contact.territory.time_zone(),
        };
        accepted.push(ContactAccepted {
            envelope: Some(envelope(
                event_id,
                &c.fund_code,
                &c.campaign_id.to_string(),
                &c.correlation,
                Utc::now(),
            )),
            contact_id: contact_id.to_string(),
            submission_ref: c.contact.submission_ref,
            person_key: c.person_key,
            theme: theme_to_proto(c.theme) as i32,
            territory: c.contact.territory.code().to_string(),
            department: c.contact.department,
            time_zone: time_zone.name().to_string(),
            priority_key: c.contact.priority_key,
        });
    }
    if !accepted.is_empty() {
        metrics::counter!("cnmas_intake_contacts_accepted_total").increment(accepted.len() as u64);
    }
    outbox.push_set(
        &subjects::event("intake", "contacts_accepted"),
        accepted,
        |contacts| ContactsAccepted { contacts },
    );
    Ok(())
}

/// The same person is already in the campaign under another reference: refused, and the fund
/// is told.
fn duplicate_person(outbox: &mut Outbox, c: &Candidate, fates: &mut [Fate]) {
    let reasons = vec![reason(
        "person",
        "contact.duplicate_person",
        "this person is already in the campaign under another reference",
    )];
    rejection(
        outbox,
        &c.fund_code,
        &c.campaign_id.to_string(),
        &c.correlation,
        c.index,
        &c.contact.submission_ref,
        reasons.clone(),
    );
    fates[c.slot] = Fate::Duplicate(reasons);
}

#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    campaigns: Vec<Uuid>,
    funds: Vec<String>,
    refs: Vec<String>,
    person_keys: Vec<String>,
    themes: Vec<String>,
    territories: Vec<String>,
    departments: Vec<String>,
    priorities: Vec<i64>,
    key_ids: Vec<String>,
    nonces: Vec<Vec<u8>>,
    sealed: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, id: Uuid, c: &Candidate, key_id: String, nonce: Vec<u8>, sealed: Vec<u8>) {
        self.ids.push(id);
        self.campaigns.push(c.campaign_id);
        self.funds.push(c.fund_code.clone());
        self.refs.push(c.contact.submission_ref.clone());
        self.person_keys.push(c.person_key.clone());
        self.themes.push(c.theme.code().to_string());
        self.territories
            .push(c.contact.territory.code().to_string());
        self.departments.push(c.contact.department.clone());
        self.priorities.push(c.contact.priority_key);
        self.key_ids.push(key_id);
        self.nonces.push(nonce);
        self.sealed.push(sealed);
    }

    /// Stores the rows that conflict with nothing already stored; returns their ids.
    async fn insert(self, tx: &mut PgConnection) -> Result<HashSet<Uuid>, HandlerError> {
        if self.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let stored: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO contacts (contact_id, campaign_id, fund_code, submission_ref, person_key,
                 theme, territory, department, priority_key, key_id, nonce, sealed)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bytea[],
                 $12::bytea[])
             ON CONFLICT DO NOTHING
             RETURNING contact_id",
        )
        .bind(self.ids)
        .bind(self.campaigns)
        .bind(self.funds)
        .bind(self.refs)
        .bind(self.person_keys)
        .bind(self.themes)
        .bind(self.territories)
        .bind(self.departments)
        .bind(self.priorities)
        .bind(self.key_ids)
        .bind(self.nonces)
        .bind(self.sealed)
        .fetch_all(&mut *tx)
        .await?;
        Ok(stored.into_iter().collect())
    }
}
