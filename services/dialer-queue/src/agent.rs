//! The agent API: lease the next call, renew the lease, record the outcome.

use crate::disposition::{self, CallbackRules};
use crate::leases::{self, LeaseFacts};
use crate::leasing::Leased;
use crate::outcomes::Outcome;
use crate::staffing;
use crate::State;
use chrono::{DateTime, Utc};
use cnmas_bus::{subjects, Outbox};
use cnmas_domain::calendar::{CallingPolicy, HolidayCalendar, Place};
use cnmas_domain::geo::{Department, Territory};
use cnmas_domain::theme::Theme;
use cnmas_proto::dialer::{self as pb, agent_service_server::AgentService};
use cnmas_proto::dialer::{AgentState, AttemptRecorded, InterviewCompleted};
use cnmas_proto::intake::CallCard;
use cnmas_proto::support::{envelope, outcome_to_proto, theme_to_proto, timestamp};
use cnmas_runtime::auth::principal;
use sqlx::Row;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct AgentApi {
    pub state: Arc<State>,
}

fn lease_lost() -> Status {
    Status::failed_precondition("lease_id: lease.lost: this call is no longer yours")
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "agent API failure");
    Status::internal("internal error")
}

impl AgentApi {
    /// What `NextCall` answers for a leased call with its card.
    fn leased_call(
        lease_id: Uuid,
        facts: &LeaseFacts,
        presented_number: String,
        card: CallCard,
    ) -> pb::LeasedCall {
        pb::LeasedCall {
            lease: Some(pb::Lease {
                lease_id: lease_id.to_string(),
                expires_at: Some(timestamp(facts.expires_at)),
            }),
            call_id: facts.call_id.clone(),
            campaign_id: facts.campaign_id.to_string(),
            attempt_number: facts.attempt_number as u32,
            card: Some(card),
            presented_number,
        }
    }

    /// The facts of a lease as the queue holds them now; `None` when the lease is lost.
    async fn read_lease(
        &self,
        lease_id: Uuid,
        agent_id: &str,
    ) -> Result<Option<LeaseFacts>, Status> {
        let row = sqlx::query(&READ_LEASE)
            .bind(lease_id)
            .bind(agent_id)
            .fetch_optional(&self.state.base.pool)
            .await
            .map_err(internal)?;
        row.map(|r| LeaseFacts::from_row(agent_id, &r))
            .transpose()
            .map_err(internal)
    }
}

/// A lease's facts, read without a lock: the outcome's write takes the call only if the lease
/// still holds it.
static READ_LEASE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM queue q JOIN campaigns c USING (campaign_id)
         WHERE q.lease_id = $1 AND q.leased_by = $2",
        leases::COLUMNS
    )
});

/// The events of one attempt: always `AttemptRecorded`, an item of the write's
/// `AttemptsRecorded` (decision 0015), and `InterviewCompleted` when the person was reached and
/// interviewed.
fn attempt_events(
    facts: &LeaseFacts,
    attempt: &str,
    checked: &disposition::Checked,
    now: DateTime<Utc>,
) -> Outbox {
    let mut outbox = Outbox::new();
    let campaign = facts.campaign_id.to_string();
    let fund = &facts.fund;
    outbox.push_item(
        subjects::event("dialer", "attempts_recorded"),
        &AttemptRecorded {
            envelope: Some(envelope(
                attempt.to_string(),
                fund,
                &campaign,
                &facts.call_id,
                now,
            )),
            attempt_id: attempt.to_string(),
            call_id: facts.call_id.clone(),
            contact_id: facts.contact_id.to_string(),
            attempt_number: facts.attempt_number as u32,
            agent_id: facts.agent_id.clone(),
            leased_at: Some(timestamp(facts.leased_at)),
            recorded_at: Some(timestamp(now)),
            outcome: outcome_to_proto(checked.outcome) as i32,
            callback_at: checked.callback_at.map(timestamp),
            callback_with_same_agent: checked.callback_with_same_agent,
            person_key: facts.person_key.clone(),
        },
    );
    if let Some(i) = &checked.interview {
        let event_id = cnmas_proto::support::derived_id(&["interview", attempt]);
        let theme = Theme::from_code(&facts.theme)
            .map(theme_to_proto)
            .unwrap_or_default();
        outbox.push(
            subjects::event("dialer", "interview_completed"),
            &event_id,
            &InterviewCompleted {
                envelope: Some(envelope(event_id.clone(), fund, &campaign, attempt, now)),
                attempt_id: attempt.to_string(),
                contact_id: facts.contact_id.to_string(),
                person_key: facts.person_key.clone(),
                theme: theme as i32,
                offer_decision: i.offer_decision as i32,
                follow_ups: i.follow_ups.clone(),
                contact_detail_changes: i.contact_detail_changes.clone(),
                consent_changes: i.consent_changes.clone(),
            },
        );
    }
    outbox
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn next_call(
        &self,
        req: Request<pb::NextCallRequest>,
    ) -> Result<Response<pb::NextCallResponse>, Status> {
        let started = Instant::now();
        let who = principal(&req)?;
        let agent_id = who.agent_id()?.to_string();
        let (lease_id, facts, presented_number, card) =
            match self.state.leasing.next_call(&agent_id).await.map_err(internal)? {
                Leased::NotRegistered => {
                    return Err(Status::permission_denied(
                        "this agent is not registered in the dialer",
                    ))
                }
                Leased::NothingDue => {
                    return Ok(Response::new(pb::NextCallResponse {
                        result: Some(pb::next_call_response::Result::NothingDue(pb::NothingDue {
                            message: "Aucun appel à passer pour le moment : la file est vide ou les plages d'appel sont fermées.".into(),
                        })),
                    }))
                }
                Leased::Call {
                    lease_id,
                    facts,
                    presented_number,
                    card,
                } => (lease_id, *facts, presented_number, card),
            };
        let Some(card) = card else {
            // Without its card the call cannot be made: give it back at once.
            let _ = sqlx::query(
                "UPDATE queue SET lease_id = NULL, leased_by = NULL, leased_at = NULL,
                     lease_expires_at = NULL
                 WHERE lease_id = $1 AND leased_by = $2",
            )
            .bind(lease_id)
            .bind(&agent_id)
            .execute(&self.state.base.pool)
            .await;
            return Err(Status::unavailable(
                "the call card cannot be fetched now; try again",
            ));
        };
        let call = Self::leased_call(lease_id, &facts, presented_number, *card);
        self.state.leases.keep(lease_id, facts);
        metrics::counter!("cnmas_dialer_leases_total").increment(1);
        metrics::histogram!("cnmas_dialer_next_call_seconds").record(started.elapsed());
        Ok(Response::new(pb::NextCallResponse {
            result: Some(pb::next_call_response::Result::Call(call)),
        }))
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let who = principal(&req)?;
        let agent_id = who.agent_id()?.to_string();
        let lease_id = Uuid::parse_str(&req.get_ref().lease_id)
            .map_err(|_| Status::invalid_argument("lease_id: uuid: not a lease id"))?;
        let expires: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE queue SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE lease_id = $1 AND leased_by = $2 RETURNING lease_expires_at",
        )
        .bind(lease_id)
        .bind(&agent_id)
        .bind(self.state.lease.as_secs_f64())
        .fetch_optional(&self.state.base.pool)
        .await
        .map_err(internal)?;
        let expires = expires.ok_or_else(lease_lost)?;
        self.state.leases.renewed(lease_id, expires);
        Ok(Response::new(pb::Lease {
            lease_id: lease_id.to_string(),
            expires_at: Some(timestamp(expires)),
        }))
    }

    async fn record_outcome(
        &self,
        req: Request<pb::RecordOutcomeRequest>,
    ) -> Result<Response<pb::RecordOutcomeResponse>, Status> {
        let started = Instant::now();
        let who = principal(&req)?;
        let agent_id = who.agent_id()?.to_string();
        let r = req.into_inner();
        let lease_id = Uuid::parse_str(&r.lease_id)
            .map_err(|_| Status::invalid_argument("lease_id: uuid: not a lease id"))?;
        let attempt_id = Uuid::new_v4();
        let attempt = attempt_id.to_string();
        // The facts kept at lease time, else (another replica leased it, a restart) read
        // without a lock: the write below takes the call only if this lease still holds it, so
        // a lease lost in between (expired, or a second submission) writes nothing.
        let facts = match self.state.leases.take(lease_id, &agent_id) {
            Some(facts) => facts,
            None => self
                .read_lease(lease_id, &agent_id)
                .await?
                .ok_or_else(lease_lost)?,
        };
        let territory: Territory = facts.territory.parse().unwrap_or(Territory::FR);
        let place = Department::parse(&facts.department)
            .map(Place::Department)
            .unwrap_or(Place::Territory(territory));
        let policy = match facts.calling_policy.as_str() {
            "" => CallingPolicy::legal_default(),
            "all_hours" => CallingPolicy::all_hours(),
            json => serde_json::from_str(json).unwrap_or_else(|_| CallingPolicy::legal_default()),
        };
        let now = Utc::now();
        let checked = match disposition::check(
            r.disposition.as_ref(),
            &CallbackRules {
                calendar: HolidayCalendar::built_in(),
                policy: &policy,
                place: &place,
                territory,
            },
            now,
        ) {
            Ok(checked) => checked,
            Err(e) => {
                // The agent corrects the outcome and sends it again, on the same lease.
                self.state.leases.keep(lease_id, facts);
                return Err(Status::invalid_argument(e.to_string()));
            }
        };
        let recorded = self
            .state
            .outcomes
            .record(Outcome {
                call_id: facts.call_id.clone(),
                agent_id: agent_id.clone(),
                lease_id,
                attempt_id,
                code: checked.outcome.code(),
                recorded_at: now,
                callback_at: checked.callback_at,
                events: attempt_events(&facts, &attempt, &checked, now),
            })
            .await
            .map_err(internal)?;
        if !recorded {
            return Err(lease_lost());
        }
        metrics::counter!("cnmas_dialer_attempts_total", "outcome" => checked.outcome.code())
            .increment(1);
        metrics::histogram!("cnmas_dialer_record_outcome_seconds").record(started.elapsed());
        Ok(Response::new(pb::RecordOutcomeResponse {
            attempt_id: attempt,
        }))
    }

    async fn reveal_card_field(
        &self,
        req: Request<pb::RevealCardFieldRequest>,
    ) -> Result<Response<pb::RevealedCardField>, Status> {
        let who = principal(&req)?;
        let agent_id = who.agent_id()?.to_string();
        let r = req.into_inner();
        let lease_id = Uuid::parse_str(r.lease_id.trim())
            .map_err(|_| Status::invalid_argument("lease_id: uuid: not a lease id"))?;
        // Only the agent holding the live lease may see the clear value, and only of that call.
        let call = sqlx::query(
            "SELECT contact_id, campaign_id FROM queue
             WHERE lease_id = $1 AND leased_by = $2 AND lease_expires_at > now()",
        )
        .bind(lease_id)
        .bind(&agent_id)
        .fetch_optional(&self.state.base.pool)
        .await
        .map_err(internal)?
        .ok_or_else(lease_lost)?;
        let revealed = self
            .state
            .intake
            .reveal(cnmas_proto::intake::RevealCardFieldRequest {
                contact_id: call.get::<Uuid, _>("contact_id").to_string(),
                campaign_id: call.get::<Uuid, _>("campaign_id").to_string(),
                agent_id,
                lease_id: lease_id.to_string(),
                field: r.field.trim().to_string(),
            })
            .await
            .map_err(|e| match e.code() {
                // The agent's own mistakes (a field that is not masked, or not in the theme).
                tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::NotFound => Status::new(e.code(), e.message().to_string()),
                code => {
                    tracing::warn!(?code, "card reveal unavailable");
                    Status::unavailable("the card cannot be reached now; try again")
                }
            })?;
        metrics::counter!("cnmas_dialer_card_reveals_total").increment(1);
        Ok(Response::new(pb::RevealedCardField {
            field: revealed.field,
            label: revealed.label,
            value: revealed.value,
        }))
    }

    async fn set_agent_state(
        &self,
        req: Request<pb::SetAgentStateRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let who = principal(&req)?;
        let agent_id = who.agent_id()?.to_string();
        let r = req.into_inner();
        let state = match AgentState::try_from(r.state) {
            Ok(s @ (AgentState::Available | AgentState::SignedOut)) => s,
            Ok(AgentState::Paused) => AgentState::Paused,
            _ => {
                return Err(Status::invalid_argument(
                    "state: agent_state.settable: AVAILABLE, PAUSED or SIGNED_OUT",
                ))
            }
        };
        let reason = r.pause_reason.trim();
        if state == AgentState::Paused
            && (reason.is_empty()
                || reason.chars().count() > 100
                || reason.chars().any(char::is_control))
        {
            return Err(Status::invalid_argument(
                "pause_reason: pause.reason: a pause needs a reason of 1 to 100 characters",
            ));
        }
        let reason = if state == AgentState::Paused {
            reason
        } else {
            ""
        };
        let mut tx = self.state.base.pool.begin().await.map_err(internal)?;
        let holds: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM queue WHERE leased_by = $1 AND lease_expires_at > now())",
        )
        .bind(&agent_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(internal)?;
        if holds && state != AgentState::Available {
            return Err(Status::failed_precondition(
                "state: agent_state.on_call: record the outcome of your call first",
            ));
        }
        let since = staffing::transition(&mut tx, &agent_id, state, reason)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::permission_denied("this agent is not registered in the dialer")
            })?;
        tx.commit().await.map_err(internal)?;
        Ok(Response::new(pb::AgentStatus {
            agent_id,
            state: state as i32,
            pause_reason: reason.to_string(),
            since: Some(timestamp(since)),
        }))
    }
}
