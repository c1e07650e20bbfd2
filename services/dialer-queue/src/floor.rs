//! The live floor of a campaign for supervisors: what waits in the queue, who is doing what,
//! and today's attempts (days are counted in Paris time, where the call centre works).

use crate::staffing;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use cnmas_domain::outcome::AttemptOutcome;
use cnmas_proto::dialer as pb;
use cnmas_proto::support::{outcome_to_proto, timestamp};
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// How many days the per-day counts cover, today included.
const DAYS: i64 = 7;

fn paris_midnight(day: NaiveDate) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    // Midnight exists in Paris every day (DST changes happen at 2 or 3 am).
    Paris
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

pub async fn campaign_floor(
    pool: &PgPool,
    campaign_id: Uuid,
) -> Result<pb::CampaignFloor, sqlx::Error> {
    let now = Utc::now();
    let today = now.with_timezone(&Paris).date_naive();
    let since_today = paris_midnight(today);
    let first_day = today - Duration::days(DAYS - 1);
    let since_first = paris_midnight(first_day);

    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM campaigns WHERE campaign_id = $1")
            .bind(campaign_id)
            .fetch_optional(pool)
            .await?;
    let queue = sqlx::query(
        "SELECT count(*) FILTER (WHERE lease_id IS NULL AND due_at <= $2) AS queued,
                count(*) FILTER (WHERE lease_id IS NOT NULL) AS leased
         FROM queue WHERE campaign_id = $1",
    )
    .bind(campaign_id)
    .bind(now)
    .fetch_one(pool)
    .await?;

    // An agent silent for long counts as signed out, as for the pacing.
    let agent_rows = sqlx::query(
        "SELECT a.agent_id, a.display_name, a.team, a.pause_reason, a.state_since, a.supervisor,
                a.password_hash IS NOT NULL AS has_password,
                CASE WHEN a.state <> 'signed_out'
                          AND (a.last_seen IS NULL
                               OR a.last_seen < now() - make_interval(mins => $2))
                     THEN 'signed_out' ELSE a.state END AS state
         FROM agents a JOIN agent_campaigns ac ON ac.agent_id = a.agent_id
         WHERE ac.campaign_id = $1 ORDER BY a.agent_id",
    )
    .bind(campaign_id)
    .bind(staffing::SILENCE_MINUTES)
    .fetch_all(pool)
    .await?;
    let mut by_state: BTreeMap<i32, u32> = BTreeMap::new();
    let agents: Vec<pb::Agent> = agent_rows
        .iter()
        .map(|r| {
            let state = staffing::state_from_code(r.get("state"));
            *by_state.entry(state as i32).or_default() += 1;
            pb::Agent {
                agent_id: r.get("agent_id"),
                display_name: r.get("display_name"),
                team: r.get("team"),
                campaign_ids: Vec::new(),
                state: state as i32,
                pause_reason: r.get("pause_reason"),
                state_since: Some(timestamp(r.get("state_since"))),
                supervisor: r.get("supervisor"),
                has_password: r.get("has_password"),
            }
        })
        .collect();

    let mut outcomes_today = Vec::new();
    let (mut attempts_today, mut reached_today) = (0u64, 0u64);
    for r in sqlx::query(
        "SELECT outcome, count(*) AS n FROM attempts
         WHERE campaign_id = $1 AND recorded_at >= $2 GROUP BY outcome ORDER BY outcome",
    )
    .bind(campaign_id)
    .bind(since_today)
    .fetch_all(pool)
    .await?
    {
        let Some(outcome) = AttemptOutcome::from_code(r.get("outcome")) else {
            continue;
        };
        let n = r.get::<i64, _>("n") as u64;
        attempts_today += n;
        if outcome.is_reached() {
            reached_today += n;
        }
        outcomes_today.push(pb::OutcomeCount {
            outcome: outcome_to_proto(outcome) as i32,
            count: n,
        });
    }

    let reached_codes: Vec<&str> = AttemptOutcome::ALL
        .into_iter()
        .filter(|o| o.is_reached())
        .map(AttemptOutcome::code)
        .collect();
    let mut days: BTreeMap<String, (u64, u64)> = (0..DAYS)
        .map(|i| ((first_day + Duration::days(i)).to_string(), (0, 0)))
        .collect();
    for r in sqlx::query(
        "SELECT to_char(recorded_at AT TIME ZONE 'Europe/Paris', 'YYYY-MM-DD') AS day,
                count(*) AS attempts, count(*) FILTER (WHERE outcome = ANY($3)) AS reached
         FROM attempts WHERE campaign_id = $1 AND recorded_at >= $2 GROUP BY day",
    )
    .bind(campaign_id)
    .bind(since_first)
    .bind(&reached_codes)
    .fetch_all(pool)
    .await?
    {
        if let Some(d) = days.get_mut(&r.get::<String, _>("day")) {
            *d = (
                r.get::<i64, _>("attempts") as u64,
                r.get::<i64, _>("reached") as u64,
            );
        }
    }

    Ok(pb::CampaignFloor {
        campaign_id: campaign_id.to_string(),
        state: state.unwrap_or_else(|| "unknown".into()),
        queued: queue.get::<i64, _>("queued") as u64,
        leased: queue.get::<i64, _>("leased") as u64,
        agents_by_state: by_state
            .into_iter()
            .map(|(state, count)| pb::AgentStateCount { state, count })
            .collect(),
        agents,
        attempts_today,
        outcomes_today,
        contact_rate_today: if attempts_today == 0 {
            0.0
        } else {
            reached_today as f64 / attempts_today as f64
        },
        last_days: days
            .into_iter()
            .map(|(day, (attempts, reached))| pb::DayCount {
                day,
                attempts,
                reached,
            })
            .collect(),
        at: Some(timestamp(now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_days_start_at_local_midnight() {
        let winter = paris_midnight(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(
            winter,
            Utc.with_ymd_and_hms(2026, 11, 29, 23, 0, 0).unwrap()
        );
        let summer = paris_midnight(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap());
        assert_eq!(summer, Utc.with_ymd_and_hms(2026, 6, 30, 22, 0, 0).unwrap());
    }
}
