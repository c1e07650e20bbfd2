//! Consent's share of the rights of the people called: what the register and the decisions hold
//! about a person (subject access), following a person key changed by a rectification, and the
//! retention purge (decisions with their campaign; register entries by their own age).

use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, BatchHandler, HandlerError, Incoming, Outbox, Verdict};
use cnmas_proto::rights::{ContactRectified, ContactRekeyed, DataItem};
use cnmas_proto::support::{derived_id, envelope};
use cnmas_runtime::rights::{
    delete_campaign_rows, delete_older_than, item, ExpiredCampaign, PersonData, Purged, Retention,
};
use prost::Message;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const SERVICE: &str = crate::SERVICE;

pub struct ConsentData;

/// What a fund may see of a register entry recorded for another fund: that it exists, its
/// channel, scope, value and time — not which fund, nor that fund's evidence.
fn shown_fund(entry_fund: &str, asking: Option<&str>) -> String {
    match asking {
        Some(f) if f != entry_fund => "another fund".into(),
        _ => entry_fund.to_string(),
    }
}

#[tonic::async_trait]
impl PersonData for ConsentData {
    async fn export(
        &self,
        pool: &PgPool,
        person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<DataItem>, sqlx::Error> {
        let mut items = Vec::new();
        for r in sqlx::query(
            "SELECT contact_id, campaign_id, theme, decision, decided_at FROM decisions
             WHERE contact_id = ANY($1) ORDER BY decided_at",
        )
        .bind(contact_ids)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "decisions",
                Some(r.get("campaign_id")),
                fund.unwrap_or_default(),
                Some(r.get("contact_id")),
                Some(r.get("decided_at")),
                None,
                json!({"theme": r.get::<String, _>("theme"),
                       "decision": r.get::<String, _>("decision")}),
            ));
        }
        // The register is person-wide: a fund holding contacts of the person sees every entry
        // (other funds' anonymised); a fund without any sees only the entries it pushed.
        let sees_all = fund.is_none() || !contact_ids.is_empty();
        for (kind, table, order) in [
            ("register", "register", "changed_at"),
            ("register_history", "register_history", "id"),
        ] {
            let rows = sqlx::query(&format!(
                "SELECT channel, scope, opted_out, source, fund_code, evidence, changed_at
                 FROM {table} WHERE person_key = $1 AND ($2 OR fund_code = $3) ORDER BY {order}"
            ))
            .bind(person_key)
            .bind(sees_all)
            .bind(fund.unwrap_or_default())
            .fetch_all(pool)
            .await?;
            for r in rows {
                let entry_fund: String = r.get("fund_code");
                let shown_fund = shown_fund(&entry_fund, fund);
                let evidence: String = if shown_fund == entry_fund {
                    r.get("evidence")
                } else {
                    String::new()
                };
                items.push(item(
                    SERVICE,
                    kind,
                    None,
                    &shown_fund,
                    None,
                    Some(r.get("changed_at")),
                    None,
                    json!({"channel": r.get::<String, _>("channel"),
                           "scope": r.get::<String, _>("scope"),
                           "opted_out": r.get::<bool, _>("opted_out"),
                           "source": r.get::<String, _>("source"),
                           "evidence": evidence}),
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
        delete_campaign_rows(tx, campaign.campaign_id, &["decisions"]).await
    }

    /// Opt-out lists are kept at least `opt_out_days` after their last change; older entries
    /// (and their history) go.
    async fn purge_person_wide(
        &self,
        tx: &mut PgConnection,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        let cutoff = now - chrono::Duration::days(i64::from(retention.opt_out_days));
        delete_older_than(tx, &["register", "register_history"], "changed_at", cutoff).await
    }
}

/// Follows a rectified identifier: the contact's decision moves to the new person key, and the
/// register entries of the old key are copied to the new one where it has none — an opt-out
/// the person gave stays in force whatever identifier the fund corrects to. The old key keeps
/// its entries (they may be another person's, whose identifier the fund had sent by mistake).
/// `ContactRekeyed` then tells the scheduler, after the contact's `ContactCleared` on the same
/// stream, whether the new key refuses phone calls.
pub struct Rectifications;

/// Deliveries of a `ContactRectified` that arrived before its contact was screened (another
/// consumer), before it is let go (the contact was never screened: nothing to follow).
const SCREENING_WAIT_DELIVERIES: i64 = 4;

impl BatchHandler for Rectifications {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for m in batch {
            let Ok(e) = ContactRectified::decode(m.payload.clone()) else {
                verdicts.push(Verdict::DeadLetter("undecodable ContactRectified".into()));
                continue;
            };
            let (Ok(contact_id), false) = (
                Uuid::parse_str(&e.contact_id),
                e.previous_person_key.is_empty() || e.person_key.is_empty(),
            ) else {
                verdicts.push(Verdict::Done);
                continue;
            };
            let Some(decision) = sqlx::query(
                "UPDATE decisions SET person_key = $2 WHERE contact_id = $1
                 RETURNING theme, decision",
            )
            .bind(contact_id)
            .bind(&e.person_key)
            .fetch_optional(&mut *tx)
            .await?
            else {
                verdicts.push(if m.delivered < SCREENING_WAIT_DELIVERIES {
                    Verdict::Retry(std::time::Duration::from_millis(500))
                } else {
                    Verdict::Done
                });
                continue;
            };
            verdicts.push(Verdict::Done);
            let copied = sqlx::query(
                "INSERT INTO register (person_key, channel, scope, opted_out, source, fund_code,
                     evidence, changed_at)
                 SELECT $2, channel, scope, opted_out, source, fund_code, evidence, changed_at
                 FROM register WHERE person_key = $1
                 ON CONFLICT (person_key, channel, scope) DO NOTHING
                 RETURNING channel, scope, opted_out, source, fund_code, evidence, changed_at",
            )
            .bind(&e.previous_person_key)
            .bind(&e.person_key)
            .fetch_all(&mut *tx)
            .await?;
            for r in copied {
                sqlx::query(
                    "INSERT INTO register_history (person_key, channel, scope, opted_out, source,
                         fund_code, evidence, changed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&e.person_key)
                .bind(r.get::<String, _>("channel"))
                .bind(r.get::<String, _>("scope"))
                .bind(r.get::<bool, _>("opted_out"))
                .bind(r.get::<String, _>("source"))
                .bind(r.get::<String, _>("fund_code"))
                .bind(format!("rectification:{}", e.contact_id))
                .bind(r.get::<DateTime<Utc>, _>("changed_at"))
                .execute(&mut *tx)
                .await?;
            }
            // A suppressed contact has no plan: only a cleared one is followed by the scheduler.
            if decision.get::<String, _>("decision") != "cleared" {
                continue;
            }
            let phone_opted_out: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM register WHERE person_key = $1 AND channel = 'phone'
                     AND opted_out AND scope IN ('*', $2))",
            )
            .bind(&e.person_key)
            .bind(decision.get::<String, _>("theme"))
            .fetch_one(&mut *tx)
            .await?;
            let env = e.envelope.clone().unwrap_or_default();
            let event_id = derived_id(&["contact_rekeyed", &m.event_id]);
            outbox.push(
                subjects::event(crate::SERVICE, "contact_rekeyed"),
                &event_id,
                &ContactRekeyed {
                    envelope: Some(envelope(
                        event_id.clone(),
                        &env.fund_code,
                        &env.campaign_id,
                        &m.event_id,
                        Utc::now(),
                    )),
                    contact_id: e.contact_id.clone(),
                    person_key: e.person_key.clone(),
                    previous_person_key: e.previous_person_key.clone(),
                    phone_opted_out,
                },
            );
        }
        Ok(verdicts)
    }
}
