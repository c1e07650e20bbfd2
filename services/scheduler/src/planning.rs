//! The plan of each contact: cleared contacts enter it, attempts move it on (retry rules,
//! callbacks, closure), opt-outs close it, and the ticker releases `CallDue` for contacts whose
//! time has come inside an open calling window.

use crate::State;
use chrono::{DateTime, NaiveDate, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_domain::calendar::{next_open_window, CallingPolicy, HolidayCalendar, Place};
use cnmas_domain::geo::{Department, Territory};
use cnmas_domain::outcome::{AttemptOutcome, Channel, FinalStatus};
use cnmas_domain::retry::{self, Decision, PersonAttempt, PressureRule, RetryPolicy};
use cnmas_domain::theme::Theme;
use cnmas_proto::consent::{ConsentChanged, ContactCleared, ContactsCleared};
use cnmas_proto::dialer::{AttemptRecorded, AttemptsRecorded, CallReturned, CampaignStaffing};
use cnmas_proto::scheduler::{CallDue, CallsDue, ContactClosed};
use cnmas_proto::support::{
    channel_from_proto, derived_id, envelope, final_status_to_proto, from_timestamp,
    outcome_from_proto, theme_from_proto, timestamp,
};
use prost::Message;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub struct Planner {
    pub(crate) state: Arc<State>,
}

/// One contact's plan, as loaded for a batch.
#[derive(Debug, Clone)]
struct Plan {
    contact_id: Uuid,
    campaign_id: Uuid,
    fund_code: String,
    theme: String,
    person_key: String,
    status: String,
    attempts: i32,
    next_due_at: Option<DateTime<Utc>>,
    callback_agent_id: Option<String>,
    final_status: Option<String>,
    changed: bool,
}

enum Event {
    Cleared(Vec<ContactCleared>),
    /// The attempts of one message: a set (`attempts_recorded`), or one attempt published
    /// alone by a dialer before decision 0015 (`attempt_recorded`).
    Attempts {
        attempts: Vec<AttemptRecorded>,
        set: bool,
    },
    Returned(CallReturned),
    Consent(ConsentChanged),
    Staffing(CampaignStaffing),
    /// A corrected identifier, followed by consent (rights).
    Rekeyed(cnmas_proto::rights::ContactRekeyed),
    Ignored,
}

fn decode(m: &Incoming) -> Result<Event, prost::DecodeError> {
    let kind = m.subject.rsplit('.').next().unwrap_or_default();
    Ok(match kind {
        "contacts_cleared" => Event::Cleared(ContactsCleared::decode(m.payload.clone())?.contacts),
        "attempts_recorded" | "attempt_recorded" => Event::Attempts {
            attempts: m.items("attempts_recorded", |s: AttemptsRecorded| s.attempts)?,
            set: kind == "attempts_recorded",
        },
        "call_returned" => Event::Returned(CallReturned::decode(m.payload.clone())?),
        "consent_changed" => Event::Consent(ConsentChanged::decode(m.payload.clone())?),
        "campaign_staffing" => Event::Staffing(CampaignStaffing::decode(m.payload.clone())?),
        "contact_rekeyed" => Event::Rekeyed(cnmas_proto::rights::ContactRekeyed::decode(
            m.payload.clone(),
        )?),
        _ => Event::Ignored,
    })
}

fn parse_uuid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

impl BatchHandler for Planner {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = vec![Verdict::Done; batch.len()];
        let mut events = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match decode(m) {
                Ok(e) => events.push(e),
                Err(e) => {
                    verdicts[i] = Verdict::DeadLetter(format!("undecodable {}: {e}", m.subject));
                    events.push(Event::Ignored);
                }
            }
        }
        let now = self.state.clock.now();
        plan_cleared(&self.state, tx, &events, now, outbox).await?;
        save_staffing(tx, &events).await?;

        // Everything else changes existing plans: load them once, apply in order, write once.
        let mut contact_ids = Vec::new();
        let mut person_keys = Vec::new();
        for e in &events {
            match e {
                Event::Attempts { attempts, .. } => {
                    contact_ids.extend(attempts.iter().filter_map(|a| parse_uuid(&a.contact_id)))
                }
                Event::Returned(r) => contact_ids.extend(parse_uuid(&r.contact_id)),
                Event::Consent(c) => person_keys.push(c.person_key.clone()),
                Event::Rekeyed(r) => contact_ids.extend(parse_uuid(&r.contact_id)),
                _ => {}
            }
        }
        if contact_ids.is_empty() && person_keys.is_empty() {
            return Ok(verdicts);
        }
        let mut plans = load_plans(tx, &contact_ids, &person_keys).await?;
        let campaign_ids: Vec<Uuid> = plans.values().map(|p| p.campaign_id).collect();
        let retry_policies: HashMap<Uuid, RetryPolicy> = sqlx::query(
            "SELECT campaign_id, max_attempts, retry_policy FROM campaigns
             WHERE campaign_id = ANY($1)",
        )
        .bind(&campaign_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| {
            let mut policy: RetryPolicy = r
                .get::<Option<serde_json::Value>, _>("retry_policy")
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            policy.max_attempts = r.get::<i32, _>("max_attempts").max(1) as u32;
            (r.get("campaign_id"), policy)
        })
        .collect();

        let mut person_attempts: Vec<(String, DateTime<Utc>, bool, String)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Attempts { attempts, set } => {
                    // An outcome this scheduler does not know (a newer dialer) sends the whole
                    // message to the dead letters with nothing of it applied, so that its
                    // replay after an upgrade counts each attempt once.
                    let Some(outcomes) = attempts
                        .iter()
                        .map(|a| outcome_from_proto(a.outcome))
                        .collect::<Option<Vec<_>>>()
                    else {
                        verdicts[i] = Verdict::DeadLetter("attempt without a known outcome".into());
                        continue;
                    };
                    for (a, outcome) in attempts.iter().zip(outcomes) {
                        let Some(plan) =
                            parse_uuid(&a.contact_id).and_then(|id| plans.get_mut(&id))
                        else {
                            // No plan to apply it to (e.g. the contact was erased while its
                            // call was leased). A set's other attempts still count: the item
                            // is skipped, logged and counted; a single event goes to the dead
                            // letters, as before.
                            if *set {
                                tracing::warn!(
                                    attempt = %a.attempt_id,
                                    "attempt for an unknown contact skipped"
                                );
                                metrics::counter!("cnmas_scheduler_attempts_skipped_total")
                                    .increment(1);
                            } else {
                                verdicts[i] =
                                    Verdict::DeadLetter("attempt for an unknown contact".into());
                            }
                            continue;
                        };
                        let at = a
                            .recorded_at
                            .as_ref()
                            .and_then(from_timestamp)
                            .unwrap_or(now);
                        person_attempts.push((
                            plan.person_key.clone(),
                            at,
                            outcome == AttemptOutcome::RefusedInterview,
                            a.attempt_id.clone(),
                        ));
                        if plan.status == "closed" {
                            continue;
                        }
                        plan.attempts += 1;
                        plan.changed = true;
                        // A default always applies, even to a campaign that vanished.
                        let policy = retry_policies
                            .get(&plan.campaign_id)
                            .copied()
                            .unwrap_or_default();
                        let callback_at = a.callback_at.as_ref().and_then(from_timestamp);
                        match retry::decide(&policy, outcome, plan.attempts as u32, at, callback_at)
                        {
                            Decision::RetryAfter(t) => {
                                plan.status = "planned".into();
                                plan.next_due_at = Some(t);
                                plan.callback_agent_id = (outcome
                                    == AttemptOutcome::CallbackRequested
                                    && a.callback_with_same_agent)
                                    .then(|| a.agent_id.clone());
                            }
                            Decision::Close(status) => {
                                close(plan, status, "attempts.decided", outbox, &a.attempt_id)
                            }
                        }
                    }
                }
                Event::Returned(r) => {
                    if let Some(plan) = parse_uuid(&r.contact_id).and_then(|id| plans.get_mut(&id))
                    {
                        if plan.status == "queued" {
                            plan.status = "planned".into();
                            plan.next_due_at = Some(now);
                            plan.changed = true;
                        }
                    }
                }
                Event::Consent(c) => {
                    let Some(change) = &c.change else { continue };
                    if !change.opted_out
                        || channel_from_proto(change.channel) != Some(Channel::Phone)
                    {
                        continue;
                    }
                    let scope = theme_from_proto(c.theme).map(Theme::code);
                    for plan in plans.values_mut() {
                        if plan.person_key == c.person_key
                            && plan.status != "closed"
                            && (change.all_themes || Some(plan.theme.as_str()) == scope)
                        {
                            let cause = c.envelope.as_ref().map(|e| e.event_id.clone());
                            close(
                                plan,
                                FinalStatus::SuppressedByConsent,
                                "consent.opted_out",
                                outbox,
                                cause.as_deref().unwrap_or_default(),
                            );
                        }
                    }
                }
                Event::Rekeyed(r) => {
                    let Some(plan) = parse_uuid(&r.contact_id).and_then(|id| plans.get_mut(&id))
                    else {
                        continue;
                    };
                    // Later consent changes of this batch must match the new key.
                    plan.person_key = r.person_key.clone();
                    if r.phone_opted_out && plan.status != "closed" {
                        let cause = r.envelope.as_ref().map(|e| e.event_id.clone());
                        close(
                            plan,
                            FinalStatus::SuppressedByConsent,
                            "consent.opted_out",
                            outbox,
                            cause.as_deref().unwrap_or_default(),
                        );
                    }
                    crate::rights::rekey(tx, plan.contact_id, &r.person_key).await?;
                }
                Event::Cleared(_) | Event::Staffing(_) | Event::Ignored => {}
            }
        }
        save_plans(tx, plans.values().filter(|p| p.changed)).await?;
        if !person_attempts.is_empty() {
            let (keys, ats, refused, ids): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) =
                multiunzip(person_attempts);
            sqlx::query(
                "INSERT INTO person_attempts (person_key, at, refused, attempt_id)
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::bool[], $4::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(keys)
            .bind(ats)
            .bind(refused)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
        }
        Ok(verdicts)
    }
}

type Unzipped4<A, B, C, D> = (Vec<A>, Vec<B>, Vec<C>, Vec<D>);

fn multiunzip<A, B, C, D>(v: Vec<(A, B, C, D)>) -> Unzipped4<A, B, C, D> {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (a, b, c, d) in v {
        out.0.push(a);
        out.1.push(b);
        out.2.push(c);
        out.3.push(d);
    }
    out
}

/// Closes a plan and announces it.
fn close(plan: &mut Plan, status: FinalStatus, reason: &str, outbox: &mut Outbox, cause: &str) {
    close_at(plan, status, reason, outbox, cause, Utc::now())
}

fn close_at(
    plan: &mut Plan,
    status: FinalStatus,
    reason: &str,
    outbox: &mut Outbox,
    cause: &str,
    now: DateTime<Utc>,
) {
    plan.status = "closed".into();
    plan.final_status = Some(status.code().into());
    plan.next_due_at = None;
    plan.changed = true;
    let contact_id = plan.contact_id.to_string();
    let event_id = derived_id(&["contact_closed", &contact_id]);
    // One closure per contact, an item of the transaction's `ContactsClosed` (decision 0015).
    let event = ContactClosed {
        envelope: Some(envelope(
            event_id.clone(),
            &plan.fund_code,
            &plan.campaign_id.to_string(),
            cause,
            now,
        )),
        contact_id,
        final_status: final_status_to_proto(status) as i32,
        attempts: plan.attempts as u32,
        reason: reason.into(),
    };
    outbox.push_item(subjects::event("scheduler", "contacts_closed"), &event);
}

/// Columns of the `plans` rows inserted by one batch.
#[derive(Default)]
struct PlanRows {
    contact_ids: Vec<Uuid>,
    campaign_ids: Vec<Uuid>,
    funds: Vec<String>,
    person_keys: Vec<String>,
    themes: Vec<String>,
    territories: Vec<String>,
    departments: Vec<String>,
    priorities: Vec<i64>,
    /// `planned`, or `queued` when released on arrival.
    statuses: Vec<&'static str>,
    /// `next_due_at`.
    due: Vec<DateTime<Utc>>,
    /// For a contact released on arrival: where it is called, until when, and whether its
    /// campaign is served first come, first served.
    window_ends: Vec<Option<(Place, DateTime<Utc>, bool)>>,
}

/// Keeps the latest staffing of each campaign (by the dialer's `at`; older reports that arrive
/// late are ignored).
async fn save_staffing(tx: &mut PgConnection, events: &[Event]) -> Result<(), HandlerError> {
    let mut latest: HashMap<Uuid, (i32, i32, DateTime<Utc>)> = HashMap::new();
    for e in events {
        let Event::Staffing(s) = e else { continue };
        let (Some(campaign), Some(at)) = (
            parse_uuid(&s.campaign_id),
            s.at.as_ref().and_then(from_timestamp),
        ) else {
            continue;
        };
        let row = (
            i32::try_from(s.agents_available).unwrap_or(i32::MAX),
            i32::try_from(s.agents_signed_in).unwrap_or(i32::MAX),
            at,
        );
        latest
            .entry(campaign)
            .and_modify(|old| {
                if old.2 < at {
                    *old = row
                }
            })
            .or_insert(row);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut available = Vec::new();
    let mut signed_in = Vec::new();
    let mut ats = Vec::new();
    for (id, (a, s, at)) in latest {
        ids.push(id);
        available.push(a);
        signed_in.push(s);
        ats.push(at);
    }
    sqlx::query(
        "INSERT INTO campaign_staffing (campaign_id, agents_available, agents_signed_in, at)
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::timestamptz[])
         ON CONFLICT (campaign_id) DO UPDATE SET agents_available = EXCLUDED.agents_available,
             agents_signed_in = EXCLUDED.agents_signed_in, at = EXCLUDED.at
         WHERE campaign_staffing.at < EXCLUDED.at",
    )
    .bind(ids)
    .bind(available)
    .bind(signed_in)
    .bind(ats)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Enters cleared contacts into the plan. Where their campaign has nothing due waiting (so no
/// older contact is passed over) and its pacing budget allows, the contacts whose window is open
/// are released at once, in the same transaction: their plan is written once, as queued,
/// instead of being written as planned, found by the ticker and rewritten (decision 0008).
/// Everything else waits for the ticker, as before.
async fn plan_cleared(
    state: &State,
    tx: &mut PgConnection,
    events: &[Event],
    now: DateTime<Utc>,
    outbox: &mut Outbox,
) -> Result<(), HandlerError> {
    let mut cols = PlanRows::default();
    for c in events.iter().flat_map(|e| match e {
        Event::Cleared(set) => set.as_slice(),
        _ => &[],
    }) {
        let env = c.envelope.clone().unwrap_or_default();
        let (Some(contact), Some(campaign)) =
            (parse_uuid(&c.contact_id), parse_uuid(&env.campaign_id))
        else {
            continue;
        };
        let theme = theme_from_proto(c.theme)
            .map(Theme::code)
            .unwrap_or_default();
        cols.contact_ids.push(contact);
        cols.campaign_ids.push(campaign);
        cols.funds.push(env.fund_code);
        cols.person_keys.push(c.person_key.clone());
        cols.themes.push(theme.to_string());
        cols.territories.push(c.territory.clone());
        cols.departments.push(c.department.clone());
        cols.priorities.push(c.priority_key);
        cols.statuses.push("planned");
        cols.due.push(now);
        cols.window_ends.push(None);
    }
    if cols.contact_ids.is_empty() {
        return Ok(());
    }
    release_on_arrival(state, tx, &mut cols, now).await?;
    let inserted = sqlx::query(
        "INSERT INTO plans (contact_id, campaign_id, fund_code, person_key, theme, territory,
             department, priority_key, status, next_due_at)
         SELECT c, k, f, p, t, tr, d,
                CASE WHEN cp.priority_rule = 'fifo' THEN 0 ELSE pr END, s, n
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::text[], $10::timestamptz[])
              WITH ORDINALITY AS x(c, k, f, p, t, tr, d, pr, s, n, o)
         LEFT JOIN campaigns cp ON cp.campaign_id = x.k
         ORDER BY x.o -- arrival follows the fund's order
         ON CONFLICT (contact_id) DO NOTHING
         RETURNING contact_id, arrival, status",
    )
    .bind(&cols.contact_ids)
    .bind(&cols.campaign_ids)
    .bind(&cols.funds)
    .bind(&cols.person_keys)
    .bind(&cols.themes)
    .bind(&cols.territories)
    .bind(&cols.departments)
    .bind(&cols.priorities)
    .bind(&cols.statuses)
    .bind(&cols.due)
    .fetch_all(&mut *tx)
    .await?;
    // Calls for the plans written as queued (a plan that already existed is left alone).
    let released: HashMap<Uuid, i64> = inserted
        .iter()
        .filter(|r| r.get::<&str, _>("status") == "queued")
        .map(|r| (r.get("contact_id"), r.get("arrival")))
        .collect();
    let mut calls = Vec::with_capacity(released.len());
    for (i, contact_id) in cols.contact_ids.iter().enumerate() {
        let (Some(arrival), Some((place, window_end, fifo))) =
            (released.get(contact_id), cols.window_ends[i].as_ref())
        else {
            continue;
        };
        calls.push(call_due(
            DueCall {
                contact_id: *contact_id,
                campaign_id: cols.campaign_ids[i],
                fund_code: cols.funds[i].clone(),
                person_key: cols.person_keys[i].clone(),
                attempt_number: 1,
                priority_key: if *fifo { *arrival } else { cols.priorities[i] },
                callback_agent_id: String::new(),
            },
            place,
            *window_end,
            now,
        ));
    }
    if !calls.is_empty() {
        metrics::counter!("cnmas_scheduler_calls_released_total").increment(calls.len() as u64);
        outbox.push_set(&subjects::event("scheduler", "calls_due"), calls, |calls| {
            CallsDue { calls }
        });
    }
    // A fund may have rectified the contact before its plan existed (such plans were not
    // released above: the ticker releases them with the corrected data).
    crate::rights::apply_rectifications(tx, &cols.contact_ids).await?;
    Ok(())
}

/// Marks as queued, in `cols`, the new contacts that may be called at once: their campaign is
/// active, started, has no due plan waiting, and has budget (under the campaign's release
/// lock, as the ticker); the person may be called now in an open window; no
/// rectification is pending. Within a campaign the budget goes in the campaign's order.
async fn release_on_arrival(
    state: &State,
    tx: &mut PgConnection,
    cols: &mut PlanRows,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut campaign_ids = cols.campaign_ids.clone();
    campaign_ids.sort_unstable();
    campaign_ids.dedup();
    // Wait for the ticker's release of these campaigns, if one runs (a short transaction; the
    // ticker itself never waits for this lock, and replicas take it in the same order). Taking
    // it only if free would send contacts to the ticker whenever it happened to run, and each
    // contact sent there keeps the next ones from being released on arrival.
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, hashtext(k::text))
         FROM UNNEST($2::uuid[]) AS k ORDER BY k",
    )
    .bind(RELEASE_LOCK_CLASS)
    .bind(&campaign_ids)
    .execute(&mut *tx)
    .await?;
    let open: Vec<(Uuid, Option<serde_json::Value>, bool, i64)> = sqlx::query_as(
        "SELECT c.campaign_id, c.calling_policy, c.priority_rule = 'fifo',
                CASE WHEN c.pacing_ratio < 0 THEN $3::bigint
                     WHEN coalesce(s.agents_available, 0) <= 0 THEN 0
                     ELSE greatest(1, ceil(c.pacing_ratio * s.agents_available))::bigint
                          - (SELECT count(*) FROM plans q
                             WHERE q.campaign_id = c.campaign_id AND q.status = 'queued')
                END
         FROM campaigns c
         LEFT JOIN campaign_staffing s ON s.campaign_id = c.campaign_id
             AND s.at > $2 - make_interval(mins => $4)
         WHERE c.campaign_id = ANY($1) AND c.state = 'active'
           AND c.starts_on <= ($2 AT TIME ZONE 'Europe/Paris')::date
           AND NOT EXISTS (SELECT 1 FROM plans p WHERE p.campaign_id = c.campaign_id
                           AND p.status = 'planned' AND p.next_due_at <= $2)",
    )
    .bind(&campaign_ids)
    .bind(now)
    .bind(cols.contact_ids.len() as i64)
    .bind(STAFFING_STALE_MINUTES)
    .fetch_all(&mut *tx)
    .await?;
    if open.is_empty() {
        return Ok(());
    }
    let rectified: std::collections::HashSet<Uuid> =
        sqlx::query_scalar("SELECT contact_id FROM rectified_contacts WHERE contact_id = ANY($1)")
            .bind(&cols.contact_ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let history = person_history(tx, &cols.person_keys, now).await?;
    for (campaign_id, policy, fifo, mut budget) in open {
        let policy = policy
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_else(CallingPolicy::legal_default);
        let mut order: Vec<usize> = (0..cols.contact_ids.len())
            .filter(|&i| cols.campaign_ids[i] == campaign_id)
            .collect();
        if !fifo {
            order.sort_by_key(|&i| cols.priorities[i]);
        }
        for i in order {
            if budget <= 0 {
                break;
            }
            if rectified.contains(&cols.contact_ids[i]) {
                continue;
            }
            let Some(place) = place_of(&cols.departments[i], &cols.territories[i]) else {
                continue; // the ticker closes it
            };
            match release_time(
                &state.calendar,
                &policy,
                &place,
                history.get(&cols.person_keys[i]),
                now,
            ) {
                Release::Now { window_end } => {
                    cols.statuses[i] = "queued";
                    cols.window_ends[i] = Some((place, window_end, fifo));
                    budget -= 1;
                }
                Release::Later(at) => cols.due[i] = at,
            }
        }
    }
    Ok(())
}

async fn load_plans(
    tx: &mut PgConnection,
    contact_ids: &[Uuid],
    person_keys: &[String],
) -> Result<HashMap<Uuid, Plan>, HandlerError> {
    macro_rules! plans_where {
        ($condition:literal) => {
            concat!(
                "SELECT contact_id, campaign_id, fund_code, theme, person_key, status, attempts,
                        next_due_at, callback_agent_id, final_status
                 FROM plans WHERE ",
                $condition,
                " ORDER BY contact_id FOR UPDATE"
            )
        };
    }
    // Attempts bring contact ids only. With the `OR` on person keys, PostgreSQL planned the
    // statement again at every batch (0.3 ms, a tenth of the scheduler's PostgreSQL time in
    // the 1,000-agent day); alone, the lookup by contact keeps its cached plan.
    // A person's open plans are found through `plans_person`, an index of a hash of the key
    // (migration 1005); the keys themselves are compared too.
    let query = if person_keys.is_empty() {
        sqlx::query(plans_where!("contact_id = ANY($1)")).bind(contact_ids)
    } else {
        sqlx::query(plans_where!(
            "contact_id = ANY($1) OR (status <> 'closed' AND person_key = ANY($2)
                 AND hashtextextended(person_key, 0)
                     = ANY(ARRAY(SELECT hashtextextended(k, 0) FROM UNNEST($2::text[]) AS k)))"
        ))
        .bind(contact_ids)
        .bind(person_keys)
    };
    let rows = query.fetch_all(&mut *tx).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let p = Plan {
                contact_id: r.get("contact_id"),
                campaign_id: r.get("campaign_id"),
                fund_code: r.get("fund_code"),
                theme: r.get("theme"),
                person_key: r.get("person_key"),
                status: r.get("status"),
                attempts: r.get("attempts"),
                next_due_at: r.get("next_due_at"),
                callback_agent_id: r.get("callback_agent_id"),
                final_status: r.get("final_status"),
                changed: false,
            };
            (p.contact_id, p)
        })
        .collect())
}

async fn save_plans<'a>(
    tx: &mut PgConnection,
    plans: impl Iterator<Item = &'a Plan>,
) -> Result<(), HandlerError> {
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut attempts = Vec::new();
    let mut due = Vec::new();
    let mut agents = Vec::new();
    let mut finals = Vec::new();
    for p in plans {
        ids.push(p.contact_id);
        statuses.push(p.status.clone());
        attempts.push(p.attempts);
        due.push(p.next_due_at);
        agents.push(p.callback_agent_id.clone());
        finals.push(p.final_status.clone());
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE plans SET status = x.s, attempts = x.a, next_due_at = x.d,
             callback_agent_id = x.g, final_status = x.f, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::text[])
             AS x(c, s, a, d, g, f)
         WHERE plans.contact_id = x.c",
    )
    .bind(ids)
    .bind(statuses)
    .bind(attempts)
    .bind(due)
    .bind(agents)
    .bind(finals)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How many due contacts one release transaction handles.
const RELEASE_BATCH: i64 = 1000;

/// Releases due contacts until shutdown, and closes campaigns past their end date.
pub async fn run_ticker(state: Arc<State>, tick: Duration) {
    let shutdown = state.base.shutdown.clone();
    let mut last_end_check = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        let mut released_full_batch = false;
        match release_due(&state, state.clock.now()).await {
            Ok(n) => released_full_batch = n as i64 >= RELEASE_BATCH,
            Err(e) => tracing::warn!(error = %e, "releasing due calls failed; will retry"),
        }
        if last_end_check.elapsed() > Duration::from_secs(10) {
            last_end_check = std::time::Instant::now();
            if let Err(e) = end_campaigns(&state, state.clock.now()).await {
                tracing::warn!(error = %e, "closing ended campaigns failed; will retry");
            }
        }
        if released_full_batch {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

pub(crate) fn place_of(department: &str, territory: &str) -> Option<Place> {
    if let Ok(d) = Department::parse(department) {
        return Some(Place::Department(d));
    }
    territory.parse::<Territory>().ok().map(Place::Territory)
}

/// The attempts of these persons recent enough to matter for the pressure limits.
async fn person_history(
    tx: &mut PgConnection,
    keys: &[String],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<PersonAttempt>>, sqlx::Error> {
    let mut history: HashMap<String, Vec<PersonAttempt>> = HashMap::new();
    if keys.is_empty() {
        return Ok(history);
    }
    let rule = PressureRule::default();
    let horizon =
        now - chrono::Duration::days(i64::from(rule.quiet_days_after_refusal.max(rule.per_days)));
    for r in sqlx::query(
        "SELECT person_key, at, refused FROM person_attempts
         WHERE person_key = ANY($1) AND at > $2",
    )
    .bind(keys)
    .bind(horizon)
    .fetch_all(&mut *tx)
    .await?
    {
        history
            .entry(r.get("person_key"))
            .or_default()
            .push(PersonAttempt {
                at: r.get("at"),
                refused_in_conversation: r.get("refused"),
            });
    }
    Ok(history)
}

/// When a due contact may be called.
enum Release {
    /// Now, until the end of the open window.
    Now { window_end: DateTime<Utc> },
    /// Not before this time (the next window, the person's pressure limits; in 30 days when no
    /// window opens in the calendar's horizon).
    Later(DateTime<Utc>),
}

fn release_time(
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    place: &Place,
    history: Option<&Vec<PersonAttempt>>,
    now: DateTime<Utc>,
) -> Release {
    let allowed = history
        .map(|h| retry::earliest_allowed(&PressureRule::default(), h, now))
        .unwrap_or(now);
    match next_open_window(calendar, policy, place, allowed) {
        Some((start, end)) if start <= now => Release::Now { window_end: end },
        Some((start, _)) => Release::Later(start),
        None => Release::Later(now + chrono::Duration::days(30)),
    }
}

/// What a `CallDue` says of its contact and attempt.
struct DueCall {
    contact_id: Uuid,
    campaign_id: Uuid,
    fund_code: String,
    person_key: String,
    attempt_number: u32,
    /// The dialer's ordering key (the arrival under "fifo").
    priority_key: i64,
    callback_agent_id: String,
}

fn call_due(c: DueCall, place: &Place, window_end: DateTime<Utc>, now: DateTime<Utc>) -> CallDue {
    let contact = c.contact_id.to_string();
    let event_id = Uuid::new_v4().to_string();
    CallDue {
        envelope: Some(envelope(
            event_id,
            &c.fund_code,
            &c.campaign_id.to_string(),
            &contact,
            now,
        )),
        // Deterministic (one per contact and attempt) and, with time-ordered contact ids, in
        // insertion order for the dialer's index.
        call_id: format!("{contact}-{}", c.attempt_number),
        contact_id: contact,
        person_key: c.person_key,
        attempt_number: c.attempt_number,
        due_at: Some(timestamp(now)),
        window_end: Some(timestamp(window_end)),
        priority_key: c.priority_key,
        time_zone: place.time_zone().name().to_string(),
        territory: place.territory().code().to_string(),
        department: place.department_code().unwrap_or_default().to_string(),
        callback_agent_id: c.callback_agent_id,
    }
}

/// Advisory-lock class of the release of one campaign's calls (the second key is a hash of
/// the campaign id): one scheduler replica at a time computes a campaign's pacing budget.
const RELEASE_LOCK_CLASS: i32 = 0x5343_4844;

/// Staffing older than this is not trusted (the dialer reports every few seconds): a campaign
/// whose dialer went silent gets no more calls.
const STAFFING_STALE_MINUTES: i32 = 5;

/// One transaction: the most urgent due plans of active campaigns, within each campaign's
/// pacing budget, each either released as a `CallDue` (its window is open now and the person's
/// pressure limits allow it), moved to the next time it may be called, or closed when it can
/// never be called. Returns how many plans were examined.
///
/// Pacing: a campaign keeps at most `max(1, ceil(pacing_ratio × agents_available))` calls
/// queued in the dialer (plans in status `queued`, leased ones included); without staffing or
/// with no agent available it gets none. A negative ratio disables pacing.
pub(crate) async fn release_due(state: &State, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
    let mut tx = state.base.pool.begin().await?;
    // First statement: lock the campaigns this replica releases for. Another replica busy with
    // a campaign skips it; the budgets below are computed in a later statement, so they see
    // everything the previous holder of the lock committed.
    let campaigns: Vec<Uuid> = sqlx::query_scalar(
        "WITH active AS MATERIALIZED (
             SELECT campaign_id FROM campaigns
             WHERE state = 'active' AND starts_on <= ($1 AT TIME ZONE 'Europe/Paris')::date)
         SELECT campaign_id FROM active
         WHERE pg_try_advisory_xact_lock($2, hashtext(campaign_id::text))",
    )
    .bind(now)
    .bind(RELEASE_LOCK_CLASS)
    .fetch_all(&mut *tx)
    .await?;
    if campaigns.is_empty() {
        return Ok(0);
    }
    // Per campaign, walk the due plans in the order they are to be called (callbacks, then
    // priority key and arrival: see plans_due_campaign) and stop at the budget, so a release
    // reads what it releases rather than ranking every due plan of the campaign.
    let rows = sqlx::query(
        "WITH budgets AS (
             SELECT c.campaign_id,
                    least($3::bigint, CASE
                        WHEN c.pacing_ratio < 0 THEN $3::bigint
                        WHEN coalesce(s.agents_available, 0) <= 0 THEN 0
                        ELSE greatest(1, ceil(c.pacing_ratio * s.agents_available))::bigint
                             - (SELECT count(*) FROM plans q
                                WHERE q.campaign_id = c.campaign_id AND q.status = 'queued')
                    END) AS budget
             FROM campaigns c
             LEFT JOIN campaign_staffing s ON s.campaign_id = c.campaign_id
                 AND s.at > $1 - make_interval(mins => $4)
             WHERE c.campaign_id = ANY($2)),
         ranked AS (
             SELECT n.contact_id, b.budget,
                    row_number() OVER (
                        PARTITION BY b.campaign_id ORDER BY n.tier, n.priority_key, n.arrival
                    ) AS rank
             FROM budgets b
             CROSS JOIN LATERAL (
                 (SELECT p.contact_id, 0 AS tier, p.priority_key, p.arrival FROM plans p
                  WHERE p.campaign_id = b.campaign_id AND p.status = 'planned'
                    AND p.callback_agent_id IS NOT NULL AND p.next_due_at <= $1
                  ORDER BY p.next_due_at LIMIT b.budget)
                 UNION ALL
                 (SELECT p.contact_id, 1 AS tier, p.priority_key, p.arrival FROM plans p
                  WHERE p.campaign_id = b.campaign_id AND p.status = 'planned'
                    AND p.callback_agent_id IS NULL AND p.next_due_at <= $1
                  ORDER BY p.priority_key, p.arrival LIMIT b.budget)
             ) n
             WHERE b.budget > 0)
         SELECT p.contact_id, p.campaign_id, p.fund_code, p.person_key, p.territory,
                p.department, p.priority_key, p.arrival, p.attempts, p.callback_agent_id,
                c.calling_policy, c.priority_rule
         FROM ranked r
         JOIN plans p ON p.contact_id = r.contact_id
         JOIN campaigns c ON c.campaign_id = p.campaign_id
         WHERE r.rank <= r.budget AND p.status = 'planned'
         ORDER BY r.rank, p.campaign_id
         LIMIT $3
         FOR UPDATE OF p SKIP LOCKED",
    )
    .bind(now)
    .bind(&campaigns)
    .bind(RELEASE_BATCH)
    .bind(STAFFING_STALE_MINUTES)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = rows.iter().map(|r| r.get("person_key")).collect();
    let history = person_history(&mut tx, &keys, now).await?;

    let mut policies: HashMap<Uuid, CallingPolicy> = HashMap::new();
    let mut queued = Vec::new();
    let mut replanned: (Vec<Uuid>, Vec<DateTime<Utc>>) = Default::default();
    let mut outbox = Outbox::new();
    let mut closed = Vec::new();
    let mut due = Vec::new();
    let n = rows.len();
    for r in rows {
        let contact_id: Uuid = r.get("contact_id");
        let campaign_id: Uuid = r.get("campaign_id");
        let policy = policies.entry(campaign_id).or_insert_with(|| {
            r.get::<Option<serde_json::Value>, _>("calling_policy")
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_else(CallingPolicy::legal_default)
        });
        let person_key: String = r.get("person_key");
        let Some(place) = place_of(r.get("department"), r.get("territory")) else {
            // Without a territory the local time is unknown: the person is never called, and
            // the fund learns it through the contact's final result.
            tracing::warn!(%contact_id, "contact without a known territory closed, not called");
            let mut plan = Plan {
                contact_id,
                campaign_id,
                fund_code: r.get("fund_code"),
                theme: String::new(),
                person_key,
                status: String::new(),
                attempts: r.get("attempts"),
                next_due_at: None,
                callback_agent_id: None,
                final_status: None,
                changed: true,
            };
            close_at(
                &mut plan,
                FinalStatus::NotReached,
                "territory.unknown",
                &mut outbox,
                &contact_id.to_string(),
                now,
            );
            closed.push(contact_id);
            continue;
        };
        match release_time(
            &state.calendar,
            policy,
            &place,
            history.get(&person_key),
            now,
        ) {
            Release::Now { window_end } => {
                // The dialer serves its queue by this key: under "fifo" it is the arrival.
                let priority_key = if r.get::<&str, _>("priority_rule") == "fifo" {
                    r.get("arrival")
                } else {
                    r.get("priority_key")
                };
                due.push(call_due(
                    DueCall {
                        contact_id,
                        campaign_id,
                        fund_code: r.get("fund_code"),
                        person_key,
                        attempt_number: r.get::<i32, _>("attempts") as u32 + 1,
                        priority_key,
                        callback_agent_id: r
                            .get::<Option<String>, _>("callback_agent_id")
                            .unwrap_or_default(),
                    },
                    &place,
                    window_end,
                    now,
                ));
                queued.push(contact_id);
            }
            Release::Later(at) => {
                replanned.0.push(contact_id);
                replanned.1.push(at);
            }
        }
    }
    if !queued.is_empty() {
        sqlx::query(
            "UPDATE plans SET status = 'queued', updated_at = now() WHERE contact_id = ANY($1)",
        )
        .bind(&queued)
        .execute(&mut *tx)
        .await?;
    }
    if !closed.is_empty() {
        sqlx::query(
            "UPDATE plans SET status = 'closed', final_status = $2, next_due_at = NULL,
                 callback_agent_id = NULL, updated_at = now()
             WHERE contact_id = ANY($1)",
        )
        .bind(&closed)
        .bind(FinalStatus::NotReached.code())
        .execute(&mut *tx)
        .await?;
    }
    if !replanned.0.is_empty() {
        sqlx::query(
            "UPDATE plans SET next_due_at = x.d, updated_at = now()
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS x(c, d)
             WHERE plans.contact_id = x.c",
        )
        .bind(&replanned.0)
        .bind(&replanned.1)
        .execute(&mut *tx)
        .await?;
    }
    outbox.push_set(&subjects::event("scheduler", "calls_due"), due, |calls| {
        CallsDue { calls }
    });
    outbox.flush(&mut tx).await?;
    tx.commit().await?;
    if !closed.is_empty() {
        state.base.relay.wake();
    }
    if !queued.is_empty() {
        metrics::counter!("cnmas_scheduler_calls_released_total").increment(queued.len() as u64);
        state.base.relay.wake();
    }
    Ok(n)
}

/// Campaigns whose last day is over are completed: every open contact closes as "not reached
/// before the end of the campaign".
pub(crate) async fn end_campaigns(state: &State, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let today: NaiveDate = now.with_timezone(&chrono_tz::Europe::Paris).date_naive();
    let ended: Vec<Uuid> = sqlx::query_scalar(
        "SELECT campaign_id FROM campaigns
         WHERE ends_on < $1 AND state IN ('draft', 'active', 'paused')",
    )
    .bind(today)
    .fetch_all(&state.base.pool)
    .await?;
    for campaign_id in ended {
        let mut tx = state.base.pool.begin().await?;
        // The state guard makes this safe against a concurrent cancel or another replica.
        let still_open = sqlx::query(
            "UPDATE campaigns SET state = 'completed', version = version + 1, updated_at = now()
             WHERE campaign_id = $1 AND state IN ('draft', 'active', 'paused')",
        )
        .bind(campaign_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if still_open == 0 {
            continue;
        }
        let closed = close_open_plans(
            &mut tx,
            campaign_id,
            FinalStatus::CampaignEnded,
            "campaign.ended",
            now,
        )
        .await?;
        if closed > 0 {
            tracing::info!(%campaign_id, closed, "campaign ended: open contacts closed");
        }
        crate::campaigns::record_change(
            &mut tx,
            campaign_id,
            "scheduler",
            "complete",
            serde_json::json!({"reason": "end date passed"}),
        )
        .await?;
        tx.commit().await?;
        state.base.relay.wake();
    }
    Ok(())
}

/// Closes every open plan of a campaign with `status` (`reason`: a stable code) and announces
/// each closure as an item of a `ContactsClosed`, in the caller's transaction. Returns how many
/// closed.
pub(crate) async fn close_open_plans(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    status: FinalStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let open = sqlx::query(
        "UPDATE plans SET status = 'closed', final_status = $2, next_due_at = NULL,
             updated_at = now()
         WHERE campaign_id = $1 AND status <> 'closed'
         RETURNING contact_id, fund_code, attempts",
    )
    .bind(campaign_id)
    .bind(status.code())
    .fetch_all(&mut *tx)
    .await?;
    let mut outbox = Outbox::new();
    let n = open.len();
    for r in open {
        let mut plan = Plan {
            contact_id: r.get("contact_id"),
            campaign_id,
            fund_code: r.get("fund_code"),
            theme: String::new(),
            person_key: String::new(),
            status: String::new(),
            attempts: r.get("attempts"),
            next_due_at: None,
            callback_agent_id: None,
            final_status: None,
            changed: false,
        };
        close_at(
            &mut plan,
            status,
            reason,
            &mut outbox,
            &campaign_id.to_string(),
            now,
        );
    }
    outbox.flush(tx).await?;
    Ok(n)
}
