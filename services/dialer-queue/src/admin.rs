//! Agents and their habilitations, for supervisors and admins.

use crate::staffing;
use crate::State;
use crate::{credentials, floor};
use cnmas_proto::dialer::{self as pb, dialer_admin_service_server::DialerAdminService};
use cnmas_proto::support::timestamp;
use cnmas_runtime::auth::{principal, Role};
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct AdminApi {
    pub state: Arc<State>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "dialer admin API failure");
    Status::internal("internal error")
}

/// Agent ids: 1–64 characters of `[A-Za-z0-9._-]` (they travel in tokens and audit trails).
fn check_agent_id(id: &str) -> Result<&str, Status> {
    let id = id.trim();
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(id)
    } else {
        Err(Status::invalid_argument(
            "agent_id: agent_id.format: 1 to 64 letters, digits, '.', '_' or '-'",
        ))
    }
}

impl AdminApi {
    async fn agent(&self, agent_id: &str) -> Result<pb::Agent, Status> {
        let pool = &self.state.base.pool;
        let row = sqlx::query(
            "SELECT agent_id, display_name, team, state, pause_reason, state_since, supervisor,
                    password_hash IS NOT NULL AS has_password
             FROM agents WHERE agent_id = $1",
        )
        .bind(agent_id)
        .fetch_optional(pool)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found("no such agent"))?;
        let campaigns: Vec<Uuid> = sqlx::query_scalar(
            "SELECT campaign_id FROM agent_campaigns WHERE agent_id = $1 ORDER BY campaign_id",
        )
        .bind(agent_id)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        Ok(pb::Agent {
            agent_id: row.get("agent_id"),
            display_name: row.get("display_name"),
            team: row.get("team"),
            campaign_ids: campaigns.iter().map(Uuid::to_string).collect(),
            state: staffing::state_from_code(row.get("state")) as i32,
            pause_reason: row.get("pause_reason"),
            state_since: Some(timestamp(row.get("state_since"))),
            supervisor: row.get("supervisor"),
            has_password: row.get("has_password"),
        })
    }
}

#[tonic::async_trait]
impl DialerAdminService for AdminApi {
    async fn upsert_agent(
        &self,
        req: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Supervisor, Role::Admin])?;
        let r = req.into_inner();
        let agent_id = check_agent_id(&r.agent_id)?;
        // Making or unmaking a supervisor is an admin's act: a supervisor could otherwise
        // grant itself colleagues with its own powers.
        let was_supervisor: Option<bool> =
            sqlx::query_scalar("SELECT supervisor FROM agents WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(&self.state.base.pool)
                .await
                .map_err(internal)?;
        if (r.supervisor || was_supervisor == Some(true)) && who.role != Role::Admin {
            return Err(Status::permission_denied(
                "supervisor: role.admin: only an admin grants or changes a supervisor account",
            ));
        }
        let name = r.display_name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Status::invalid_argument(
                "display_name: length: 1 to 100 characters",
            ));
        }
        sqlx::query(
            "INSERT INTO agents (agent_id, display_name, team, supervisor) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent_id) DO UPDATE SET display_name = EXCLUDED.display_name,
                 team = EXCLUDED.team, supervisor = EXCLUDED.supervisor",
        )
        .bind(agent_id)
        .bind(name)
        .bind(r.team.trim())
        .bind(r.supervisor)
        .execute(&self.state.base.pool)
        .await
        .map_err(internal)?;
        Ok(Response::new(self.agent(agent_id).await?))
    }

    async fn assign_campaign(
        &self,
        req: Request<pb::AssignCampaignRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        principal(&req)?.require(&[Role::Supervisor, Role::Admin])?;
        let r = req.into_inner();
        let agent_id = check_agent_id(&r.agent_id)?;
        let campaign_id = Uuid::parse_str(r.campaign_id.trim())
            .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?;
        let pool = &self.state.base.pool;
        let sql = if r.revoke {
            "DELETE FROM agent_campaigns WHERE agent_id = $1 AND campaign_id = $2"
        } else {
            "INSERT INTO agent_campaigns (agent_id, campaign_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING"
        };
        sqlx::query(sql)
            .bind(agent_id)
            .bind(campaign_id)
            .execute(pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(ref d) if d.is_foreign_key_violation() => {
                    Status::not_found("no such agent")
                }
                other => internal(other),
            })?;
        Ok(Response::new(self.agent(agent_id).await?))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        principal(&req)?.require(&[Role::Supervisor, Role::Admin])?;
        let pool = &self.state.base.pool;
        let mut agents: BTreeMap<String, pb::Agent> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT agent_id, display_name, team, state, pause_reason, state_since, supervisor,
                    password_hash IS NOT NULL AS has_password
             FROM agents",
        )
        .fetch_all(pool)
        .await
        .map_err(internal)?
        {
            let id: String = r.get("agent_id");
            agents.insert(
                id.clone(),
                pb::Agent {
                    agent_id: id,
                    display_name: r.get("display_name"),
                    team: r.get("team"),
                    campaign_ids: Vec::new(),
                    state: staffing::state_from_code(r.get("state")) as i32,
                    pause_reason: r.get("pause_reason"),
                    state_since: Some(timestamp(r.get("state_since"))),
                    supervisor: r.get("supervisor"),
                    has_password: r.get("has_password"),
                },
            );
        }
        for r in
            sqlx::query("SELECT agent_id, campaign_id FROM agent_campaigns ORDER BY campaign_id")
                .fetch_all(pool)
                .await
                .map_err(internal)?
        {
            if let Some(a) = agents.get_mut(&r.get::<String, _>("agent_id")) {
                a.campaign_ids
                    .push(r.get::<Uuid, _>("campaign_id").to_string());
            }
        }
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_values().collect(),
        }))
    }

    async fn set_agent_password(
        &self,
        req: Request<pb::SetAgentPasswordRequest>,
    ) -> Result<Response<pb::SetAgentPasswordResponse>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Supervisor, Role::Admin])?;
        let r = req.into_inner();
        let agent_id = check_agent_id(&r.agent_id)?.to_string();
        credentials::check_password_rules(&r.password)?;
        let supervisor: bool =
            sqlx::query_scalar("SELECT supervisor FROM agents WHERE agent_id = $1")
                .bind(&agent_id)
                .fetch_optional(&self.state.base.pool)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::not_found("no such agent"))?;
        if supervisor && who.role != Role::Admin {
            return Err(Status::permission_denied(
                "agent_id: role.admin: only an admin sets a supervisor's password",
            ));
        }
        let hash = credentials::hash_password(r.password).await?;
        let set_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "UPDATE agents SET password_hash = $2, password_set_at = now(), failed_sign_ins = 0,
                 sign_in_locked_until = NULL
             WHERE agent_id = $1 RETURNING password_set_at",
        )
        .bind(&agent_id)
        .bind(hash)
        .fetch_one(&self.state.base.pool)
        .await
        .map_err(internal)?;
        tracing::info!(agent = %agent_id, by = %who.subject, "console password set");
        Ok(Response::new(pb::SetAgentPasswordResponse {
            agent_id,
            set_at: Some(timestamp(set_at)),
        }))
    }

    async fn verify_agent_credentials(
        &self,
        req: Request<pb::VerifyAgentCredentialsRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        principal(&req)?.require(&[Role::Service])?;
        let r = req.into_inner();
        // A malformed identifier is just another wrong identifier: same answer, same cost.
        let agent_id = check_agent_id(&r.agent_id).unwrap_or("").to_string();
        if credentials::verify(&self.state.base.pool, &agent_id, r.password).await? {
            Ok(Response::new(self.agent(&agent_id).await?))
        } else {
            Err(Status::unauthenticated(credentials::REFUSED))
        }
    }

    async fn get_campaign_floor(
        &self,
        req: Request<pb::GetCampaignFloorRequest>,
    ) -> Result<Response<pb::CampaignFloor>, Status> {
        principal(&req)?.require(&[Role::Supervisor, Role::Admin])?;
        let campaign_id = Uuid::parse_str(req.get_ref().campaign_id.trim())
            .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?;
        Ok(Response::new(
            floor::campaign_floor(&self.state.base.pool, campaign_id)
                .await
                .map_err(internal)?,
        ))
    }
}
