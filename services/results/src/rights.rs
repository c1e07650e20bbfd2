//! Results' share of the rights of the people called: what it holds about a person's contacts
//! (references, attempts, interviews, closures, results delivered), and the retention purge.
//!
//! The purge deletes the contact-level rows and keeps each delivered result as an anonymous row
//! (no contact id, no fund reference, a random result id): campaign reports are computed from
//! those rows alone, so a report is the same before and after the purge.

use cnmas_proto::common::{FinalStatus, OfferDecision};
use cnmas_proto::dialer::InterviewCompleted;
use cnmas_proto::rights::DataItem;
use cnmas_runtime::rights::{delete_campaign_rows, item, ExpiredCampaign, PersonData, Purged};
use prost::Message;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const SERVICE: &str = crate::SERVICE;

pub struct ResultsData;

fn status_name(s: i32) -> String {
    FinalStatus::try_from(s)
        .map(|s| s.as_str_name().to_ascii_lowercase())
        .unwrap_or_default()
}

fn offer_name(s: i32) -> String {
    OfferDecision::try_from(s)
        .map(|s| s.as_str_name().to_ascii_lowercase())
        .unwrap_or_default()
}

/// What the person said in an interview, as JSON (the stored message is protobuf).
fn interview_json(message: &[u8], offer_decision: i32) -> serde_json::Value {
    let Ok(m) = InterviewCompleted::decode(message) else {
        return json!({"offer_decision": offer_name(offer_decision)});
    };
    let follow_ups: Vec<_> = m
        .follow_ups
        .iter()
        .map(|f| {
            json!({"kind": cnmas_proto::common::FollowUpKind::try_from(f.kind)
                .map(|k| k.as_str_name().to_ascii_lowercase()).unwrap_or_default(),
                   "note": f.note})
        })
        .collect();
    let changes: Vec<_> = m
        .contact_detail_changes
        .iter()
        .filter_map(|c| c.change.as_ref())
        .map(|c| {
            use cnmas_proto::common::contact_detail_change::Change;
            match c {
                Change::Phone(p) => json!({"phone": p}),
                Change::Email(e) => json!({"email": e}),
                Change::PostalAddress(a) => json!({"postal_address": {
                    "lines": a.lines, "postcode": a.postcode, "city": a.city}}),
            }
        })
        .collect();
    let consents: Vec<_> = m
        .consent_changes
        .iter()
        .map(|c| {
            json!({"channel": cnmas_proto::common::Channel::try_from(c.channel)
                .map(|k| k.as_str_name().to_ascii_lowercase()).unwrap_or_default(),
                   "opted_out": c.opted_out, "all_themes": c.all_themes})
        })
        .collect();
    json!({"offer_decision": offer_name(m.offer_decision), "follow_ups": follow_ups,
           "contact_detail_changes": changes, "consent_changes": consents})
}

#[tonic::async_trait]
impl PersonData for ResultsData {
    async fn export(
        &self,
        pool: &PgPool,
        _person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<DataItem>, sqlx::Error> {
        let fund = fund.unwrap_or_default();
        let mut items = Vec::new();
        // Funds of the contacts (attempts and interviews do not carry it).
        let mut funds = std::collections::HashMap::new();
        for r in sqlx::query(
            "SELECT contact_id, campaign_id, fund_code, submission_ref, accepted_at FROM contacts
             WHERE contact_id = ANY($1) AND ($2 = '' OR fund_code = $2) ORDER BY accepted_at",
        )
        .bind(contact_ids)
        .bind(fund)
        .fetch_all(pool)
        .await?
        {
            let contact: Uuid = r.get("contact_id");
            let fund_code: String = r.get("fund_code");
            funds.insert(contact, fund_code.clone());
            items.push(item(
                SERVICE,
                "contacts",
                Some(r.get("campaign_id")),
                &fund_code,
                Some(contact),
                Some(r.get("accepted_at")),
                None,
                json!({"submission_ref": r.get::<String, _>("submission_ref")}),
            ));
        }
        let known: Vec<Uuid> = funds.keys().copied().collect();
        let fund_of = |c: &Uuid| funds.get(c).cloned().unwrap_or_default();
        for r in sqlx::query(
            "SELECT attempt_id, contact_id, campaign_id, attempt_number, at, outcome FROM attempts
             WHERE contact_id = ANY($1) ORDER BY at",
        )
        .bind(&known)
        .fetch_all(pool)
        .await?
        {
            let contact: Uuid = r.get("contact_id");
            items.push(item(
                SERVICE,
                "attempts",
                Some(r.get("campaign_id")),
                &fund_of(&contact),
                Some(contact),
                Some(r.get("at")),
                None,
                json!({"attempt_id": r.get::<Uuid, _>("attempt_id").to_string(),
                       "attempt_number": r.get::<i32, _>("attempt_number"),
                       "outcome": cnmas_proto::common::AttemptOutcome::try_from(r.get::<i32, _>("outcome"))
                           .map(|o| o.as_str_name().to_ascii_lowercase()).unwrap_or_default()}),
            ));
        }
        for r in sqlx::query(
            "SELECT i.attempt_id, i.contact_id, i.offer_decision, i.message, i.at, c.campaign_id
             FROM interviews i JOIN contacts c ON c.contact_id = i.contact_id
             WHERE i.contact_id = ANY($1) ORDER BY i.at",
        )
        .bind(&known)
        .fetch_all(pool)
        .await?
        {
            let contact: Uuid = r.get("contact_id");
            let mut data = interview_json(r.get("message"), r.get("offer_decision"));
            data["attempt_id"] = json!(r.get::<Uuid, _>("attempt_id").to_string());
            items.push(item(
                SERVICE,
                "interviews",
                Some(r.get("campaign_id")),
                &fund_of(&contact),
                Some(contact),
                Some(r.get("at")),
                None,
                data,
            ));
        }
        for r in sqlx::query(
            "SELECT contact_id, campaign_id, fund_code, final_status, attempts, reason, closed_at
             FROM closures WHERE contact_id = ANY($1)",
        )
        .bind(&known)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "closures",
                Some(r.get("campaign_id")),
                r.get("fund_code"),
                Some(r.get("contact_id")),
                Some(r.get("closed_at")),
                None,
                json!({"final_status": status_name(r.get("final_status")),
                       "attempts": r.get::<i32, _>("attempts"),
                       "reason": r.get::<String, _>("reason")}),
            ));
        }
        for r in sqlx::query(
            "SELECT result_id, contact_id, campaign_id, fund_code, submission_ref, final_status,
                    offer_decision, attempts, published_at
             FROM results WHERE contact_id = ANY($1)",
        )
        .bind(&known)
        .fetch_all(pool)
        .await?
        {
            items.push(item(
                SERVICE,
                "results",
                r.get("campaign_id"),
                r.get("fund_code"),
                r.get("contact_id"),
                Some(r.get("published_at")),
                None,
                json!({"result_id": r.get::<String, _>("result_id"),
                       "submission_ref": r.get::<String, _>("submission_ref"),
                       "final_status": status_name(r.get("final_status")),
                       "offer_decision": offer_name(r.get("offer_decision")),
                       "attempts": r.get::<i32, _>("attempts")}),
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
        let mut out = Vec::new();
        // Interviews first: they are found through the campaign's contacts.
        let interviews = sqlx::query(
            "DELETE FROM interviews WHERE contact_id IN
                 (SELECT contact_id FROM contacts WHERE campaign_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        out.push(Purged {
            campaign_id: Some(id),
            table: "interviews",
            rows: interviews,
        });
        out.extend(delete_campaign_rows(tx, id, &["attempts", "closures", "contacts"]).await?);
        // Results stay for the reports, stripped of everything that links them to a contact.
        let anonymised = sqlx::query(
            "UPDATE results SET result_id = 'purged:' || gen_random_uuid(), contact_id = NULL,
                 submission_ref = ''
             WHERE campaign_id = $1 AND (contact_id IS NOT NULL OR submission_ref <> '')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        out.push(Purged {
            campaign_id: Some(id),
            table: "results",
            rows: anonymised,
        });
        Ok(out)
    }
}
