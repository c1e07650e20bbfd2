//! The plan of each contact: cleared contacts enter it, attempts move it on (retry rules,
//! callbacks, closure), opt-outs close it, and the ticker releases `CallDue` for contacts whose
//! time has come inside an open calling window.

use crate::State;
use chrono::{DateTime, NaiveDate, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_domain::calendar::{next_open_window, CallingPolicy, Place};
use cnmas_domain::clock::Clock;
use cnmas_domain::geo::{Department, Territory};
use cnmas_domain::outcome::{AttemptOutcome, Channel, FinalStatus};
use cnmas_domain::retry::{self, Decision, PersonAttempt, PressureRule, RetryPolicy};
use cnmas_domain::theme::Theme;
use cnmas_proto::consent::{ConsentChanged, ContactCleared};
use cnmas_proto::dialer::{AttemptRecorded, CallReturned, CampaignStaffing};
use cnmas_proto::scheduler::{CallDue, ContactClosed};
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
    pub clock: Arc<dyn Clock>,
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
    Cleared(ContactCleared),
    Attempt(AttemptRecorded),
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
        "contact_cleared" => Event::Cleared(ContactCleared::decode(m.payload.clone())?),
        "attempt_recorded" => Event::Attempt(AttemptRecorded::decode(m.payload.clone())?),
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
        insert_cleared(tx, &events, self.clock.now()).await?;
        save_staffing(tx, &events).await?;

        // Everything else changes existing plans: load them once, apply in order, write once.
        let mut contact_ids = Vec::new();
        let mut person_keys = Vec::new();
        for e in &events {
            match e {
                Event::Attempt(a) => contact_ids.extend(parse_uuid(&a.contact_id)),
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

        let now = self.clock.now();
        let mut person_attempts: Vec<(String, DateTime<Utc>, bool, String)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Attempt(a) => {
                    let Some(plan) = parse_uuid(&a.contact_id).and_then(|id| plans.get_mut(&id))
                    else {
                        verdicts[i] = Verdict::DeadLetter("attempt for an unknown contact".into());
                        continue;
                    };
                    let Some(outcome) = outcome_from_proto(a.outcome) else {
                        verdicts[i] = Verdict::DeadLetter("attempt without an outcome".into());
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
                    match retry::decide(&policy, outcome, plan.attempts as u32, at, callback_at) {
                        Decision::RetryAfter(t) => {
                            plan.status = "planned".into();
                            plan.next_due_at = Some(t);
                            plan.callback_agent_id = (outcome == AttemptOutcome::CallbackRequested
                                && a.callback_with_same_agent)
                                .then(|| a.agent_id.clone());
                        }
                        Decision::Close(status) => {
                            close(plan, status, "attempts.decided", outbox, &a.attempt_id)
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
    outbox.push(
        subjects::event("scheduler", "contact_closed"),
        &event_id,
        &event,
    );
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

async fn insert_cleared(
    tx: &mut PgConnection,
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let mut cols = PlanRows::default();
    for e in events {
        let Event::Cleared(c) = e else { continue };
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
    }
    if cols.contact_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO plans (contact_id, campaign_id, fund_code, person_key, theme, territory,
             department, priority_key, status, next_due_at)
         SELECT c, k, f, p, t, tr, d, pr, 'planned', $9
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[]) AS x(c, k, f, p, t, tr, d, pr)
         ON CONFLICT (contact_id) DO NOTHING",
    )
    .bind(&cols.contact_ids)
    .bind(cols.campaign_ids)
    .bind(cols.funds)
    .bind(cols.person_keys)
    .bind(cols.themes)
    .bind(cols.territories)
    .bind(cols.departments)
    .bind(cols.priorities)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // A fund may have rectified the contact before its plan existed.
    crate::rights::apply_rectifications(tx, &cols.contact_ids).await?;
    Ok(())
}

async fn load_plans(
    tx: &mut PgConnection,
    contact_ids: &[Uuid],
    person_keys: &[String],
) -> Result<HashMap<Uuid, Plan>, HandlerError> {
    let rows = sqlx::query(
        "SELECT contact_id, campaign_id, fund_code, theme, person_key, status, attempts,
                next_due_at, callback_agent_id, final_status
         FROM plans
         WHERE contact_id = ANY($1) OR (person_key = ANY($2) AND status <> 'closed')
         ORDER BY contact_id FOR UPDATE",
    )
    .bind(contact_ids)
    .bind(person_keys)
    .fetch_all(&mut *tx)
    .await?;
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
    let rows = sqlx::query(
        "WITH budgets AS (
             SELECT c.campaign_id, c.priority_rule,
                    CASE WHEN c.pacing_ratio < 0 THEN $3::bigint
                         WHEN coalesce(s.agents_available, 0) <= 0 THEN 0
                         ELSE greatest(1, ceil(c.pacing_ratio * s.agents_available))::bigint
                              - (SELECT count(*) FROM plans q
                                 WHERE q.campaign_id = c.campaign_id AND q.status = 'queued')
                    END AS budget
             FROM campaigns c
             LEFT JOIN campaign_staffing s ON s.campaign_id = c.campaign_id
                 AND s.at > $1 - make_interval(mins => $4)
             WHERE c.campaign_id = ANY($2)),
         ranked AS (
             SELECT p.contact_id, b.budget,
                    row_number() OVER (
                        PARTITION BY p.campaign_id
                        ORDER BY (p.callback_agent_id IS NULL),
                                 CASE WHEN b.priority_rule = 'fifo' THEN 0 ELSE p.priority_key END,
                                 p.arrival) AS rank
             FROM plans p JOIN budgets b ON b.campaign_id = p.campaign_id
             WHERE p.status = 'planned' AND p.next_due_at <= $1 AND b.budget > 0)
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
    let rule = PressureRule::default();
    let horizon =
        now - chrono::Duration::days(i64::from(rule.quiet_days_after_refusal.max(rule.per_days)));
    let mut history: HashMap<String, Vec<PersonAttempt>> = HashMap::new();
    for r in sqlx::query(
        "SELECT person_key, at, refused FROM person_attempts
         WHERE person_key = ANY($1) AND at > $2",
    )
    .bind(&keys)
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

    let mut policies: HashMap<Uuid, CallingPolicy> = HashMap::new();
    let mut queued = Vec::new();
    let mut replanned: (Vec<Uuid>, Vec<DateTime<Utc>>) = Default::default();
    let mut outbox = Outbox::new();
    let mut closed = Vec::new();
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
        let allowed = history
            .get(&person_key)
            .map(|h| retry::earliest_allowed(&rule, h, now))
            .unwrap_or(now);
        match next_open_window(&state.calendar, policy, &place, allowed) {
            Some((start, end)) if start <= now => {
                let attempt_number = r.get::<i32, _>("attempts") as u32 + 1;
                let contact = contact_id.to_string();
                let event_id = Uuid::new_v4().to_string();
                let event = CallDue {
                    envelope: Some(envelope(
                        event_id.clone(),
                        r.get("fund_code"),
                        &campaign_id.to_string(),
                        &contact,
                        now,
                    )),
                    call_id: derived_id(&["call", &contact, &attempt_number.to_string()]),
                    contact_id: contact,
                    person_key,
                    attempt_number,
                    due_at: Some(timestamp(now)),
                    window_end: Some(timestamp(end)),
                    // The dialer serves its queue by this key: under "fifo" it is the arrival.
                    priority_key: if r.get::<&str, _>("priority_rule") == "fifo" {
                        r.get("arrival")
                    } else {
                        r.get("priority_key")
                    },
                    time_zone: place.time_zone().name().to_string(),
                    territory: place.territory().code().to_string(),
                    department: place.department_code().unwrap_or_default().to_string(),
                    callback_agent_id: r
                        .get::<Option<String>, _>("callback_agent_id")
                        .unwrap_or_default(),
                };
                outbox.push(subjects::event("scheduler", "call_due"), &event_id, &event);
                queued.push(contact_id);
            }
            Some((start, _)) => {
                replanned.0.push(contact_id);
                replanned.1.push(start);
            }
            None => {
                replanned.0.push(contact_id);
                replanned.1.push(now + chrono::Duration::days(30));
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
/// each closure with a `ContactClosed`, in the caller's transaction. Returns how many closed.
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
