//! The scheduler's share of the rights of the people called: what its plans hold about a
//! person's contacts, re-planning after a rectification (new territory and time zone, new
//! person key), and the retention purge.

use crate::planning::place_of;
use crate::State;
use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_domain::calendar::{next_open_window, CallingPolicy};
use cnmas_proto::rights::{CallReplanned, ContactRectified, DataItem};
use cnmas_proto::support::{derived_id, envelope, timestamp};
use cnmas_runtime::rights::{
    delete_campaign_rows, delete_older_than, item, ExpiredCampaign, PersonData, Purged, Retention,
};
use prost::Message;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use uuid::Uuid;

const SERVICE: &str = crate::SERVICE;

pub struct SchedulerData;

#[tonic::async_trait]
impl PersonData for SchedulerData {
    async fn export(
        &self,
        pool: &PgPool,
        person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<DataItem>, sqlx::Error> {
        let mut items = Vec::new();
        for r in sqlx::query(
            "SELECT contact_id, campaign_id, fund_code, theme, territory, department, status,
                    attempts, next_due_at, callback_agent_id, final_status, updated_at
             FROM plans WHERE contact_id = ANY($1) AND ($2 = '' OR fund_code = $2)",
        )
        .bind(contact_ids)
        .bind(fund.unwrap_or_default())
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "plans",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                None,
                Some(r.get("updated_at")),
                json!({"theme": r.get::<String, _>("theme"),
                       "territory": r.get::<String, _>("territory"),
                       "department": r.get::<String, _>("department"),
                       "status": r.get::<String, _>("status"),
                       "attempts": r.get::<i32, _>("attempts"),
                       "next_due_at": r.get::<Option<DateTime<Utc>>, _>("next_due_at")
                           .map(|t| t.to_rfc3339()),
                       "callback_agent_id": r.get::<Option<String>, _>("callback_agent_id"),
                       "final_status": r.get::<Option<String>, _>("final_status")}),
            ));
        }
        // The pressure history is person-wide, across funds: only an export for every fund
        // (admin, auditor) shows it; a fund sees its own attempts in the dialer's items.
        if fund.is_none() {
            for r in sqlx::query(
                "SELECT at, refused, attempt_id FROM person_attempts WHERE person_key = $1
                 ORDER BY at",
            )
            .bind(person_key)
            .fetch_all(pool)
            .await?
            {
                items.push(item(
                    SERVICE,
                    "person_attempts",
                    None,
                    "",
                    None,
                    Some(r.get("at")),
                    None,
                    json!({"attempt_id": r.get::<String, _>("attempt_id"),
                           "refused_in_conversation": r.get::<bool, _>("refused")}),
                ));
            }
        }
        Ok(items)
    }

    async fn purge_campaign(
        &self,
        tx: &mut PgConnection,
        campaign: &ExpiredCampaign,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        delete_campaign_rows(tx, campaign.campaign_id, &["plans", "rectified_contacts"]).await
    }

    /// Attempts per person (for the pressure limits) carry no campaign: they go by age, with
    /// the retention of contact data (counted from the attempt, the "last contact").
    async fn purge_person_wide(
        &self,
        tx: &mut PgConnection,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        let cutoff = now - chrono::Duration::days(i64::from(retention.contact_days));
        delete_older_than(tx, &["person_attempts"], "at", cutoff).await
    }
}

/// Applies intake's `ContactRectified` to the plan: new territory, department (so the time zone
/// of every later call), priority and person key. The rectification is also kept in
/// `rectified_contacts`, so a plan created after it (the contact still on its way through
/// consent) takes it too. A queued call is re-planned in the dialer with `CallReplanned`.
pub struct Rectifications {
    pub(crate) state: Arc<State>,
}

impl BatchHandler for Rectifications {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        let now = self.state.clock.now();
        for m in batch {
            let Ok(e) = ContactRectified::decode(m.payload.clone()) else {
                verdicts.push(Verdict::DeadLetter("undecodable ContactRectified".into()));
                continue;
            };
            let env = e.envelope.clone().unwrap_or_default();
            let (Ok(contact_id), Ok(campaign_id)) = (
                Uuid::parse_str(&e.contact_id),
                Uuid::parse_str(&env.campaign_id),
            ) else {
                verdicts.push(Verdict::DeadLetter("ContactRectified with bad ids".into()));
                continue;
            };
            verdicts.push(Verdict::Done);
            let at = env
                .occurred_at
                .as_ref()
                .and_then(cnmas_proto::support::from_timestamp)
                .unwrap_or(now);
            // Rectifications may arrive out of order: the latest wins.
            sqlx::query(
                "INSERT INTO rectified_contacts (contact_id, campaign_id, person_key, territory,
                     department, priority_key, rectified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (contact_id) DO UPDATE SET person_key = EXCLUDED.person_key,
                     territory = EXCLUDED.territory, department = EXCLUDED.department,
                     priority_key = EXCLUDED.priority_key, rectified_at = EXCLUDED.rectified_at
                 WHERE rectified_contacts.rectified_at <= EXCLUDED.rectified_at",
            )
            .bind(contact_id)
            .bind(campaign_id)
            .bind(&e.person_key)
            .bind(&e.territory)
            .bind(&e.department)
            .bind(e.priority_key)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let Some(plan) = sqlx::query(
                "SELECT p.status, p.person_key, p.territory, p.department, c.calling_policy
                 FROM plans p LEFT JOIN campaigns c ON c.campaign_id = p.campaign_id
                 WHERE p.contact_id = $1 FOR UPDATE OF p",
            )
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                continue;
            };
            let moved = plan.get::<String, _>("territory") != e.territory
                || plan.get::<String, _>("department") != e.department;
            let rekeyed = plan.get::<String, _>("person_key") != e.person_key;
            apply_rectifications(tx, &[contact_id]).await?;
            if plan.get::<String, _>("status") != "queued" || !(moved || rekeyed) {
                continue;
            }
            // The queued call was planned for the old place: its window is recomputed for the
            // new one, or the call is withdrawn when no window is open there now.
            let policy: CallingPolicy = plan
                .get::<Option<serde_json::Value>, _>("calling_policy")
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_else(CallingPolicy::legal_default);
            let place = place_of(&e.department, &e.territory);
            let window_end = place.as_ref().and_then(|p| {
                match next_open_window(&self.state.calendar, &policy, p, now) {
                    Some((start, end)) if start <= now => Some(end),
                    _ => None,
                }
            });
            let event_id = derived_id(&["call_replanned", &m.event_id]);
            outbox.push(
                subjects::event(SERVICE, "call_replanned"),
                &event_id,
                &CallReplanned {
                    envelope: Some(envelope(
                        event_id.clone(),
                        &env.fund_code,
                        &env.campaign_id,
                        &m.event_id,
                        now,
                    )),
                    contact_id: e.contact_id.clone(),
                    person_key: e.person_key.clone(),
                    territory: e.territory.clone(),
                    department: e.department.clone(),
                    time_zone: place
                        .map(|p| p.time_zone().name().to_string())
                        .unwrap_or_default(),
                    window_end: window_end.map(timestamp),
                },
            );
        }
        Ok(verdicts)
    }
}

/// Gives the plans of these contacts the data of their latest rectification, if any (called on
/// rectification, and when plans are created, so the order of the two events does not matter).
pub(crate) async fn apply_rectifications(
    tx: &mut PgConnection,
    contact_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plans p SET person_key = r.person_key, territory = r.territory,
             department = r.department,
             priority_key = CASE WHEN c.priority_rule = 'fifo' THEN 0 ELSE r.priority_key END,
             updated_at = now()
         FROM rectified_contacts r, campaigns c
         WHERE r.contact_id = p.contact_id AND c.campaign_id = p.campaign_id
           AND p.contact_id = ANY($1)",
    )
    .bind(contact_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The plan of a contact whose identifier was corrected takes the new person key (consent's
/// `ContactRekeyed`, applied by the planner in order with the contact's other consent events).
pub(crate) async fn rekey(
    tx: &mut PgConnection,
    contact_id: Uuid,
    person_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE plans SET person_key = $2, updated_at = now() WHERE contact_id = $1")
        .bind(contact_id)
        .bind(person_key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
