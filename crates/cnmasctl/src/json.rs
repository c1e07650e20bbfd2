//! JSON views of the wire messages the CLI prints (one object per line).

use cnmas_proto::common::{
    contact_detail_change::Change, AttemptOutcome, Channel, ConsentChange, ContactDetailChange,
    FinalStatus, FollowUpKind, FollowUpRequest, OfferDecision, Reason, Theme,
};
use cnmas_proto::dialer::LeasedCall;
use cnmas_proto::intake::ContactRejected;
use cnmas_proto::results::{CampaignReport, ContactChangeNotice, ContactResult, FollowUpNotice};
use cnmas_proto::scheduler::{Campaign, CampaignState};
use cnmas_proto::support::from_timestamp;
use serde_json::{json, Value};

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(from_timestamp)
        .map(|t| Value::String(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// `THEME_FLU_VACCINATION` → `flu_vaccination`.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn theme(v: i32) -> String {
    enum_name(
        Theme::try_from(v).unwrap_or_default().as_str_name(),
        "THEME_",
    )
}

pub fn final_status(v: i32) -> String {
    enum_name(
        FinalStatus::try_from(v).unwrap_or_default().as_str_name(),
        "FINAL_STATUS_",
    )
}

fn offer(v: i32) -> String {
    enum_name(
        OfferDecision::try_from(v).unwrap_or_default().as_str_name(),
        "OFFER_DECISION_",
    )
}

fn outcome(v: i32) -> String {
    enum_name(
        AttemptOutcome::try_from(v)
            .unwrap_or_default()
            .as_str_name(),
        "ATTEMPT_OUTCOME_",
    )
}

fn reasons(r: &[Reason]) -> Value {
    r.iter()
        .map(|r| json!({"field": r.field, "rule": r.rule, "message": r.message}))
        .collect()
}

fn follow_ups(f: &[FollowUpRequest]) -> Value {
    f.iter()
        .map(|f| {
            json!({"kind": enum_name(FollowUpKind::try_from(f.kind).unwrap_or_default().as_str_name(), "FOLLOW_UP_KIND_"), "note": f.note})
        })
        .collect()
}

fn changes(c: &[ContactDetailChange]) -> Value {
    c.iter()
        .map(|c| match &c.change {
            Some(Change::Phone(p)) => json!({"phone": p}),
            Some(Change::Email(e)) => json!({"email": e}),
            Some(Change::PostalAddress(a)) => {
                json!({"postal_address": {"lines": a.lines, "postcode": a.postcode, "city": a.city}})
            }
            None => Value::Null,
        })
        .collect()
}

fn consents(c: &[ConsentChange]) -> Value {
    c.iter()
        .map(|c| {
            json!({
                "channel": enum_name(Channel::try_from(c.channel).unwrap_or_default().as_str_name(), "CHANNEL_"),
                "opted_out": c.opted_out,
                "all_themes": c.all_themes,
            })
        })
        .collect()
}

pub fn campaign(c: &Campaign) -> Value {
    json!({
        "campaign_id": c.campaign_id,
        "fund_code": c.fund_code,
        "name": c.name,
        "theme": theme(c.theme),
        "state": enum_name(CampaignState::try_from(c.state).unwrap_or_default().as_str_name(), "CAMPAIGN_STATE_"),
        "starts_on": c.starts_on,
        "ends_on": c.ends_on,
        "presented_number": c.presented_number,
        "max_attempts": c.max_attempts,
        "calling_policy": if c.calling_policy.is_empty() { "legal_default" } else { c.calling_policy.as_str() },
        "calling_policy_override_reason": c.calling_policy_override_reason,
        "pacing_ratio": c.pacing_ratio,
        "priority_rule": if c.priority_rule.is_empty() { "theme" } else { c.priority_rule.as_str() },
        "retry_policy": serde_json::from_str::<Value>(&c.retry_policy).unwrap_or(Value::Null),
        "version": c.version,
        "updated_at": ts(&c.updated_at),
    })
}

pub fn leased_call(c: &LeasedCall) -> Value {
    let card = c.card.clone().unwrap_or_default();
    json!({
        "lease_id": c.lease.as_ref().map(|l| l.lease_id.clone()),
        "lease_expires_at": ts(&c.lease.as_ref().and_then(|l| l.expires_at)),
        "call_id": c.call_id,
        "campaign_id": c.campaign_id,
        "attempt_number": c.attempt_number,
        "presented_number": c.presented_number,
        "contact_id": card.contact_id,
        "theme": theme(card.theme),
        "display_name": card.display_name,
        "phone": card.phone,
        "phone_territory": card.phone_territory,
        "fields": card.fields.iter().map(|f| json!({"field": f.field, "label": f.label, "value": f.value, "masked": f.masked})).collect::<Vec<_>>(),
    })
}

pub fn result(r: &ContactResult) -> Value {
    let env = r.envelope.clone().unwrap_or_default();
    json!({
        "result_id": r.result_id,
        "fund_code": env.fund_code,
        "campaign_id": env.campaign_id,
        "contact_id": r.contact_id,
        "submission_ref": r.submission_ref,
        "final_status": final_status(r.final_status),
        "offer_decision": offer(r.offer_decision),
        "follow_ups": follow_ups(&r.follow_ups),
        "contact_detail_changes": changes(&r.contact_detail_changes),
        "consent_changes": consents(&r.consent_changes),
        "attempts": r.attempts.iter().map(|a| json!({"attempt_number": a.attempt_number, "at": ts(&a.at), "outcome": outcome(a.outcome)})).collect::<Vec<_>>(),
        "reasons": reasons(&r.reasons),
        "closed_at": ts(&r.closed_at),
    })
}

pub fn rejection(r: &ContactRejected) -> Value {
    let env = r.envelope.clone().unwrap_or_default();
    json!({
        "fund_code": env.fund_code,
        "campaign_id": env.campaign_id,
        "correlation_id": env.correlation_id,
        "submission_ref": r.submission_ref,
        "index": r.index,
        "reasons": reasons(&r.reasons),
    })
}

pub fn report(r: &CampaignReport) -> Value {
    json!({
        "campaign_id": r.campaign_id,
        "fund_code": r.fund_code,
        "contacts_closed": r.contacts_closed,
        "attempts": r.attempts,
        "reach_rate": r.reach_rate,
        "acceptance_rate": r.acceptance_rate,
        "attempts_per_contact": r.attempts_per_contact,
        "by_final_status": status_counts(&r.by_final_status),
        "by_offer_decision": r.by_offer_decision.iter().map(|o| json!({"offer_decision": offer(o.offer_decision), "count": o.count})).collect::<Vec<_>>(),
        "by_attempts": r.by_attempts.iter().map(|a| json!({"attempts": a.attempts, "contacts": a.contacts})).collect::<Vec<_>>(),
        "by_day": r.by_day.iter().map(|d| json!({
            "date": d.date, "contacts_closed": d.contacts_closed, "attempts": d.attempts,
            "offers_accepted": d.offers_accepted, "by_final_status": status_counts(&d.by_final_status),
        })).collect::<Vec<_>>(),
    })
}

fn status_counts(counts: &[cnmas_proto::results::StatusCount]) -> Vec<Value> {
    counts
        .iter()
        .map(|s| json!({"final_status": final_status(s.final_status), "count": s.count}))
        .collect()
}

pub fn follow_up(n: &FollowUpNotice) -> Value {
    let env = n.envelope.clone().unwrap_or_default();
    json!({
        "notice_id": n.notice_id, "fund_code": env.fund_code, "campaign_id": env.campaign_id,
        "contact_id": n.contact_id, "submission_ref": n.submission_ref,
        "follow_ups": follow_ups(&n.follow_ups), "recorded_at": ts(&n.recorded_at),
    })
}

pub fn contact_change(n: &ContactChangeNotice) -> Value {
    let env = n.envelope.clone().unwrap_or_default();
    json!({
        "notice_id": n.notice_id, "fund_code": env.fund_code, "campaign_id": env.campaign_id,
        "contact_id": n.contact_id, "submission_ref": n.submission_ref,
        "changes": changes(&n.changes), "recorded_at": ts(&n.recorded_at),
    })
}
