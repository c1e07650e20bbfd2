//! The intake gRPC API: the call card of a leased call, for the dialer only, audited.

use crate::State;
use chrono::Utc;
use cnmas_domain::geo::Territory;
use cnmas_domain::phone::FrenchPhone;
use cnmas_domain::theme::{Field, Theme};
use cnmas_proto::intake::{self as pb, intake_service_server::IntakeService};
use cnmas_proto::support::{theme_to_proto, timestamp};
use cnmas_runtime::auth::{principal, Role};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct IntakeApi {
    pub state: Arc<State>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "intake API failure");
    Status::internal("internal error")
}

/// French labels shown to agents.
pub(crate) fn label(field: Field) -> &'static str {
    match field {
        Field::Nir => "NIR",
        Field::LastName => "Nom",
        Field::FirstName => "Prénom",
        Field::BirthDate => "Date de naissance",
        Field::PostalAddress => "Adresse postale",
        Field::Postcode => "Code postal",
        Field::Phone => "Téléphone",
        Field::Email => "Courriel",
        Field::ChildLastName => "Nom de l'enfant",
        Field::ChildFirstName => "Prénom de l'enfant",
        Field::ChildAge => "Âge de l'enfant",
        Field::ChildBirthDate => "Date de naissance de l'enfant",
        Field::FluVaccinated => "Déjà vacciné(e) contre la grippe",
        Field::EbdEntitlementEnd => "Fin de droit à l'examen bucco-dentaire",
        Field::AmeliProvisionalCode => "Code provisoire ameli",
        Field::PsNumber => "Numéro de professionnel de santé",
        Field::PracticeSoftware => "Logiciel métier",
        Field::TeleservicesUsageRate => "Taux d'usage des téléservices",
        Field::CompanyName => "Raison sociale",
        Field::Siret => "SIRET",
        Field::CorrespondentName => "Correspondant",
    }
}

/// What the card shows once the provisional AMELI code was erased at the campaign's end.
pub const AMELI_CODE_ERASED: &str = "effacé à la fin de la campagne";

fn erased_on_card(field: Field, code_erased: bool) -> bool {
    code_erased && field == Field::AmeliProvisionalCode
}

/// Fields an agent never sees on the card: the identifiers serve matching, not the call.
fn shown_on_card(field: Field) -> bool {
    !matches!(field, Field::Nir | Field::Phone)
}

const ALL_FIELDS: [Field; 21] = [
    Field::LastName,
    Field::FirstName,
    Field::BirthDate,
    Field::CompanyName,
    Field::CorrespondentName,
    Field::Siret,
    Field::PsNumber,
    Field::PracticeSoftware,
    Field::TeleservicesUsageRate,
    Field::ChildFirstName,
    Field::ChildLastName,
    Field::ChildBirthDate,
    Field::ChildAge,
    Field::EbdEntitlementEnd,
    Field::FluVaccinated,
    Field::AmeliProvisionalCode,
    Field::Email,
    Field::PostalAddress,
    Field::Postcode,
    Field::Nir,
    Field::Phone,
];

#[tonic::async_trait]
impl IntakeService for IntakeApi {
    async fn get_call_card(
        &self,
        req: Request<pb::GetCallCardRequest>,
    ) -> Result<Response<pb::CallCard>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Service])?;
        let r = req.into_inner();
        let contact_id = Uuid::parse_str(&r.contact_id)
            .map_err(|_| Status::invalid_argument("contact_id: uuid: not a contact id"))?;
        let campaign_id = Uuid::parse_str(&r.campaign_id)
            .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?;
        if r.agent_id.trim().is_empty() || r.lease_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "agent_id, lease_id: required: every card view is audited",
            ));
        }
        let pool = &self.state.base.pool;
        // The view is audited by the statement that reads the card: one round trip, and no
        // card leaves without its audit row committed.
        let viewed_at = Utc::now();
        let row = sqlx::query(
            "WITH card AS (
                 SELECT theme, territory, key_id, nonce, sealed,
                        ameli_code_erased_at IS NOT NULL AS erased
                 FROM contacts WHERE contact_id = $1 AND campaign_id = $2),
             audit AS (
                 INSERT INTO card_audit (contact_id, campaign_id, agent_id, lease_id, action, at)
                 SELECT $1, $2, $3, $4, 'view', $5 FROM card)
             SELECT * FROM card",
        )
        .bind(contact_id)
        .bind(campaign_id)
        .bind(r.agent_id.trim())
        .bind(r.lease_id.trim())
        .bind(viewed_at)
        .fetch_optional(pool)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found("no such contact in this campaign"))?;
        let theme = Theme::from_code(row.get("theme")).ok_or_else(|| internal("stored theme"))?;
        let plain = self
            .state
            .vault
            .open(
                row.get("key_id"),
                contact_id.as_bytes(),
                row.get("nonce"),
                row.get("sealed"),
            )
            .map_err(internal)?;
        let stored: HashMap<String, String> = serde_json::from_slice(&plain).map_err(internal)?;

        let code_erased: bool = row.get("erased");
        let spec = theme.spec();
        let get = |f: Field| stored.get(f.code()).cloned().unwrap_or_default();
        let display_name = match theme.population() {
            cnmas_domain::theme::Population::Employer => get(Field::CompanyName),
            _ => format!("{} {}", get(Field::FirstName), get(Field::LastName))
                .trim()
                .to_string(),
        };
        let phone = get(Field::Phone);
        let home: Option<Territory> = row.get::<String, _>("territory").parse().ok();
        let phone_territory = FrenchPhone::parse(&phone, home)
            .map(|p| p.territory().code().to_string())
            .unwrap_or_default();
        let fields = ALL_FIELDS
            .into_iter()
            .filter(|f| {
                spec.allows(*f)
                    && shown_on_card(*f)
                    && (stored.contains_key(f.code()) || erased_on_card(*f, code_erased))
            })
            .map(|f| {
                // The agent learns the code is gone rather than meeting an empty field.
                if erased_on_card(f, code_erased) {
                    return pb::CardField {
                        field: f.code().to_string(),
                        label: label(f).to_string(),
                        value: AMELI_CODE_ERASED.into(),
                        masked: false,
                    };
                }
                let masked = f == Field::AmeliProvisionalCode;
                pb::CardField {
                    field: f.code().to_string(),
                    label: label(f).to_string(),
                    value: if masked {
                        "••••••".into()
                    } else {
                        get(f)
                    },
                    masked,
                }
            })
            .collect();
        metrics::counter!("cnmas_intake_card_views_total").increment(1);
        Ok(Response::new(pb::CallCard {
            contact_id: contact_id.to_string(),
            theme: theme_to_proto(theme) as i32,
            display_name,
            phone,
            phone_territory,
            fields,
            viewed_at: Some(timestamp(viewed_at)),
        }))
    }

    async fn reveal_card_field(
        &self,
        req: Request<pb::RevealCardFieldRequest>,
    ) -> Result<Response<pb::RevealedField>, Status> {
        crate::reveal::reveal_card_field(&self.state, req).await
    }

    async fn list_card_views(
        &self,
        req: Request<pb::ListCardViewsRequest>,
    ) -> Result<Response<pb::ListCardViewsResponse>, Status> {
        principal(&req)?.require(&[Role::Auditor, Role::Admin])?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        } as i64;
        let (contact, agent): (Option<Uuid>, Option<String>) =
            match r.subject {
                Some(pb::list_card_views_request::Subject::ContactId(c)) => (
                    Some(Uuid::parse_str(c.trim()).map_err(|_| {
                        Status::invalid_argument("contact_id: uuid: not a contact id")
                    })?),
                    None,
                ),
                Some(pb::list_card_views_request::Subject::AgentId(a)) if !a.trim().is_empty() => {
                    (None, Some(a.trim().to_string()))
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "subject: required: a contact_id or an agent_id",
                    ))
                }
            };
        let rows = sqlx::query(
            "SELECT contact_id, campaign_id, agent_id, lease_id, action, field, at FROM card_audit
             WHERE ($1::uuid IS NULL OR contact_id = $1) AND ($2::text IS NULL OR agent_id = $2)
             ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(contact)
        .bind(agent)
        .bind(limit)
        .fetch_all(&self.state.base.pool)
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::ListCardViewsResponse {
            views: rows
                .iter()
                .map(|r| pb::CardView {
                    contact_id: r.get::<Uuid, _>("contact_id").to_string(),
                    campaign_id: r.get::<Uuid, _>("campaign_id").to_string(),
                    agent_id: r.get("agent_id"),
                    lease_id: r.get("lease_id"),
                    action: r.get("action"),
                    at: Some(timestamp(r.get("at"))),
                    field: r.get("field"),
                })
                .collect(),
        }))
    }
}
