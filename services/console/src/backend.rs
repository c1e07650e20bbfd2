//! The services' gRPC APIs as the console uses them, each call with a token minted for the
//! signed-in person (2 minutes), or a service token for checking credentials.

use crate::{Config, Console};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use cnmas_proto::dialer::{
    self as dialer, agent_service_client::AgentServiceClient,
    dialer_admin_service_client::DialerAdminServiceClient, AgentState,
};
use cnmas_proto::results::{self as results, results_service_client::ResultsServiceClient};
use cnmas_proto::scheduler::{self as sched, campaign_service_client::CampaignServiceClient};
use cnmas_runtime::auth::{bearer, Authenticator, Role};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Who the console acts for.
pub struct Caller {
    role: Role,
    id: String,
}

impl Caller {
    pub fn agent(id: &str) -> Self {
        Caller {
            role: Role::Agent,
            id: id.to_string(),
        }
    }
    pub fn supervisor(id: &str) -> Self {
        Caller {
            role: Role::Supervisor,
            id: id.to_string(),
        }
    }
}

pub struct Backend {
    auth: Authenticator,
    dialer: Channel,
    scheduler: Channel,
    results: Channel,
    dialer_authority: String,
}

fn channel(url: &str, name: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{name}: not a URL"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// French words for what went wrong with a call to a service (never its internal message).
pub fn friendly(e: &Status) -> String {
    match e.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            "Le service est momentanément indisponible : réessayez dans un instant.".into()
        }
        tonic::Code::PermissionDenied => "Cette action ne vous est pas autorisée.".into(),
        tonic::Code::NotFound => "Élément introuvable.".into(),
        tonic::Code::FailedPrecondition if e.message().contains("lease.lost") => {
            "Cet appel ne vous est plus réservé (délai dépassé) : il est retourné dans la file."
                .into()
        }
        tonic::Code::FailedPrecondition if e.message().contains("agent_state.on_call") => {
            "Enregistrez d'abord l'issue de votre appel en cours.".into()
        }
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
            // The services word refusals as "field: rule: message" (in English): the agent
            // gets the rule's code, which support staff can look up, in a French sentence.
            match e.message().split(": ").nth(1) {
                Some("pause.reason") => {
                    "Le motif de la pause doit compter 1 à 100 caractères.".into()
                }
                Some(rule) if !rule.is_empty() && !rule.contains(' ') => {
                    format!("Demande refusée par le service (règle {rule}).")
                }
                _ => "Demande refusée par le service.".into(),
            }
        }
        tonic::Code::Unauthenticated => {
            "Votre session n'est plus valide : reconnectez-vous.".into()
        }
        _ => "Une erreur est survenue : réessayez.".into(),
    }
}

impl Backend {
    pub fn new(config: &Config) -> Result<Self> {
        let dialer_authority = config
            .dialer_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&config.dialer_url)
            .trim_end_matches('/')
            .to_string();
        Ok(Backend {
            auth: Authenticator::new(&config.jwt_secret),
            dialer: channel(&config.dialer_url, "CNMAS_DIALER_URL")?,
            scheduler: channel(&config.scheduler_url, "CNMAS_SCHEDULER_URL")?,
            results: channel(&config.results_url, "CNMAS_RESULTS_URL")?,
            dialer_authority,
        })
    }

    fn authed<T>(&self, caller: &Caller, message: T) -> Result<Request<T>, Status> {
        let agent = (caller.role == Role::Agent).then_some(caller.id.as_str());
        let token = self
            .auth
            .issue(
                caller.role,
                &caller.id,
                None,
                agent,
                chrono::Duration::minutes(2),
            )
            .map_err(|_| Status::internal("cannot mint a token"))?;
        bearer(Request::new(message), &token)
    }

    fn as_service<T>(&self, message: T) -> Result<Request<T>, Status> {
        self.auth.service_request(crate::SERVICE, message)
    }

    pub async fn verify(&self, agent_id: &str, password: &str) -> Result<dialer::Agent, Status> {
        let req = self.as_service(dialer::VerifyAgentCredentialsRequest {
            agent_id: agent_id.to_string(),
            password: password.to_string(),
        })?;
        Ok(DialerAdminServiceClient::new(self.dialer.clone())
            .verify_agent_credentials(req)
            .await?
            .into_inner())
    }

    pub async fn set_state(
        &self,
        caller: &Caller,
        state: AgentState,
        pause_reason: &str,
    ) -> Result<dialer::AgentStatus, Status> {
        let req = self.authed(
            caller,
            dialer::SetAgentStateRequest {
                state: state as i32,
                pause_reason: pause_reason.to_string(),
            },
        )?;
        Ok(AgentServiceClient::new(self.dialer.clone())
            .set_agent_state(req)
            .await?
            .into_inner())
    }

    pub async fn next_call(&self, caller: &Caller) -> Result<dialer::NextCallResponse, Status> {
        let req = self.authed(caller, dialer::NextCallRequest {})?;
        Ok(AgentServiceClient::new(self.dialer.clone())
            .next_call(req)
            .await?
            .into_inner())
    }

    pub async fn renew(&self, caller: &Caller, lease_id: &str) -> Result<dialer::Lease, Status> {
        let req = self.authed(
            caller,
            dialer::RenewLeaseRequest {
                lease_id: lease_id.to_string(),
            },
        )?;
        Ok(AgentServiceClient::new(self.dialer.clone())
            .renew_lease(req)
            .await?
            .into_inner())
    }

    pub async fn reveal(
        &self,
        caller: &Caller,
        lease_id: &str,
        field: &str,
    ) -> Result<dialer::RevealedCardField, Status> {
        let req = self.authed(
            caller,
            dialer::RevealCardFieldRequest {
                lease_id: lease_id.to_string(),
                field: field.to_string(),
            },
        )?;
        Ok(AgentServiceClient::new(self.dialer.clone())
            .reveal_card_field(req)
            .await?
            .into_inner())
    }

    pub async fn record(
        &self,
        caller: &Caller,
        lease_id: &str,
        disposition: dialer::Disposition,
    ) -> Result<dialer::RecordOutcomeResponse, Status> {
        let req = self.authed(
            caller,
            dialer::RecordOutcomeRequest {
                lease_id: lease_id.to_string(),
                disposition: Some(disposition),
            },
        )?;
        Ok(AgentServiceClient::new(self.dialer.clone())
            .record_outcome(req)
            .await?
            .into_inner())
    }

    pub async fn campaigns(&self, caller: &Caller) -> Result<Vec<sched::Campaign>, Status> {
        let req = self.authed(
            caller,
            sched::ListCampaignsRequest {
                fund_code: String::new(),
            },
        )?;
        Ok(CampaignServiceClient::new(self.scheduler.clone())
            .list_campaigns(req)
            .await?
            .into_inner()
            .campaigns)
    }

    pub async fn campaign(&self, caller: &Caller, id: &str) -> Result<sched::Campaign, Status> {
        let req = self.authed(
            caller,
            sched::GetCampaignRequest {
                campaign_id: id.to_string(),
            },
        )?;
        Ok(CampaignServiceClient::new(self.scheduler.clone())
            .get_campaign(req)
            .await?
            .into_inner())
    }

    pub async fn floor(&self, caller: &Caller, id: &str) -> Result<dialer::CampaignFloor, Status> {
        let req = self.authed(
            caller,
            dialer::GetCampaignFloorRequest {
                campaign_id: id.to_string(),
            },
        )?;
        Ok(DialerAdminServiceClient::new(self.dialer.clone())
            .get_campaign_floor(req)
            .await?
            .into_inner())
    }

    pub async fn report(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<results::CampaignReport, Status> {
        let req = self.authed(
            caller,
            results::GetCampaignReportRequest {
                campaign_id: id.to_string(),
            },
        )?;
        Ok(ResultsServiceClient::new(self.results.clone())
            .get_campaign_report(req)
            .await?
            .into_inner())
    }

    /// Pauses (`pause`) or resumes a campaign.
    pub async fn steer(
        &self,
        caller: &Caller,
        id: &str,
        pause: bool,
        reason: &str,
    ) -> Result<sched::Campaign, Status> {
        let req = self.authed(
            caller,
            sched::CampaignTransitionRequest {
                campaign_id: id.to_string(),
                reason: reason.to_string(),
            },
        )?;
        let mut client = CampaignServiceClient::new(self.scheduler.clone());
        Ok(if pause {
            client.pause_campaign(req).await?
        } else {
            client.activate_campaign(req).await?
        }
        .into_inner())
    }
}

/// Ready when the dialer (sign-in and every agent action) accepts connections.
pub async fn readyz(State(c): State<Arc<Console>>) -> (StatusCode, String) {
    let reachable = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(c.backend.dialer_authority.as_str()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let status = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        format!("{{\"service\":\"console\",\"dialer\":{reachable}}}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_worded_in_french_with_their_rule() {
        let pause = Status::invalid_argument("pause_reason: pause.reason: a pause needs a reason");
        assert!(friendly(&pause).starts_with("Le motif de la pause"));
        let other = Status::failed_precondition("state: campaign.transition: cannot resume");
        assert_eq!(
            friendly(&other),
            "Demande refusée par le service (règle campaign.transition)."
        );
        let lost =
            Status::failed_precondition("lease_id: lease.lost: this call is no longer yours");
        assert!(friendly(&lost).contains("plus réservé"));
        assert!(friendly(&Status::unavailable("x")).contains("indisponible"));
    }
}
