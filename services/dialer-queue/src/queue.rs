//! Feeding the queue from the scheduler's events, and returning calls whose window closed.

use crate::State;
use chrono::Utc;
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_proto::dialer::CallReturned;
use cnmas_proto::scheduler::{CallDue, CallsDue, CampaignChanged, CampaignState, ContactsClosed};
use cnmas_proto::support::{envelope, from_timestamp, theme_from_proto};
use prost::Message;
use sqlx::{PgConnection, Row};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Applies `CallsDue`, `ContactsClosed` and `CampaignChanged` to the queue.
pub struct QueueFeed;

#[derive(Default)]
struct DueRows {
    call_ids: Vec<String>,
    contact_ids: Vec<Uuid>,
    campaign_ids: Vec<Uuid>,
    funds: Vec<String>,
    person_keys: Vec<String>,
    attempts: Vec<i32>,
    due: Vec<chrono::DateTime<Utc>>,
    window_end: Vec<chrono::DateTime<Utc>>,
    priorities: Vec<i64>,
    territories: Vec<String>,
    departments: Vec<String>,
    callback_agents: Vec<String>,
}

impl DueRows {
    /// Adds every call of a set, or none when one has unusable ids or times (the set is then
    /// dead-lettered whole: it was produced by one transaction, so its calls stand together).
    fn push_all(&mut self, calls: Vec<CallDue>) -> bool {
        let mut parsed = Vec::with_capacity(calls.len());
        for c in calls {
            let env = c.envelope.clone().unwrap_or_default();
            let (Ok(contact), Ok(campaign), Some(d), Some(w)) = (
                Uuid::parse_str(&c.contact_id),
                Uuid::parse_str(&env.campaign_id),
                c.due_at.as_ref().and_then(from_timestamp),
                c.window_end.as_ref().and_then(from_timestamp),
            ) else {
                return false;
            };
            parsed.push((c, env.fund_code, contact, campaign, d, w));
        }
        for (c, fund, contact, campaign, d, w) in parsed {
            self.call_ids.push(c.call_id);
            self.contact_ids.push(contact);
            self.campaign_ids.push(campaign);
            self.funds.push(fund);
            self.person_keys.push(c.person_key);
            self.attempts.push(c.attempt_number as i32);
            self.due.push(d);
            self.window_end.push(w);
            self.priorities.push(c.priority_key);
            self.territories.push(c.territory);
            self.departments.push(c.department);
            self.callback_agents.push(c.callback_agent_id);
        }
        true
    }
}

pub(crate) fn state_code(state: i32) -> &'static str {
    match CampaignState::try_from(state).unwrap_or_default() {
        CampaignState::Draft => "draft",
        CampaignState::Active => "active",
        CampaignState::Paused => "paused",
        CampaignState::Completed => "completed",
        CampaignState::Cancelled => "cancelled",
        CampaignState::Unspecified => "unknown",
    }
}

impl BatchHandler for QueueFeed {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        _outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = vec![Verdict::Done; batch.len()];
        let mut due = DueRows::default();
        let mut closed: Vec<Uuid> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let kind = m.subject.rsplit('.').next().unwrap_or_default();
            match kind {
                "calls_due" => {
                    let Ok(set) = CallsDue::decode(m.payload.clone()) else {
                        verdicts[i] = Verdict::DeadLetter("undecodable CallsDue".into());
                        continue;
                    };
                    if !due.push_all(set.calls) {
                        verdicts[i] = Verdict::DeadLetter("CallDue with bad ids or times".into());
                    }
                }
                // A set (decision 0015), or one closure published alone by a scheduler before it.
                "contacts_closed" | "contact_closed" => {
                    let closures = m.items("contacts_closed", |s: ContactsClosed| s.closures);
                    let Ok(closures) = closures else {
                        verdicts[i] = Verdict::DeadLetter(format!("undecodable {kind}"));
                        continue;
                    };
                    closed.extend(
                        closures
                            .iter()
                            .filter_map(|c| Uuid::parse_str(&c.contact_id).ok()),
                    );
                }
                "campaign_changed" => {
                    let Ok(e) = CampaignChanged::decode(m.payload.clone()) else {
                        verdicts[i] = Verdict::DeadLetter("undecodable CampaignChanged".into());
                        continue;
                    };
                    let Some(c) = e.campaign else { continue };
                    let (Ok(id), Some(theme)) =
                        (Uuid::parse_str(&c.campaign_id), theme_from_proto(c.theme))
                    else {
                        verdicts[i] = Verdict::DeadLetter("CampaignChanged with bad id".into());
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO campaigns (campaign_id, fund_code, theme, state,
                             presented_number, calling_policy, version)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (campaign_id) DO UPDATE SET state = EXCLUDED.state,
                             presented_number = EXCLUDED.presented_number,
                             calling_policy = EXCLUDED.calling_policy, version = EXCLUDED.version
                         WHERE campaigns.version < EXCLUDED.version",
                    )
                    .bind(id)
                    .bind(&c.fund_code)
                    .bind(theme.code())
                    .bind(state_code(c.state))
                    .bind(&c.presented_number)
                    .bind(&c.calling_policy)
                    .bind(c.version as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {}
            }
        }
        if !closed.is_empty() {
            sqlx::query(
                "INSERT INTO closed_contacts (contact_id) SELECT * FROM UNNEST($1::uuid[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&closed)
            .execute(&mut *tx)
            .await?;
            // A call being worked stays with its agent: what the person says still counts.
            // "Not leased" is tested on leased_by (set and cleared with lease_id): written as
            // `lease_id IS NULL` it matches the predicates of queue_free and queue_window, and on
            // a queue that grew faster than autovacuum analysed it the planner scanned all of
            // queue_free to AND it with queue_contact (measured: 3.3 ms a batch of closes, 0.7 ms
            // since).
            sqlx::query("DELETE FROM queue WHERE contact_id = ANY($1) AND leased_by IS NULL")
                .bind(&closed)
                .execute(&mut *tx)
                .await?;
        }
        if !due.call_ids.is_empty() {
            let queued = sqlx::query(
                "INSERT INTO queue (call_id, contact_id, campaign_id, fund_code, person_key,
                     attempt_number, due_at, window_end, priority_key, territory, department,
                     callback_agent_id)
                 SELECT x.* FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                     $6::int[], $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::text[],
                     $11::text[], $12::text[]) AS x(c, k, g, f, p, a, d, w, r, t, dp, cb)
                 WHERE NOT EXISTS (SELECT 1 FROM closed_contacts cc WHERE cc.contact_id = x.k)
                 ON CONFLICT (call_id) DO NOTHING",
            )
            .bind(due.call_ids)
            .bind(due.contact_ids)
            .bind(due.campaign_ids)
            .bind(due.funds)
            .bind(due.person_keys)
            .bind(due.attempts)
            .bind(due.due)
            .bind(due.window_end)
            .bind(due.priorities)
            .bind(due.territories)
            .bind(due.departments)
            .bind(due.callback_agents)
            .execute(&mut *tx)
            .await?;
            metrics::counter!("cnmas_dialer_calls_queued_total").increment(queued.rows_affected());
        }
        Ok(verdicts)
    }
}

/// Every second: calls nobody took before their window closed go back to the scheduler, which
/// plans them in the next window (so the queue never holds calls that cannot be made).
pub async fn run_sweeper(state: Arc<State>) {
    let shutdown = state.base.shutdown.clone();
    loop {
        state.leases.forget_expired(chrono::Utc::now());
        if let Err(e) = return_closed_windows(&state).await {
            tracing::warn!(error = %e, "returning expired calls failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Both statements run every second. They are planned at each run (`persistent(false)`): a
/// plan prepared once, when the queue was empty, scans the whole table, and a queue that grows
/// by a million rows faster than autovacuum analyses it keeps that plan (measured: 165 ms a run
/// at 1,000,000 queued calls, well under a millisecond through the indexes). Each tests
/// "leased" / "not leased" on lease_id, the column of the partial index it should use
/// (queue_expiry, queue_window).
async fn return_closed_windows(state: &State) -> Result<(), sqlx::Error> {
    // Expired leases give their call back to the queue (the agent's later outcome is refused).
    let freed = sqlx::query(
        "UPDATE queue SET lease_id = NULL, leased_by = NULL, leased_at = NULL,
             lease_expires_at = NULL
         WHERE lease_id IS NOT NULL AND lease_expires_at < now()",
    )
    .persistent(false)
    .execute(&state.base.pool)
    .await?
    .rows_affected();
    if freed > 0 {
        metrics::counter!("cnmas_dialer_leases_expired_total").increment(freed);
    }
    let mut tx = state.base.pool.begin().await?;
    let rows = sqlx::query(
        "DELETE FROM queue WHERE call_id IN (
             SELECT call_id FROM queue
             WHERE window_end <= now() AND lease_id IS NULL
             LIMIT 1000 FOR UPDATE SKIP LOCKED)
         RETURNING call_id, contact_id, campaign_id, fund_code",
    )
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut outbox = Outbox::new();
    for r in &rows {
        let call_id: String = r.get("call_id");
        let contact_id: Uuid = r.get("contact_id");
        let campaign_id: Uuid = r.get("campaign_id");
        // A call may come back more than once (same call id, released again): each return is
        // its own event.
        let event_id = Uuid::new_v4().to_string();
        outbox.push(
            subjects::event("dialer", "call_returned"),
            &event_id,
            &CallReturned {
                envelope: Some(envelope(
                    event_id.clone(),
                    r.get("fund_code"),
                    &campaign_id.to_string(),
                    &call_id,
                    Utc::now(),
                )),
                call_id,
                contact_id: contact_id.to_string(),
                reason: "window_closed".into(),
            },
        );
    }
    outbox.flush(&mut tx).await?;
    tx.commit().await?;
    metrics::counter!("cnmas_dialer_calls_returned_total").increment(rows.len() as u64);
    state.base.relay.wake();
    Ok(())
}
