//! The dialer's share of the rights of the people called: what it holds about a person's
//! contacts (queued calls, attempts), queued calls following a rectification, and the
//! retention purge.

use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_proto::dialer::CallReturned;
use cnmas_proto::rights::{CallReplanned, DataItem};
use cnmas_proto::support::{envelope, from_timestamp};
use cnmas_runtime::rights::{
    delete_campaign_rows, delete_older_than, item, ExpiredCampaign, PersonData, Purged, Retention,
};
use prost::Message;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const SERVICE: &str = crate::SERVICE;

pub struct DialerData;

#[tonic::async_trait]
impl PersonData for DialerData {
    async fn export(
        &self,
        pool: &PgPool,
        _person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<DataItem>, sqlx::Error> {
        let fund = fund.unwrap_or_default();
        let mut items = Vec::new();
        for r in sqlx::query(
            "SELECT call_id, contact_id, campaign_id, fund_code, attempt_number, due_at,
                    window_end, territory, department, callback_agent_id, leased_by, leased_at
             FROM queue WHERE contact_id = ANY($1) AND ($2 = '' OR fund_code = $2)
             ORDER BY due_at",
        )
        .bind(contact_ids)
        .bind(fund)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "queue",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                Some(r.get("due_at")),
                r.get("leased_at"),
                json!({"call_id": r.get::<String, _>("call_id"),
                       "attempt_number": r.get::<i32, _>("attempt_number"),
                       "window_end": r.get::<DateTime<Utc>, _>("window_end").to_rfc3339(),
                       "territory": r.get::<String, _>("territory"),
                       "department": r.get::<String, _>("department"),
                       "callback_agent_id": r.get::<String, _>("callback_agent_id"),
                       "leased_by": r.get::<Option<String>, _>("leased_by")}),
            ));
        }
        // Attempts carry no fund: the campaign's (projected) fund decides.
        for r in sqlx::query(
            "SELECT a.attempt_id, a.contact_id, a.campaign_id, a.agent_id, a.attempt_number,
                    a.outcome, a.leased_at, a.recorded_at, a.callback_at,
                    coalesce(c.fund_code, '') AS fund_code
             FROM attempts a LEFT JOIN campaigns c ON c.campaign_id = a.campaign_id
             WHERE a.contact_id = ANY($1) AND ($2 = '' OR c.fund_code = $2)
             ORDER BY a.recorded_at",
        )
        .bind(contact_ids)
        .bind(fund)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "attempts",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                Some(r.get("recorded_at")),
                None,
                json!({"attempt_id": r.get::<Uuid, _>("attempt_id").to_string(),
                       "agent_id": r.get::<String, _>("agent_id"),
                       "attempt_number": r.get::<i32, _>("attempt_number"),
                       "outcome": r.get::<String, _>("outcome"),
                       "leased_at": r.get::<DateTime<Utc>, _>("leased_at").to_rfc3339(),
                       "callback_at": r.get::<Option<DateTime<Utc>>, _>("callback_at")
                           .map(|t| t.to_rfc3339())}),
            ));
        }
        for r in sqlx::query(
            "SELECT contact_id, closed_at FROM closed_contacts WHERE contact_id = ANY($1)",
        )
        .bind(contact_ids)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "closed_contacts",
                None,
                fund,
                Some(r.get("contact_id")),
                Some(r.get("closed_at")),
                None,
                json!({}),
            ));
        }
        Ok(items)
    }

    async fn purge_campaign(
        &self,
        tx: &mut PgConnection,
        campaign: &ExpiredCampaign,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        delete_campaign_rows(tx, campaign.campaign_id, &["queue", "attempts"]).await
    }

    /// Closed contacts are only kept to drop late calls; they carry no campaign, so they go by
    /// age, with the same retention as contact data.
    async fn purge_person_wide(
        &self,
        tx: &mut PgConnection,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        let cutoff = now - chrono::Duration::days(i64::from(retention.contact_days));
        delete_older_than(tx, &["closed_contacts"], "closed_at", cutoff).await
    }
}

/// Applies the scheduler's `CallReplanned`: a free queued call of the contact takes the new
/// place, person key and window end; when no window is open at the new place now, the call is
/// withdrawn and returned to the scheduler (which plans it in the new place's next window). A
/// call an agent holds stays with the agent.
///
/// `CallReplanned` and the `CallDue` it corrects come from the scheduler through different
/// consumers: when no call of the contact is here yet (nor closed), the replan waits a little
/// for its call (a few deliveries), then gives up — the call was taken and finished meanwhile.
pub struct Replans;

/// Deliveries of a `CallReplanned` that found no call, before it is let go.
const REPLAN_WAIT_DELIVERIES: i64 = 4;

impl BatchHandler for Replans {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for m in batch {
            let Ok(e) = CallReplanned::decode(m.payload.clone()) else {
                verdicts.push(Verdict::DeadLetter("undecodable CallReplanned".into()));
                continue;
            };
            let Ok(contact_id) = Uuid::parse_str(&e.contact_id) else {
                verdicts.push(Verdict::DeadLetter(
                    "CallReplanned with a bad contact id".into(),
                ));
                continue;
            };
            let touched = match e.window_end.as_ref().and_then(from_timestamp) {
                Some(window_end) => sqlx::query(
                    "UPDATE queue SET territory = $2, department = $3, person_key = $4,
                             window_end = $5
                         WHERE contact_id = $1 AND leased_by IS NULL",
                )
                .bind(contact_id)
                .bind(&e.territory)
                .bind(&e.department)
                .bind(&e.person_key)
                .bind(window_end)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => {
                    let returned = sqlx::query(
                        "DELETE FROM queue WHERE contact_id = $1 AND leased_by IS NULL
                         RETURNING call_id, campaign_id, fund_code",
                    )
                    .bind(contact_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let n = returned.len() as u64;
                    for r in returned {
                        let call_id: String = r.get("call_id");
                        let campaign_id: Uuid = r.get("campaign_id");
                        let event_id = Uuid::new_v4().to_string();
                        outbox.push(
                            subjects::event("dialer", "call_returned"),
                            &event_id,
                            &CallReturned {
                                envelope: Some(envelope(
                                    event_id.clone(),
                                    r.get("fund_code"),
                                    &campaign_id.to_string(),
                                    &m.event_id,
                                    Utc::now(),
                                )),
                                call_id,
                                contact_id: e.contact_id.clone(),
                                reason: "callee_moved".into(),
                            },
                        );
                    }
                    n
                }
            };
            if touched == 0 && m.delivered < REPLAN_WAIT_DELIVERIES {
                let present: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM queue WHERE contact_id = $1)
                         OR EXISTS (SELECT 1 FROM closed_contacts WHERE contact_id = $1)",
                )
                .bind(contact_id)
                .fetch_one(&mut *tx)
                .await?;
                if !present {
                    verdicts.push(Verdict::Retry(std::time::Duration::from_millis(500)));
                    continue;
                }
            }
            verdicts.push(Verdict::Done);
        }
        Ok(verdicts)
    }
}
