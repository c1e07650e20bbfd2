//! Agent states, the time spent in each, and the staffing of each campaign that paces the
//! scheduler.

use crate::State;
use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, Outbox};
use cnmas_proto::dialer::{AgentState, CampaignStaffing};
use cnmas_proto::support::{envelope, timestamp};
use sqlx::{PgConnection, Row};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub fn state_code(s: AgentState) -> &'static str {
    match s {
        AgentState::Unspecified | AgentState::SignedOut => "signed_out",
        AgentState::Available => "available",
        AgentState::OnCall => "on_call",
        AgentState::WrapUp => "wrap_up",
        AgentState::Paused => "paused",
    }
}

pub fn state_from_code(s: &str) -> AgentState {
    match s {
        "available" => AgentState::Available,
        "on_call" => AgentState::OnCall,
        "wrap_up" => AgentState::WrapUp,
        "paused" => AgentState::Paused,
        _ => AgentState::SignedOut,
    }
}

/// An agent who has not used the API for this long counts as signed out.
pub const SILENCE_MINUTES: i32 = 10;

/// The steps of a state change, to be spliced into a `WITH` so that the change is part of the
/// statement that causes it (a lease, outcomes): `agent_old` locks the agents that `which`
/// selects (a predicate on `agents`, e.g. `agent_id = $1`), in a fixed order so that two
/// statements never wait for each other; `agent_new` sets `state` and `reason` (SQL
/// expressions) and returns when each agent entered the state; `agent_log` logs the time spent
/// in the previous state.
pub fn transition_steps(state: &str, reason: &str, which: &str) -> String {
    format!(
        "agent_old AS (
             SELECT agent_id, state, pause_reason, state_since FROM agents
             WHERE {which} ORDER BY agent_id FOR UPDATE),
         agent_new AS (
             UPDATE agents a SET state = {state}, pause_reason = {reason}, last_seen = now(),
                 state_since = CASE WHEN o.state = {state} AND o.pause_reason = {reason}
                                    THEN o.state_since ELSE now() END
             FROM agent_old o WHERE a.agent_id = o.agent_id
             RETURNING a.state_since),
         agent_log AS (
             INSERT INTO agent_state_log (agent_id, state, pause_reason, started_at, ended_at)
             SELECT agent_id, state, pause_reason, state_since, now() FROM agent_old o
             WHERE NOT (o.state = {state} AND o.pause_reason = {reason}))"
    )
}

/// Moves an agent to `state` (logging the time spent in the previous one) and marks it seen.
/// Returns when the agent entered the state, or `None` if the agent is not registered.
pub async fn transition(
    conn: &mut PgConnection,
    agent_id: &str,
    state: AgentState,
    pause_reason: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH {} SELECT state_since FROM agent_new",
            transition_steps("$2", "$3", "agent_id = $1")
        )
    });
    sqlx::query_scalar(&SQL)
        .bind(agent_id)
        .bind(state_code(state))
        .bind(pause_reason)
        .fetch_optional(conn)
        .await
}

/// Every few seconds, for each active campaign, how many of its agents can take calls.
pub async fn run_publisher(state: Arc<State>) {
    let shutdown = state.base.shutdown.clone();
    loop {
        if let Err(e) = publish(&state).await {
            tracing::warn!(error = %e, "publishing campaign staffing failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn publish(state: &State) -> Result<(), sqlx::Error> {
    let mut tx = state.base.pool.begin().await?;
    let rows = sqlx::query(
        "SELECT c.campaign_id, c.fund_code,
                count(a.agent_id) FILTER (WHERE a.state IN ('available', 'on_call', 'wrap_up')
                    AND a.last_seen > now() - make_interval(mins => $1)) AS available,
                count(a.agent_id) FILTER (WHERE a.state <> 'signed_out'
                    AND a.last_seen > now() - make_interval(mins => $1)) AS signed_in
         FROM campaigns c
         LEFT JOIN agent_campaigns ac ON ac.campaign_id = c.campaign_id
         LEFT JOIN agents a ON a.agent_id = ac.agent_id
         WHERE c.state = 'active'
         GROUP BY c.campaign_id, c.fund_code",
    )
    .bind(SILENCE_MINUTES)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut outbox = Outbox::new();
    for r in rows {
        let campaign: Uuid = r.get("campaign_id");
        let available = r.get::<i64, _>("available") as u32;
        metrics::gauge!("cnmas_dialer_agents_available", "campaign" => campaign.to_string())
            .set(f64::from(available));
        let event_id = Uuid::new_v4().to_string();
        outbox.push(
            subjects::event("dialer", "campaign_staffing"),
            &event_id,
            &CampaignStaffing {
                envelope: Some(envelope(
                    event_id.clone(),
                    r.get("fund_code"),
                    &campaign.to_string(),
                    "",
                    now,
                )),
                campaign_id: campaign.to_string(),
                agents_available: available,
                agents_signed_in: r.get::<i64, _>("signed_in") as u32,
                at: Some(timestamp(now)),
            },
        );
    }
    outbox.flush(&mut tx).await?;
    tx.commit().await?;
    state.base.relay.wake();
    Ok(())
}
