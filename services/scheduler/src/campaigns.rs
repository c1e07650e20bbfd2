//! The campaign API: create, read, list, activate, pause. Every change is audited and
//! announced with a `CampaignChanged` snapshot.

use crate::State;
use chrono::{NaiveDate, Utc};
use cnmas_bus::{subjects, Outbox};
use cnmas_domain::calendar::{CallingPolicy, Override};
use cnmas_domain::fund::Funds;
use cnmas_domain::outcome::FinalStatus;
use cnmas_domain::phone::{FrenchPhone, LineType};
use cnmas_domain::retry::RetryPolicy;
use cnmas_proto::scheduler::{self as pb, campaign_service_server::CampaignService};
use cnmas_proto::support::{derived_id, envelope, theme_from_proto, theme_to_proto, timestamp};
use cnmas_runtime::auth::{principal, Principal, Role};
use serde_json::json;
use sqlx::{PgConnection, Row};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct CampaignApi {
    pub state: Arc<State>,
}

/// The default number of attempts per contact when a campaign names none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The default number of queued calls per available agent.
pub const DEFAULT_PACING_RATIO: f64 = 2.0;

/// The highest pacing ratio a campaign may ask for.
pub const MAX_PACING_RATIO: f64 = 50.0;

/// Reads a requested pacing ratio: 0 is the default, negative disables pacing (stored as -1).
fn parse_pacing(ratio: f64) -> Result<f64, Status> {
    if !ratio.is_finite() {
        return Err(invalid("pacing_ratio", "range", "must be a number"));
    }
    if ratio < 0.0 {
        return Ok(-1.0);
    }
    if ratio == 0.0 {
        return Ok(DEFAULT_PACING_RATIO);
    }
    if ratio > MAX_PACING_RATIO {
        return Err(invalid(
            "pacing_ratio",
            "range",
            "at most 50 queued calls per available agent (0: default 2, negative: no pacing)",
        ));
    }
    Ok(ratio)
}

/// Reads a priority rule: "" is the theme's default ordering, "fifo" the order of arrival.
fn parse_priority_rule(rule: &str) -> Result<&'static str, Status> {
    match rule.trim().to_ascii_lowercase().as_str() {
        "" | "theme" => Ok(""),
        "fifo" => Ok("fifo"),
        _ => Err(invalid(
            "priority_rule",
            "priority_rule.unknown",
            "\"\" (the theme's default ordering) or \"fifo\"",
        )),
    }
}

fn invalid(field: &str, rule: &str, message: &str) -> Status {
    Status::invalid_argument(format!("{field}: {rule}: {message}"))
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "campaign API failure");
    Status::internal("internal error")
}

const COLUMNS: &str = "campaign_id, fund_code, name, theme, state, starts_on, ends_on, \
     presented_number, max_attempts, calling_policy, policy_override_reason, version, updated_at, \
     pacing_ratio, priority_rule, retry_policy";

fn row_to_campaign(row: &sqlx::postgres::PgRow) -> pb::Campaign {
    let theme = cnmas_domain::theme::Theme::from_code(row.get::<&str, _>("theme"))
        .map(theme_to_proto)
        .unwrap_or(cnmas_proto::common::Theme::Unspecified);
    let policy: Option<serde_json::Value> = row.get("calling_policy");
    let policy = match policy {
        None => String::new(),
        Some(v)
            if serde_json::from_value::<CallingPolicy>(v.clone()).ok()
                == Some(CallingPolicy::all_hours()) =>
        {
            "all_hours".to_string()
        }
        Some(v) => v.to_string(),
    };
    pb::Campaign {
        campaign_id: row.get::<Uuid, _>("campaign_id").to_string(),
        fund_code: row.get("fund_code"),
        name: row.get("name"),
        theme: theme as i32,
        state: state_to_proto(row.get("state")) as i32,
        starts_on: row.get::<NaiveDate, _>("starts_on").to_string(),
        ends_on: row.get::<NaiveDate, _>("ends_on").to_string(),
        presented_number: row.get("presented_number"),
        max_attempts: row.get::<i32, _>("max_attempts") as u32,
        calling_policy: policy,
        calling_policy_override_reason: row.get("policy_override_reason"),
        version: row.get::<i64, _>("version") as u64,
        updated_at: Some(timestamp(row.get("updated_at"))),
        pacing_ratio: row.get("pacing_ratio"),
        priority_rule: row.get("priority_rule"),
        retry_policy: row
            .get::<Option<serde_json::Value>, _>("retry_policy")
            .map(|v| v.to_string())
            .unwrap_or_default(),
    }
}

/// Reads a campaign's retry delays: empty is the defaults; `max_attempts` comes from its own
/// field. Every value must be within the domain's bounds.
fn parse_retry_policy(json: &str, max_attempts: u32) -> Result<RetryPolicy, Status> {
    let mut policy = match json.trim() {
        "" => RetryPolicy::default(),
        text => serde_json::from_str::<RetryPolicy>(text)
            .map_err(|e| invalid("retry_policy", "retry_policy.malformed", &format!("{e}")))?,
    };
    policy.max_attempts = max_attempts;
    policy
        .validate()
        .map_err(|e| invalid("retry_policy", "retry_policy.range", &e.to_string()))?;
    Ok(policy)
}

fn state_to_proto(s: &str) -> pb::CampaignState {
    match s {
        "draft" => pb::CampaignState::Draft,
        "active" => pb::CampaignState::Active,
        "paused" => pb::CampaignState::Paused,
        "completed" => pb::CampaignState::Completed,
        "cancelled" => pb::CampaignState::Cancelled,
        _ => pb::CampaignState::Unspecified,
    }
}

/// Reads the calling policy of a request: empty is the legal default (stored as NULL), `all_hours`
/// or a JSON policy. Anything wider than the legal default needs an override reason.
fn parse_policy(text: &str, reason: &str) -> Result<Option<CallingPolicy>, Status> {
    let policy = match text.trim() {
        "" => return Ok(None),
        "all_hours" => CallingPolicy::all_hours(),
        json => serde_json::from_str::<CallingPolicy>(json).map_err(|e| {
            invalid(
                "calling_policy",
                "policy.malformed",
                &format!("not a calling policy: {e}"),
            )
        })?,
    };
    let over = (!reason.trim().is_empty()).then(|| Override {
        reason: reason.trim().to_string(),
    });
    policy.authorize(over.as_ref()).map_err(|e| {
        invalid(
            "calling_policy",
            "policy.outside_legal_hours",
            &e.to_string(),
        )
    })?;
    Ok(Some(policy))
}

fn parse_date(field: &str, value: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
        .map_err(|_| invalid(field, "date.format", "expected a date as YYYY-MM-DD"))
}

/// Writes the audit row and the `CampaignChanged` snapshot of a campaign just changed.
pub(crate) async fn record_change(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<pb::Campaign, sqlx::Error> {
    sqlx::query(
        "INSERT INTO campaign_audit (campaign_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(campaign_id)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE campaign_id = $1"
    ))
    .bind(campaign_id)
    .fetch_one(&mut *conn)
    .await?;
    let campaign = row_to_campaign(&row);
    let event_id = derived_id(&[
        "campaign_changed",
        &campaign.campaign_id,
        &campaign.version.to_string(),
    ]);
    let event = pb::CampaignChanged {
        envelope: Some(envelope(
            event_id.clone(),
            &campaign.fund_code,
            &campaign.campaign_id,
            &campaign.campaign_id,
            Utc::now(),
        )),
        campaign: Some(campaign.clone()),
    };
    let mut outbox = Outbox::new();
    outbox.push(
        subjects::event("scheduler", "campaign_changed"),
        &event_id,
        &event,
    );
    outbox.flush(conn).await?;
    Ok(campaign)
}

impl CampaignApi {
    async fn load(&self, campaign_id: &str, who: &Principal) -> Result<pb::Campaign, Status> {
        let id = Uuid::parse_str(campaign_id.trim())
            .map_err(|_| invalid("campaign_id", "uuid", "not a campaign id"))?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE campaign_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.state.base.pool)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found("no such campaign"))?;
        let campaign = row_to_campaign(&row);
        // A fund learns nothing about other funds' campaigns, not even that they exist.
        if !who.may_see_fund(&campaign.fund_code) {
            return Err(Status::not_found("no such campaign"));
        }
        Ok(campaign)
    }

    async fn transition(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
        from: &[&str],
        to: &str,
        action: &str,
    ) -> Result<Response<pb::Campaign>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Supervisor, Role::Admin])?;
        let req = req.into_inner();
        let current = self.load(&req.campaign_id, &who).await?;
        let id = Uuid::parse_str(&current.campaign_id).map_err(internal)?;
        let mut tx = self.state.base.pool.begin().await.map_err(internal)?;
        let updated = sqlx::query(
            "UPDATE campaigns SET state = $2, version = version + 1, updated_at = now()
             WHERE campaign_id = $1 AND state = ANY($3) RETURNING state",
        )
        .bind(id)
        .bind(to)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?;
        if updated.is_none() {
            // The state may have changed since it was loaded: report the current one.
            return Err(Status::failed_precondition(format!(
                "state: campaign.transition: cannot {action} a campaign in state {:?}",
                pb::CampaignState::try_from(current.state).unwrap_or_default()
            )));
        }
        let mut detail = json!({"to": to, "reason": req.reason.trim()});
        if to == "cancelled" {
            let closed = crate::planning::close_open_plans(
                &mut tx,
                id,
                FinalStatus::CampaignCancelled,
                "campaign.cancelled",
                self.state.clock.now(),
            )
            .await
            .map_err(internal)?;
            detail["contacts_closed"] = json!(closed);
        }
        let campaign = record_change(&mut tx, id, &who.subject, action, detail)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.state.base.relay.wake();
        Ok(Response::new(campaign))
    }
}

#[tonic::async_trait]
impl CampaignService for CampaignApi {
    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Supervisor, Role::Admin])?;
        let r = req.into_inner();
        let funds = Funds::builtin();
        let fund = funds
            .lookup(&r.fund_code)
            .map_err(|e| invalid("fund_code", e.code(), &e.to_string()))?;
        if !who.may_see_fund(fund.code.as_str()) {
            return Err(Status::permission_denied(
                "fund_code: a fund may only create its own campaigns",
            ));
        }
        let name = r.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "length", "1 to 200 characters"));
        }
        let theme = theme_from_proto(r.theme)
            .ok_or_else(|| invalid("theme", "theme.unknown", "choose one of the themes"))?;
        let starts_on = parse_date("starts_on", &r.starts_on)?;
        let ends_on = parse_date("ends_on", &r.ends_on)?;
        if ends_on < starts_on {
            return Err(invalid(
                "ends_on",
                "period.order",
                "the campaign must end on or after its first day",
            ));
        }
        let presented = FrenchPhone::parse(&r.presented_number, None)
            .map_err(|e| invalid("presented_number", e.code(), &e.to_string()))?;
        if presented.line_type() == LineType::Mobile {
            return Err(invalid(
                "presented_number",
                "caller_id.mobile",
                "a call centre may not present a mobile (06/07) number",
            ));
        }
        let max_attempts = match r.max_attempts {
            0 => DEFAULT_MAX_ATTEMPTS,
            n @ 1..=20 => n,
            _ => return Err(invalid("max_attempts", "range", "1 to 20 (0: default 5)")),
        };
        let policy = parse_policy(&r.calling_policy, &r.calling_policy_override_reason)?;
        let retry = parse_retry_policy(&r.retry_policy, max_attempts)?;
        let retry_json = serde_json::to_value(retry).map_err(internal)?;
        let pacing_ratio = parse_pacing(r.pacing_ratio)?;
        let priority_rule = parse_priority_rule(&r.priority_rule)?;
        let policy_json = match &policy {
            Some(p) => Some(serde_json::to_value(p).map_err(internal)?),
            None => None,
        };
        let id = Uuid::new_v4();
        let mut tx = self.state.base.pool.begin().await.map_err(internal)?;
        sqlx::query(
            "INSERT INTO campaigns (campaign_id, fund_code, name, theme, state, starts_on, ends_on,
                 presented_number, max_attempts, calling_policy, policy_override_reason, version,
                 pacing_ratio, priority_rule, retry_policy)
             VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8, $9, $10, 1, $11, $12, $13)",
        )
        .bind(id)
        .bind(fund.code.as_str())
        .bind(name)
        .bind(theme.code())
        .bind(starts_on)
        .bind(ends_on)
        .bind(presented.e164())
        .bind(max_attempts as i32)
        .bind(&policy_json)
        .bind(r.calling_policy_override_reason.trim())
        .bind(pacing_ratio)
        .bind(priority_rule)
        .bind(&retry_json)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let campaign = record_change(
            &mut tx,
            id,
            &who.subject,
            "create",
            json!({
                "name": name, "theme": theme.code(), "starts_on": starts_on, "ends_on": ends_on,
                "max_attempts": max_attempts, "calling_policy": policy_json,
                "override_reason": r.calling_policy_override_reason.trim(),
                "pacing_ratio": pacing_ratio, "priority_rule": priority_rule,
                "retry_policy": retry_json,
            }),
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.state.base.relay.wake();
        if policy.as_ref().is_some_and(|p| p.widens_legal_default()) {
            tracing::warn!(campaign_id = %id, "campaign created with an override of the legal calling hours");
        }
        Ok(Response::new(campaign))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Supervisor, Role::Admin, Role::Service])?;
        Ok(Response::new(
            self.load(&req.get_ref().campaign_id, &who).await?,
        ))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Supervisor, Role::Admin, Role::Service])?;
        let wanted = req.get_ref().fund_code.trim().to_string();
        let fund_filter = match (who.role, wanted.is_empty()) {
            (Role::Fund, _) => {
                let own = who.fund.clone().unwrap_or_default();
                if !wanted.is_empty() && wanted != own {
                    return Err(Status::permission_denied(
                        "fund_code: a fund sees only its own campaigns",
                    ));
                }
                Some(own)
            }
            (_, true) => None,
            (_, false) => Some(wanted),
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE ($1::text IS NULL OR fund_code = $1)
             ORDER BY created_at"
        ))
        .bind(fund_filter)
        .fetch_all(&self.state.base.pool)
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: rows.iter().map(row_to_campaign).collect(),
        }))
    }

    async fn activate_campaign(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, &["draft", "paused"], "active", "activate")
            .await
    }

    async fn pause_campaign(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, &["active"], "paused", "pause").await
    }

    async fn cancel_campaign(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, &["draft", "active", "paused"], "cancelled", "cancel")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_wider_than_the_law_need_a_reason() {
        assert_eq!(parse_policy("", "").unwrap(), None);
        assert!(parse_policy("all_hours", "").is_err());
        assert_eq!(
            parse_policy("all_hours", "benchmark").unwrap(),
            Some(CallingPolicy::all_hours())
        );
        let narrowed = r#"{"weekly":{"monday":[{"start":"10:00","end":"12:00"}]}}"#;
        assert!(parse_policy(narrowed, "").unwrap().is_some());
        let wider = r#"{"weekly":{"saturday":[{"start":"10:00","end":"12:00"}]}}"#;
        let err = parse_policy(wider, "").unwrap_err();
        assert!(err
            .message()
            .starts_with("calling_policy: policy.outside_legal_hours"));
        assert!(parse_policy("{not json", "x").is_err());
    }

    #[test]
    fn pacing_and_priority_rules_are_validated() {
        assert_eq!(parse_pacing(0.0).unwrap(), DEFAULT_PACING_RATIO);
        assert_eq!(parse_pacing(-3.0).unwrap(), -1.0);
        assert_eq!(parse_pacing(1.5).unwrap(), 1.5);
        assert!(parse_pacing(f64::NAN).is_err());
        assert!(parse_pacing(f64::INFINITY).is_err());
        let err = parse_pacing(51.0).unwrap_err();
        assert!(err.message().starts_with("pacing_ratio: range: "));
        assert_eq!(parse_priority_rule("").unwrap(), "");
        assert_eq!(parse_priority_rule(" FIFO ").unwrap(), "fifo");
        let err = parse_priority_rule("youngest").unwrap_err();
        assert!(err
            .message()
            .starts_with("priority_rule: priority_rule.unknown: "));
    }
}
