//! Requests to intake, the personal-data vault, under short-lived service tokens of the dialer:
//! the cards of a lease batch in one request, and the reveal of a masked field.

use cnmas_proto::intake::intake_service_client::IntakeServiceClient;
use cnmas_proto::intake::{
    CallCard, GetCallCardRequest, GetCallCardsRequest, RevealCardFieldRequest, RevealedField,
};
use cnmas_runtime::auth::Authenticator;
use tonic::transport::Channel;
use tonic::Status;
use uuid::Uuid;

/// A call whose card is asked for: intake audits the view under the agent and its lease.
#[derive(Debug, Clone)]
pub struct CardFor {
    pub lease_id: Uuid,
    pub contact_id: Uuid,
    pub campaign_id: Uuid,
    pub agent_id: String,
}

#[derive(Clone)]
pub struct Intake {
    client: IntakeServiceClient<Channel>,
    auth: Authenticator,
}

impl Intake {
    pub fn new(channel: Channel, auth: Authenticator) -> Self {
        Intake {
            client: IntakeServiceClient::new(channel),
            auth,
        }
    }

    /// The cards of a lease batch's calls, in their order; `None` for a call whose contact
    /// intake no longer holds in that campaign.
    pub async fn cards(&self, calls: Vec<CardFor>) -> Result<Vec<Option<CallCard>>, Status> {
        let wanted = calls.len();
        let req = self.auth.service_request(
            crate::SERVICE,
            GetCallCardsRequest {
                cards: calls
                    .into_iter()
                    .map(|c| GetCallCardRequest {
                        contact_id: c.contact_id.to_string(),
                        campaign_id: c.campaign_id.to_string(),
                        agent_id: c.agent_id,
                        lease_id: c.lease_id.to_string(),
                    })
                    .collect(),
            },
        )?;
        let cards = self.client.clone().get_call_cards(req).await?.into_inner();
        if cards.cards.len() != wanted {
            return Err(Status::internal("intake answered another number of cards"));
        }
        Ok(cards.cards.into_iter().map(|c| c.card).collect())
    }

    pub async fn reveal(&self, message: RevealCardFieldRequest) -> Result<RevealedField, Status> {
        let req = self.auth.service_request(crate::SERVICE, message)?;
        Ok(self
            .client
            .clone()
            .reveal_card_field(req)
            .await?
            .into_inner())
    }
}
